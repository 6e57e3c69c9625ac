// Command shippy-email-service (go.micro.srv.email) subscribes to
// user.created and sends each new user a welcome email.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shippy/shippy/internal/healthcheck"
	"github.com/shippy/shippy/internal/microenv"
	"go-micro.dev/v6"
)

const serviceName = "go.micro.srv.email"

func main() {
	// Container images have no shell: `shippy-email-service healthcheck` is the probe.
	if healthcheck.Requested(os.Args) {
		os.Exit(healthcheck.Main())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "shippy-email-service:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	cfg, err := LoadConfig(os.Getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel})).With("service", serviceName)
	microenv.UseSlog(log)
	mailer, closeMailer, err := newMailer(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeMailer()
	handler := NewHandler(mailer, log)

	srv, err := newEmailService(handler, cfg.Queue, micro.Context(ctx), micro.HandleSignal(false))
	if err != nil {
		return err
	}
	log.Info("email-service starting", slog.String("queue", cfg.Queue), slog.Bool("shared_sent_log", cfg.SentNATS != ""))
	err = srv.Run()
	srv.waitHandlersDone() // before the deferred closeMailer
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}

// newMailer returns the logging mailer behind a dedupMailer, whose sent log
// is the JetStream key-value bucket when the broker is JetStream (durable,
// redelivering, shared by the replicas) and memory otherwise; close releases
// its connection.
func newMailer(ctx context.Context, cfg Config, log *slog.Logger) (Mailer, func(), error) {
	send := NewLogMailer(os.Stdout, log)
	if cfg.SentNATS == "" {
		sent := newMemorySentLog(defaultMemorySentIDs, cfg.SendLease)
		return newDedupMailer(send, sent, cfg.SendLease, log), func() {}, nil
	}
	sent, closeNATS, err := dialKVSentLog(ctx, cfg.SentNATS, cfg.SentBucket, cfg.SendLease)
	if err != nil {
		return nil, nil, fmt.Errorf("sent log: %w", err)
	}
	return newDedupMailer(send, sent, cfg.SendLease, log), closeNATS, nil
}
