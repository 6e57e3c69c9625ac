// Command shippy-user-service is go.micro.srv.user: it stores users, hashes
// their passwords with bcrypt, signs JWTs and publishes user.created through
// a transactional outbox.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/healthcheck"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/servicelog"
)

func main() {
	// Container images have no shell: `shippy-user-service healthcheck` is the probe.
	if healthcheck.Requested(os.Args) {
		os.Exit(healthcheck.Main(defaultMetricsAddress))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		servicelog.Exit(serviceName, err) // one log line, in LOG_FORMAT
	}
}

func run(ctx context.Context) error {
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := newLogger(cfg)
	// Libraries that log on their own (slog.Default, the log package,
	// go-micro) write through it too: one stream, one format.
	slog.SetDefault(log)
	microenv.UseSlog(log)
	logStart(ctx, log, cfg)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	warnAdminsWithoutAccount(ctx, store, cfg.AdminEmails, log)

	// The user-service also answers go-micro's own registry lookups, so
	// `micro call go.micro.srv.user ...` finds it; it publishes, so it sets
	// the event streams' limits (JETSTREAM_*).
	plugins, err := cfg.Micro.Plugins(microenv.AnswerGoMicroLookups(), microenv.OwnStreams(), microenv.Logger(log))
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	ops := opshttp.New(log.With("component", "ops"))
	metrics := newUserMetrics(ops.Registry())
	svc, err := newService(cfg, store, log, plugins, server.WrapHandler(metrics.wrapHandler))
	if err != nil {
		return err
	}
	svc.instrument(ops, metrics, store, microenv.BrokerReady(plugins.Broker))
	// The ops server starts before the RPC server and stops after it.
	stopOps, err := ops.Run(ctx, cfg.MetricsAddress)
	if err != nil {
		return err
	}
	defer stopOps()
	// Stops the RPC server, then the relay; the deferred calls run after.
	return svc.serve(ctx)
}
