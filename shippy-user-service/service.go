package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/requestid"
	"github.com/shippy/shippy/internal/servicelog"
	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// userService is the go-micro server with the outbox relay that publishes
// what its handler commits.
type userService struct {
	server  server.Server
	handler *handler
	// publisher sends one event to the broker; the relay uses it.
	publisher eventPublisher
	relay     *outbox.Relay
	log       *slog.Logger
	// door and broker order the graceful stop (see stop.go).
	door   *doorTransport
	broker *heldBroker
}

// newService builds the go-micro server on p (from MICRO_*, or a test's)
// with the user handler registered, and the outbox relay for store's
// database. opts are added to the server's (tests wrap handlers).
func newService(cfg Config, store *Store, log *slog.Logger, p microenv.Plugins, opts ...server.Option) (*userService, error) {
	door := &doorTransport{Transport: p.Transport}
	held := newHeldBroker(p.Broker)
	p.Transport, p.Broker = door, held
	tokens := newTokenService(cfg.JWTSecret, cfg.JWTTTL, cfg.AdminEmails...)
	// go-micro runs the first wrapper outermost. The request id comes first,
	// so every line about a request carries it, refusals included; tokens are
	// checked right before the handler runs (accessPolicy); the wrappers in
	// opts come between, so metrics count refusals too.
	reqID := server.WrapHandler(requestid.NewHandlerWrapper())
	authz := server.WrapHandler(tokenauth.NewHandlerWrapper(tokens, accessPolicy, tokenauth.WithLogger(log)))
	srv := cfg.Micro.NewServer(serviceName, p, append(append([]server.Option{reqID}, opts...), authz)...)
	var pub eventPublisher = protoPublisher{client: cfg.Micro.NewClient(p)}
	if cfg.EventsCodec == codecJSON {
		pub = jsonPublisher{broker: held}
	}
	relay := outbox.New(store.db, outboxPublisher{events: pub},
		outbox.WithLogger(log.With("component", "outbox")), outbox.WithMaxInFlight(relayMaxInFlight))
	h, err := newHandler(store, bcryptHasher{cost: cfg.BcryptCost}, tokens,
		relay, newAuthLimiter(store.db, throttleFromConfig(cfg), time.Now), log)
	if err != nil {
		return nil, err
	}
	if err := pb.RegisterUserServiceHandler(srv, h); err != nil {
		return nil, fmt.Errorf("register handler: %w", err)
	}
	log.Info("go-micro configured",
		"broker", p.Broker.String(), "broker_address", microenv.Redacted(p.Broker.Address()),
		"registry", p.Registry.String(), "registry_address", microenv.Redacted(p.Registry.Options().Addrs...),
		"transport", p.Transport.String(), "events_codec", cfg.EventsCodec)
	return &userService{server: srv, handler: h, publisher: pub, relay: relay, log: log, door: door, broker: held}, nil
}

// serve starts the RPC server and the relay and runs until ctx is done.
// Then it stops in the order stop.go describes: no new request, the
// requests in flight finish, the relay's loop stops and one drain publishes
// what they committed (for at most outboxDrainTimeout), and only then the
// broker disconnects. What the drain could not publish (the broker is down)
// stays pending for the next start or another replica. The caller closes
// the store afterwards.
func (s *userService) serve(ctx context.Context) error {
	// Start connects the broker: with NATS unreachable it fails, and the
	// process exits for its supervisor to restart it.
	if err := s.server.Start(); err != nil {
		return fmt.Errorf("start %s: %w", serviceName, err)
	}
	// However serve returns, go-micro's disconnect must not wait forever.
	defer s.broker.release()
	// make up waits for this line before it returns.
	s.log.Info("serving", "address", s.server.Options().Address)
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	relayDone := make(chan struct{})
	go func() {
		defer close(relayDone)
		s.runRelay(relayCtx)
	}()

	<-ctx.Done()
	s.log.Info("stopping: no new request, then the requests in flight, the outbox relay and the broker")
	s.door.closeDoor()
	err := s.server.Stop()
	if err != nil {
		err = fmt.Errorf("stop %s: %w", serviceName, err)
	}
	// The loop stops first: while backing off after a broker error it
	// ignores Notify for up to 10 s, even if the broker is back.
	stopRelay()
	<-relayDone
	s.drainOutbox(ctx)
	s.broker.release()
	if err == nil {
		// Stop returned, so go-micro is disconnecting the broker now; a
		// process exiting before that ends could cut the last publishes'
		// acks. Bounded: a hung broker must not hold the exit.
		select {
		case <-s.broker.Disconnected():
		case <-time.After(brokerDisconnectTimeout):
			s.log.Warn("broker still disconnecting; exiting anyway", "waited", brokerDisconnectTimeout)
		}
	}
	return err
}

// Bounds of the graceful stop's steps after the requests in flight; with
// go-micro's own wait they keep the exit well within 10 seconds.
const (
	outboxDrainTimeout      = 3 * time.Second
	brokerDisconnectTimeout = 3 * time.Second
)

// drainOutbox publishes, once and for at most outboxDrainTimeout, the
// pending events this replica can claim; ctx is done already, so only its
// values are kept. Rows another replica holds are left to it.
func (s *userService) drainOutbox(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outboxDrainTimeout)
	defer cancel()
	before := s.relay.Stats().Published
	err := s.relay.Drain(ctx)
	published := s.relay.Stats().Published - before
	if err != nil {
		s.log.Warn("outbox not drained at stop; the next start or another replica publishes the rest",
			"published", published, "err", err)
		return
	}
	s.log.Info("outbox drained at stop", "published", published)
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

func newLogger(cfg Config) *slog.Logger {
	return servicelog.New(os.Stderr, cfg.LogFormat, cfg.LogLevel, serviceName)
}

// warnAdminsWithoutAccount logs each ADMIN_EMAILS address that has no
// account yet: Create is open, so whoever signs up with it first becomes an
// admin.
func warnAdminsWithoutAccount(ctx context.Context, store userStore, admins []string, log *slog.Logger) {
	for _, email := range admins {
		_, err := store.GetByEmail(ctx, email)
		switch {
		case errors.Is(err, errUserNotFound):
			log.WarnContext(ctx, "ADMIN_EMAILS names an email without an account: whoever creates it becomes an admin; create it now", "email", email)
		case err != nil:
			log.WarnContext(ctx, "ADMIN_EMAILS: look up account", "email", email, "err", err)
		}
	}
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
