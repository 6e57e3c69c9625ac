package main

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/outbox"
	pb "github.com/shippy/shippy/proto/user"
)

// defaultMetricsAddress is the ops server's port (METRICS_ADDRESS); the
// email-service's is 9092.
const defaultMetricsAddress = ":9091"

// handlerMetrics counts what only the handler knows. nil (tests that build
// a handler alone) counts nothing.
type handlerMetrics interface {
	UserCreated()
	AuthFailed(reason string)
}

// Reasons of shippy_auth_failures_total: a bounded set, and an unknown
// email is not told from a wrong password, as Auth's answer does not.
const (
	authInvalidCredentials = "invalid_credentials"
	authThrottled          = "throttled"
)

func (h *handler) userCreated() {
	if h.metrics != nil {
		h.metrics.UserCreated()
	}
}

// countAuthFailure counts a refused login by Auth's answer: 401 (unknown
// email, wrong password, input no account can have) or 429 (throttled).
// Internal errors are not login failures; the RPC metrics count them.
func (h *handler) countAuthFailure(err error) {
	if err == nil || h.metrics == nil {
		return
	}
	switch merrors.FromError(err).Code {
	case 401:
		h.metrics.AuthFailed(authInvalidCredentials)
	case 429:
		h.metrics.AuthFailed(authThrottled)
	}
}

// userMetrics are the user-service's metrics on the ops server's registry.
type userMetrics struct {
	usersCreated prometheus.Counter
	authFailures *prometheus.CounterVec
	rpcDuration  *prometheus.HistogramVec
	rpcErrors    *prometheus.CounterVec
}

// rpcBuckets span ValidateToken (about 0.1 ms) to Create and Auth, bound
// by bcrypt (about 60 ms at cost 10, more under load), up to the client's
// timeouts.
var rpcBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func newUserMetrics(reg prometheus.Registerer) *userMetrics {
	m := &userMetrics{
		usersCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shippy_users_created_total",
			Help: "Users created (committed with their user.created event).",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shippy_auth_failures_total",
			Help: "Refused logins: invalid_credentials (unknown email or wrong password) or throttled.",
		}, []string{"reason"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shippy_rpc_duration_seconds",
			Help:    "Time the handler took per RPC method, errors included.",
			Buckets: rpcBuckets,
		}, []string{"method"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shippy_rpc_errors_total",
			Help: "RPCs answered with an error, by method and go-micro error code.",
		}, []string{"method", "code"}),
	}
	for _, r := range []string{authInvalidCredentials, authThrottled} {
		m.authFailures.WithLabelValues(r)
	}
	// Every method shows from the first scrape, at zero.
	for _, method := range rpcMethods() {
		m.rpcDuration.WithLabelValues(method)
	}
	reg.MustRegister(m.usersCreated, m.authFailures, m.rpcDuration, m.rpcErrors)
	return m
}

func (m *userMetrics) UserCreated()             { m.usersCreated.Inc() }
func (m *userMetrics) AuthFailed(reason string) { m.authFailures.WithLabelValues(reason).Inc() }

// rpcMethods are go-micro's endpoint names of the user handler, such as
// UserService.Create.
func rpcMethods() []string {
	t := reflect.TypeFor[pb.UserServiceHandler]()
	out := make([]string, 0, t.NumMethod())
	for i := range t.NumMethod() {
		out = append(out, "UserService."+t.Method(i).Name)
	}
	return out
}

// wrapHandler is a go-micro server.HandlerWrapper timing each RPC. go-micro
// calls handler wrappers only for a method it found, so the method label
// stays within rpcMethods whatever a client asks for.
func (m *userMetrics) wrapHandler(next server.HandlerFunc) server.HandlerFunc {
	return func(ctx context.Context, req server.Request, rsp interface{}) error {
		start := time.Now()
		err := next(ctx, req, rsp)
		method := req.Endpoint()
		m.rpcDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())
		if err != nil {
			m.rpcErrors.WithLabelValues(method, errorCode(err)).Inc()
		}
		return err
	}
}

// errorCode is a go-micro error's code as a label, from a bounded set.
func errorCode(err error) string {
	switch c := merrors.FromError(err).Code; c {
	case 400, 401, 403, 404, 408, 409, 429, 500, 503:
		return strconv.Itoa(int(c))
	}
	return "other"
}

// instrument wires the service to the ops server: the handler's counters,
// the outbox relay's, the backlog gauges, and the readiness checks
// (database, and broker when ready is not nil).
func (s *userService) instrument(ops *opshttp.Server, m *userMetrics, store *Store, brokerReady func(context.Context) error) {
	s.handler.metrics = m
	ops.Registry().MustRegister(newOutboxCollector(s.relay, s.log))
	ops.AddCheck("database", func(ctx context.Context) error {
		if err := store.Ping(ctx); err != nil {
			return opshttp.Fail("unreachable", err)
		}
		return nil
	})
	if brokerReady != nil {
		ops.AddCheck("broker", func(ctx context.Context) error {
			if err := brokerReady(ctx); err != nil {
				return opshttp.Fail("not connected", err)
			}
			return nil
		})
	}
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// Bounds of the outbox backlog's scrape: a Prometheus scrape (every 15 s or
// so, per replica) costs at most one bounded count and one indexed lookup
// per backlogCacheTTL.
const (
	backlogCacheTTL = 5 * time.Second
	backlogTimeout  = 2 * time.Second
	// backlogCountLimit caps the count: a larger backlog shows as this.
	backlogCountLimit = 100000
)

// outboxCollector exports the relay's counters and the outbox's backlog.
type outboxCollector struct {
	relay *outbox.Relay
	log   *slog.Logger
	now   func() time.Time

	published, failed, pending, oldestAge *prometheus.Desc

	mu       sync.Mutex
	backlog  outbox.Backlog
	backErr  error
	cachedAt time.Time
}

func newOutboxCollector(relay *outbox.Relay, log *slog.Logger) *outboxCollector {
	return &outboxCollector{
		relay: relay, log: log, now: time.Now,
		published: prometheus.NewDesc("shippy_events_published_total",
			"Events the outbox relay of this replica published to the broker.", nil, nil),
		failed: prometheus.NewDesc("shippy_event_publish_errors_total",
			"Publishes by the outbox relay of this replica that failed (each is retried).", nil, nil),
		pending: prometheus.NewDesc("shippy_outbox_pending",
			fmt.Sprintf("Events committed and not yet published, by any replica (counted up to %d).", backlogCountLimit), nil, nil),
		oldestAge: prometheus.NewDesc("shippy_outbox_oldest_age_seconds",
			"Age of the oldest event not yet published; 0 when none is pending.", nil, nil),
	}
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.published
	ch <- c.failed
	ch <- c.pending
	ch <- c.oldestAge
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.relay.Stats()
	ch <- prometheus.MustNewConstMetric(c.published, prometheus.CounterValue, float64(st.Published))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(st.Failed))
	b, err := c.cachedBacklog()
	if err != nil {
		// The database is down: the gauges are left out rather than
		// failing the whole scrape; /readyz says what is wrong.
		return
	}
	age := 0.0
	if b.Pending > 0 && !b.Oldest.IsZero() {
		age = max(c.now().Sub(b.Oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(b.Pending))
	ch <- prometheus.MustNewConstMetric(c.oldestAge, prometheus.GaugeValue, age)
}

// cachedBacklog queries the backlog at most once per backlogCacheTTL;
// concurrent scrapes wait for the one query.
func (c *outboxCollector) cachedBacklog() (outbox.Backlog, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.cachedAt.IsZero() && c.now().Sub(c.cachedAt) < backlogCacheTTL {
		return c.backlog, c.backErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), backlogTimeout)
	defer cancel()
	c.backlog, c.backErr = c.relay.Backlog(ctx, backlogCountLimit)
	c.cachedAt = c.now()
	if c.backErr != nil {
		c.log.Debug("outbox backlog for metrics", "err", c.backErr)
	}
	return c.backlog, c.backErr
}
