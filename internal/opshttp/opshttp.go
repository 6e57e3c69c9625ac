// Package opshttp is a service's operations HTTP server, on a port of its
// own (METRICS_ADDRESS): Prometheus metrics on /metrics, liveness on
// /healthz and readiness on /readyz.
//
//   - /metrics serves the server's own prometheus.Registry (never the
//     global default, which any imported library may fill), with Go runtime
//     and process metrics, plus what the program registers.
//   - /healthz answers 200 while the process serves HTTP. It checks nothing
//     else on purpose: a liveness probe that failed on a database outage
//     would have healthy pods restarted for it.
//   - /readyz runs the checks the program added (database, broker, ...),
//     concurrently, each bounded by a short timeout, and answers 200, or 503
//     with a small JSON body naming each failed check and a short reason.
//     Nothing else: no addresses, no error text from drivers.
package opshttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultCheckTimeout bounds each readiness check; Kubernetes' probe
// timeout (3 s in deploy/kubernetes) must stay above it.
const DefaultCheckTimeout = time.Second

// Check reports whether one dependency is usable. Its error's reason, as
// the /readyz body shows it, is Reason(err).
type Check func(ctx context.Context) error

// CheckError is a check's failure with the short reason /readyz shows; Err,
// logged but not shown, says what happened.
type CheckError struct {
	Reason string
	Err    error
}

func (e *CheckError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}

func (e *CheckError) Unwrap() error { return e.Err }

// Fail returns a check failure showing reason (a few words, no internals)
// and keeping err for the log.
func Fail(reason string, err error) error { return &CheckError{Reason: reason, Err: err} }

// Reason is what /readyz shows for a failed check: "timeout" when it ran
// out of time, a CheckError's reason, or "failed".
func Reason(err error) string {
	var ce *CheckError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ce):
		return ce.Reason
	}
	return "failed"
}

// Off is the METRICS_ADDRESS value that disables the server.
const Off = "off"

// ParseAddress reads METRICS_ADDRESS's value: empty gives def, "off" gives
// "" (no server), anything else must be host:port with a numeric port
// (":9091", "127.0.0.1:0"). The error names the variable.
func ParseAddress(name, v, def string) (string, error) {
	v = strings.TrimSpace(v)
	switch v {
	case "":
		return def, nil
	case Off:
		return "", nil
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", fmt.Errorf("%s=%q: want host:port such as :9091 or 127.0.0.1:9091, or %q", name, v, Off)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("%s=%q: port %q: want a number from 0 to 65535", name, v, port)
	}
	return v, nil
}

// Server is the operations HTTP server.
type Server struct {
	log          *slog.Logger
	reg          *prometheus.Registry
	checkTimeout time.Duration

	mu     sync.Mutex
	checks []namedCheck
	srv    *http.Server
	ln     net.Listener
	// lastFailed is the previous /readyz's failed checks, to log changes
	// only (probes come every few seconds).
	lastFailed string

	stopping atomic.Bool
}

type namedCheck struct {
	name  string
	check Check
}

// New returns a server whose registry has the Go runtime and process
// collectors.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return &Server{log: log, reg: reg, checkTimeout: DefaultCheckTimeout}
}

// Registry is where the program registers its metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// AddCheck adds a readiness check; name is shown by /readyz when it fails.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name: name, check: c})
}

// SetCheckTimeout changes the bound of each check (tests).
func (s *Server) SetCheckTimeout(d time.Duration) { s.checkTimeout = d }

// Stopping makes /readyz answer 503 from now on: the program is shutting
// down and should get no new work, while /healthz and /metrics still serve.
func (s *Server) Stopping() { s.stopping.Store(true) }

// Handler serves /metrics, /healthz and /readyz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// A collector that fails leaves its metrics out; the others are
		// still served.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      s.reg,
		Timeout:       10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	return mux
}

type readyBody struct {
	Status string            `json:"status"`
	Failed map[string]string `json:"failed,omitempty"`
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	failed := s.Ready(r.Context())
	if len(failed) == 0 {
		writeJSON(w, http.StatusOK, readyBody{Status: "ready"})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, readyBody{Status: "not ready", Failed: failed})
}

// Ready runs the checks and returns the failed ones with their reasons;
// empty means ready.
func (s *Server) Ready(ctx context.Context) map[string]string {
	failed := map[string]string{}
	if s.stopping.Load() {
		failed["shutdown"] = "stopping"
	}
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, s.checkTimeout)
			defer cancel()
			errs[i] = c.check(ctx)
			if errs[i] == nil && ctx.Err() != nil {
				errs[i] = ctx.Err()
			}
		}()
	}
	wg.Wait()
	var detail []any
	for i, err := range errs {
		if err != nil {
			failed[checks[i].name] = Reason(err)
			detail = append(detail, slog.String(checks[i].name, err.Error()))
		}
	}
	s.logChange(failed, detail)
	return failed
}

// logChange logs when the set of failed checks changed since the previous
// call: a line when the service becomes unready (with each error), and one
// when it is ready again.
func (s *Server) logChange(failed map[string]string, detail []any) {
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	key := strings.Join(names, ",")
	s.mu.Lock()
	changed := key != s.lastFailed
	s.lastFailed = key
	s.mu.Unlock()
	switch {
	case !changed:
	case key == "":
		s.log.Info("ready")
	default:
		s.log.Warn("not ready", "failed", names, slog.Group("errors", detail...))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

// Start listens on addr now (a port in use fails here, at start-up) and
// serves in the background.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops server: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	s.srv, s.ln = srv, ln
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops server stopped", "err", err)
		}
	}()
	s.log.Info("ops server listening", "address", ln.Addr().String(), "endpoints", "/metrics /healthz /readyz")
	return nil
}

// Addr is the address the server listens on (the port chosen for ":0"), or
// "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Run starts the server on addr, or nothing when addr is "" (off), and
// makes /readyz answer 503 once ctx is done (the program is stopping). A
// program calls it before starting its RPC server and defers stop, which
// shuts the server down (for at most ShutdownTimeout), so that it stops
// last.
func (s *Server) Run(ctx context.Context, addr string) (stop func(), err error) {
	context.AfterFunc(ctx, s.Stopping)
	if addr == "" {
		return func() {}, nil
	}
	if err := s.Start(addr); err != nil {
		return nil, err
	}
	return func() { s.StopWithin(ShutdownTimeout) }, nil
}

// ShutdownTimeout bounds StopWithin's wait for requests in flight.
const ShutdownTimeout = 5 * time.Second

// StopWithin shuts the server down, waiting at most d for requests in
// flight, and logs a failure: for a program's last deferred call.
func (s *Server) StopWithin(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		s.log.Warn("ops server did not stop cleanly", "err", err)
	}
}

// Shutdown stops the server, letting requests in flight finish within ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("ops server: shutdown: %w", err)
	}
	return nil
}
