package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"go-micro.dev/v6"

	"github.com/shippy/shippy/internal/microenv"
	pb "github.com/shippy/shippy/proto/user"
)

// newService builds the go-micro service with the user handler registered.
// opts come before the MICRO_* environment, which wins (tests pass explicit
// registry, broker and address here).
func newService(cfg Config, store userStore, log *slog.Logger, opts ...micro.Option) (micro.Service, *handler, error) {
	srv, err := microenv.NewService(serviceName, append([]micro.Option{micro.Version("latest")}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	var pub eventPublisher = protoPublisher{client: srv.Client()}
	if cfg.EventsCodec == codecJSON {
		pub = jsonPublisher{broker: srv.Server().Options().Broker}
	}
	h, err := newHandler(store, bcryptHasher{cost: cfg.BcryptCost},
		newTokenService(cfg.JWTSecret, cfg.JWTTTL),
		pub, newAuthLimiter(cfg.AuthMaxFailures, cfg.AuthFailureWindow, time.Now), log)
	if err != nil {
		return nil, nil, err
	}
	if err := pb.RegisterUserServiceHandler(srv.Server(), h); err != nil {
		return nil, nil, fmt.Errorf("register handler: %w", err)
	}
	o := srv.Options()
	log.Info("go-micro configured",
		"broker", o.Broker.String(), "broker_address", o.Broker.Address(),
		"registry", o.Registry.String(), "registry_address", strings.Join(o.Registry.Options().Addrs, ","),
		"transport", o.Transport.String(), "events_codec", cfg.EventsCodec)
	return srv, h, nil
}

func newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("service", serviceName)
}

// logStart writes the first log lines: where users are stored and how tokens
// are signed. Never a password.
func logStart(ctx context.Context, log *slog.Logger, cfg Config) {
	if cfg.Driver == driverSQLite {
		log.InfoContext(ctx, "no database server configured (DATABASE_URL, DB_HOST): using the embedded SQLite store", "store", cfg.StoreDescription)
	} else {
		log.InfoContext(ctx, "using PostgreSQL", "store", cfg.StoreDescription)
	}
	if cfg.JWTSecretGenerated {
		log.WarnContext(ctx, "JWT_SECRET is not set: generated a random secret; tokens become invalid when the service restarts")
	}
}
