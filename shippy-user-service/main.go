// Command shippy-user-service is go.micro.srv.user: it stores users, hashes
// their passwords with bcrypt, signs JWTs and publishes user.created through
// a transactional outbox.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/shippy/shippy/internal/healthcheck"
	"github.com/shippy/shippy/internal/microenv"
)

func main() {
	// Container images have no shell: `shippy-user-service healthcheck` is the probe.
	if healthcheck.Requested(os.Args) {
		os.Exit(healthcheck.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "shippy-user-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := newLogger(cfg.LogLevel)
	microenv.UseSlog(log)
	logStart(ctx, log, cfg)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	svc, err := newService(cfg, store, log)
	if err != nil {
		return err
	}
	// Stops the RPC server, then the relay; the deferred Close runs last.
	return svc.serve(ctx)
}
