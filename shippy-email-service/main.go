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
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	handler := NewHandler(NewLogMailer(os.Stdout, log), log)

	srv, err := microenv.NewService(serviceName, micro.Version("latest"), micro.Context(ctx), micro.HandleSignal(false))
	if err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if err := Subscribe(srv.Server(), handler, cfg.Queue); err != nil {
		return err
	}
	log.Info("email-service starting", slog.String("queue", cfg.Queue))
	if err := srv.Run(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return nil
}
