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
	"github.com/shippy/shippy/internal/outbox"
	pb "github.com/shippy/shippy/proto/user"
)

// userService is the go-micro service with the outbox relay that publishes
// what its handler commits.
type userService struct {
	srv     micro.Service
	handler *handler
	// publisher sends one event to the broker; the relay uses it.
	publisher eventPublisher
	relay     *outbox.Relay
	log       *slog.Logger
}

// newService builds the go-micro service with the user handler registered
// and the outbox relay for store's database. opts come before the MICRO_*
// environment, which wins (tests pass explicit registry, broker and address
// here).
func newService(cfg Config, store *Store, log *slog.Logger, opts ...micro.Option) (*userService, error) {
	srv, err := microenv.NewService(serviceName, append([]micro.Option{micro.Version("latest")}, opts...)...)
	if err != nil {
		return nil, err
	}
	var pub eventPublisher = protoPublisher{client: srv.Client()}
	if cfg.EventsCodec == codecJSON {
		pub = jsonPublisher{broker: srv.Server().Options().Broker}
	}
	relay := outbox.New(store.db, outboxPublisher{events: pub}, outbox.WithLogger(log.With("component", "outbox")))
	h, err := newHandler(store, bcryptHasher{cost: cfg.BcryptCost},
		newTokenService(cfg.JWTSecret, cfg.JWTTTL),
		relay, newAuthLimiter(cfg.AuthMaxFailures, cfg.AuthFailureWindow, time.Now), log)
	if err != nil {
		return nil, err
	}
	if err := pb.RegisterUserServiceHandler(srv.Server(), h); err != nil {
		return nil, fmt.Errorf("register handler: %w", err)
	}
	o := srv.Options()
	log.Info("go-micro configured",
		"broker", o.Broker.String(), "broker_address", o.Broker.Address(),
		"registry", o.Registry.String(), "registry_address", strings.Join(o.Registry.Options().Addrs, ","),
		"transport", o.Transport.String(), "events_codec", cfg.EventsCodec)
	return &userService{srv: srv, handler: h, publisher: pub, relay: relay, log: log}, nil
}

// serve starts the RPC server and the relay and runs until ctx is done.
// Then it stops the RPC server first, so that no Create commits an event
// after the relay is gone, and the relay second; the relay marks what it
// has published and leaves the rest pending for the next start or another
// replica. The caller closes the store afterwards.
func (s *userService) serve(ctx context.Context) error {
	// Start connects the broker: with NATS unreachable it fails, and the
	// process exits for its supervisor to restart it.
	if err := s.srv.Start(); err != nil {
		return fmt.Errorf("start %s: %w", serviceName, err)
	}
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		s.runRelay(relayCtx)
	}()

	<-ctx.Done()
	s.log.Info("stopping: RPC server first, then the outbox relay")
	err := s.srv.Stop()
	if err != nil {
		err = fmt.Errorf("stop %s: %w", serviceName, err)
	}
	stopRelay()
	<-relayDone
	return err
}

// outboxStatusInterval is how often a relay with a backlog logs it.
const outboxStatusInterval = time.Minute

// runRelay runs the relay until ctx is done, logging its start and stop and,
// while events are pending, the backlog every outboxStatusInterval (one
// indexed count).
func (s *userService) runRelay(ctx context.Context) {
	s.log.InfoContext(ctx, "outbox relay started")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.relay.Run(ctx) // returns nil once ctx is done
	}()
	tick := time.NewTicker(outboxStatusInterval)
	defer tick.Stop()
	for {
		select {
		case <-done:
			st := s.relay.Stats()
			s.log.Info("outbox relay stopped", "published", st.Published, "failed", st.Failed, "pruned", st.Pruned)
			return
		case <-tick.C:
			s.logBacklog(ctx)
		}
	}
}

func (s *userService) logBacklog(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := s.relay.Pending(ctx)
	if err != nil || n == 0 {
		return
	}
	st := s.relay.Stats()
	s.log.InfoContext(ctx, "outbox events pending", "pending", n, "published", st.Published, "failed", st.Failed)
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
