// Command shippy-user-service is go.micro.srv.user: it stores users, hashes
// their passwords with bcrypt, signs JWTs and publishes user.created.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go-micro.dev/v6"
)

func main() {
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
	logStart(ctx, log, cfg)

	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()

	srv, _, err := newService(cfg, store, log, micro.Context(ctx), micro.HandleSignal(false))
	if err != nil {
		return err
	}
	return srv.Run()
}
