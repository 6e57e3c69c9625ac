package opshttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/opshttp/opstest"
)

func start(t *testing.T, s *opshttp.Server) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := s.Run(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Run = %v", err)
	}
	t.Cleanup(func() { cancel(); stop() })
	return s.Addr()
}

func TestEndpoints(t *testing.T) {
	var logs logbuf.Buffer
	s := opshttp.New(slog.New(slog.NewJSONHandler(&logs, nil)))
	s.SetCheckTimeout(200 * time.Millisecond)
	jobs := prometheus.NewCounter(prometheus.CounterOpts{Name: "shippy_test_jobs_total", Help: "Jobs."})
	s.Registry().MustRegister(jobs)
	jobs.Add(3)

	var dbDown, brokerSlow atomic.Bool
	s.AddCheck("database", func(context.Context) error {
		if dbDown.Load() {
			return opshttp.Fail("unreachable", errors.New("dial tcp 10.0.0.5:5432: connection refused (postgres://app:secret@db)"))
		}
		return nil
	})
	s.AddCheck("broker", func(ctx context.Context) error {
		if brokerSlow.Load() {
			<-ctx.Done() // a check that hangs is cut off by the timeout
			return ctx.Err()
		}
		return nil
	})
	addr := start(t, s)

	body := opstest.Scrape(t, addr)
	if v, ok := opstest.Value(body, "shippy_test_jobs_total"); !ok || v != 3 {
		t.Errorf("shippy_test_jobs_total = %v (found %v); want 3", v, ok)
	}
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s (Go and process collectors)", want)
		}
	}

	readyz := func() (int, map[string]any) {
		t.Helper()
		code, body := opstest.Get(t, addr, "/readyz")
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("/readyz body %q: %v", body, err)
		}
		return code, v
	}
	if code, v := readyz(); code != http.StatusOK || v["status"] != "ready" {
		t.Errorf("/readyz = %d %v; want 200 ready", code, v)
	}

	dbDown.Store(true)
	brokerSlow.Store(true)
	code, v := readyz()
	failed, _ := v["failed"].(map[string]any)
	if code != http.StatusServiceUnavailable || failed["database"] != "unreachable" || failed["broker"] != "timeout" {
		t.Errorf("/readyz with the database down and the broker hanging = %d %v; want 503 naming database (unreachable) and broker (timeout)", code, v)
	}
	if _, b := opstest.Get(t, addr, "/readyz"); strings.Contains(b, "secret") || strings.Contains(b, "10.0.0.5") {
		t.Errorf("/readyz shows the error's internals: %s", b)
	}
	// Liveness does not depend on the checks.
	if code, _ := opstest.Get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with checks failing = %d; want 200", code)
	}
	// The full error is logged once per change, for the operator.
	if n := strings.Count(logs.String(), `"msg":"not ready"`); n != 1 || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("logged %d `not ready` lines; want 1 with the error:\n%s", n, logs.String())
	}

	dbDown.Store(false)
	brokerSlow.Store(false)
	if code, _ := readyz(); code != http.StatusOK {
		t.Errorf("/readyz after recovery = %d; want 200", code)
	}
	if !strings.Contains(logs.String(), `"msg":"ready"`) {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
	if code, _ := opstest.Get(t, addr, "/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d; want 404", code)
	}
}

func TestReadyzWhileStopping(t *testing.T) {
	s := opshttp.New(slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	stop, err := s.Run(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	addr := s.Addr()
	if code, _ := opstest.Get(t, addr, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d; want 200", code)
	}
	cancel() // the program stops: no new work, but still alive
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := opstest.Get(t, addr, "/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"shutdown":"stopping"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after the program began stopping = %d %s; want 503 naming shutdown", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := opstest.Get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while stopping = %d; want 200", code)
	}
	stop()
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("the server still answers after stop")
	}
}

func TestRunOffAndPortInUse(t *testing.T) {
	s := opshttp.New(slog.New(slog.DiscardHandler))
	stop, err := s.Run(context.Background(), "")
	if err != nil || s.Addr() != "" {
		t.Errorf("Run(\"\") = %v, listening on %q; want nil and no server", err, s.Addr())
	}
	stop()

	addr := start(t, opshttp.New(slog.New(slog.DiscardHandler)))
	if _, err := opshttp.New(slog.New(slog.DiscardHandler)).Run(context.Background(), addr); err == nil {
		t.Errorf("Run(%s) on a port in use = nil; want an error (start-up fails)", addr)
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		v, want, wantErr string
	}{
		{"", ":9091", ""},
		{"off", "", ""},
		{" off ", "", ""},
		{":9100", ":9100", ""},
		{"127.0.0.1:0", "127.0.0.1:0", ""},
		{"[::1]:9091", "[::1]:9091", ""},
		{"9091", "", "METRICS_ADDRESS"},
		{"localhost", "", "METRICS_ADDRESS"},
		{":http", "", "port"},
		{":70000", "", "port"},
	}
	for _, tt := range tests {
		got, err := opshttp.ParseAddress("METRICS_ADDRESS", tt.v, ":9091")
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("ParseAddress(%q) = %q, %v; want %q, nil", tt.v, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseAddress(%q) = %q, %v; want an error naming %s", tt.v, got, err, tt.wantErr)
		}
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{opshttp.Fail("not connected", errors.New("nats: no servers available")), "not connected"},
		{context.DeadlineExceeded, "timeout"},
		{opshttp.Fail("unreachable", context.DeadlineExceeded), "timeout"},
		{errors.New("pq: password authentication failed for user app"), "failed"},
	}
	for _, tt := range tests {
		if got := opshttp.Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q; want %q", tt.err, got, tt.want)
		}
	}
}
