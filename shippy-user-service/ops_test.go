package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	natsregistry "go-micro.dev/v6/registry/nats"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/opshttp/opstest"
	"github.com/shippy/shippy/internal/outbox"
	pb "github.com/shippy/shippy/proto/user"
)

func TestLoadConfigOps(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantErr string
	}{
		{"metrics default", nil, func(c Config) bool { return c.MetricsAddress == ":9091" }, ""},
		{"metrics off", map[string]string{"METRICS_ADDRESS": "off"}, func(c Config) bool { return c.MetricsAddress == "" }, ""},
		{"metrics on loopback", map[string]string{"METRICS_ADDRESS": "127.0.0.1:0"}, func(c Config) bool { return c.MetricsAddress == "127.0.0.1:0" }, ""},
		{"metrics without a port", map[string]string{"METRICS_ADDRESS": "localhost"}, nil, "METRICS_ADDRESS"},
		{"json logs", map[string]string{"LOG_FORMAT": "json"}, func(c Config) bool { return c.LogFormat == "json" }, ""},
		{"bad log format", map[string]string{"LOG_FORMAT": "pretty"}, nil, "LOG_FORMAT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadConfig(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("loadConfig(%v) = %v; want nil", tt.env, err)
			case tt.wantErr == "" && !tt.check(got):
				t.Errorf("loadConfig(%v): MetricsAddress %q, LogFormat %q; not what the variables say", tt.env, got.MetricsAddress, got.LogFormat)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("loadConfig(%v) = %v; want an error containing %q", tt.env, err, tt.wantErr)
			}
		})
	}
}

// The user-service as main wires it (ops server, metrics wrapper, readiness
// checks), on the JetStream broker: what a Create and refused logins do to
// /metrics, and /readyz following the database.
func TestOpsServer(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			ns := natstest.Start(t)
			ops := opshttp.New(discardLog)
			ops.SetCheckTimeout(500 * time.Millisecond)
			metrics := newUserMetrics(ops.Registry())
			jsb := jsbroker.New(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))
			svc, err := newService(testCfg(codecProto), store, discardLog,
				testPlugins(natsregistry.NewNatsRegistry(registry.Addrs(ns.URL())), jsb), server.WrapHandler(metrics.wrapHandler))
			if err != nil {
				t.Fatal(err)
			}
			svc.instrument(ops, metrics, store, microenv.BrokerReady(jsb))
			ctx, cancel := context.WithCancel(context.Background())
			stopOps, err := ops.Run(ctx, "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cancel(); stopOps() })
			addr := ops.Addr()
			if code, _ := opstest.Get(t, addr, "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz before the RPC server started = %d; want 200", code)
			}
			if code, body := opstest.Get(t, addr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"broker"`) {
				t.Errorf("/readyz before the broker connected = %d %s; want 503 naming the broker", code, body)
			}
			serveInBackground(t, svc)
			waitRegistered(t, ns.URL(), serviceName)
			opstest.WaitStatus(t, addr, "/readyz", http.StatusOK)

			// Before any call every method is there, at zero.
			body := opstest.Scrape(t, addr)
			for _, m := range []string{"Create", "Get", "GetAll", "Auth", "ValidateToken"} {
				series := fmt.Sprintf(`shippy_rpc_duration_seconds_count{method="UserService.%s"}`, m)
				if v, ok := opstest.Value(body, series); !ok || v != 0 {
					t.Errorf("%s = %v (present %v); want 0", series, v, ok)
				}
			}

			users := newUserClient(ns.URL())
			const password = "correct horse battery"
			if _, err := users.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: password}); err != nil {
				t.Fatalf("Create = %v", err)
			}
			// Wrong passwords until the throttle refuses one.
			refused, throttled := 0, 0
			for i := 0; throttled == 0 && i < 20; i++ {
				switch _, err := users.Auth(context.Background(), &pb.User{Email: "ada@example.com", Password: "wrong password"}); microCode(err) {
				case 401:
					refused++
				case 429:
					throttled++
				default:
					t.Fatalf("Auth with a wrong password = %v; want 401 or 429", err)
				}
			}
			if throttled == 0 {
				t.Fatalf("20 wrong passwords, none throttled")
			}
			want := map[string]float64{
				"shippy_users_created_total":                                              1,
				`shippy_rpc_duration_seconds_count{method="UserService.Create"}`:          1,
				`shippy_rpc_duration_seconds_count{method="UserService.Auth"}`:            float64(refused + throttled),
				`shippy_auth_failures_total{reason="invalid_credentials"}`:                float64(refused),
				`shippy_auth_failures_total{reason="throttled"}`:                          1,
				`shippy_rpc_errors_total{code="401",method="UserService.Auth"}`:           float64(refused),
				`shippy_rpc_errors_total{code="429",method="UserService.Auth"}`:           1,
				`shippy_rpc_duration_seconds_bucket{method="UserService.Create",le="10"}`: 1,
				"shippy_events_published_total":                                           1,
				"shippy_event_publish_errors_total":                                       0,
				"shippy_outbox_pending":                                                   0,
				"shippy_outbox_oldest_age_seconds":                                        0,
			}
			// The event is published right after the commit; the backlog
			// gauge may show it pending until its cache expires.
			deadline := time.Now().Add(backlogCacheTTL + 10*time.Second)
			for {
				body = opstest.Scrape(t, addr)
				var wrong []string
				for series, w := range want {
					if v, ok := opstest.Value(body, series); !ok || v != w {
						wrong = append(wrong, fmt.Sprintf("%s = %v (present %v); want %v", series, v, ok, w))
					}
				}
				if len(wrong) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after a Create and %d refused logins:\n%s\n\n%s", refused+throttled, strings.Join(wrong, "\n"), body)
				}
				time.Sleep(100 * time.Millisecond)
			}

			// The database goes away: not ready, still alive.
			if err := store.Close(); err != nil {
				t.Fatal(err)
			}
			code, body := opstest.Get(t, addr, "/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, `"database":"unreachable"`) || strings.Contains(body, `"broker"`) {
				t.Errorf("/readyz with the database closed = %d %s; want 503 naming the database only", code, body)
			}
			if code, _ := opstest.Get(t, addr, "/healthz"); code != http.StatusOK {
				t.Errorf("/healthz with the database closed = %d; want 200 (liveness must not restart pods for it)", code)
			}
			opstest.Scrape(t, addr) // the backlog query fails; /metrics still answers
		})
	}
}

// failingPublisher keeps every event in the outbox.
type failingPublisher struct{}

func (failingPublisher) Publish(context.Context, outbox.Message) error {
	return fmt.Errorf("broker down")
}

// The backlog gauges come from one bounded query per cache period, however
// often Prometheus scrapes.
func TestOutboxCollectorBacklog(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			relay := outbox.New(store.db, failingPublisher{}, outbox.WithLogger(discardLog))
			c := newOutboxCollector(relay, discardLog)
			now := time.Now()
			c.now = func() time.Time { return now }
			reg := prometheus.NewRegistry()
			reg.MustRegister(c)
			gauges := func() (pending, age float64) {
				t.Helper()
				mfs, err := reg.Gather()
				if err != nil {
					t.Fatalf("Gather = %v", err)
				}
				for _, mf := range mfs {
					switch mf.GetName() {
					case "shippy_outbox_pending":
						pending = gaugeValue(mf)
					case "shippy_outbox_oldest_age_seconds":
						age = gaugeValue(mf)
					}
				}
				return pending, age
			}
			if p, a := gauges(); p != 0 || a != 0 {
				t.Errorf("empty outbox: pending %v, oldest age %v; want 0, 0", p, a)
			}

			u := newTestUser("ada@example.com")
			if err := store.Create(context.Background(), u, newTestEvent(u)); err != nil {
				t.Fatal(err)
			}
			if p, _ := gauges(); p != 0 {
				t.Errorf("pending %v within the cache period; want the cached 0", p)
			}
			now = now.Add(backlogCacheTTL + time.Minute)
			p, a := gauges()
			if p != 1 || a < 60 || a > 120 {
				t.Errorf("a minute after an event was enqueued: pending %v, oldest age %vs; want 1, about 60", p, a)
			}
		})
	}
}

func gaugeValue(mf *dto.MetricFamily) float64 {
	if len(mf.GetMetric()) == 0 {
		return -1
	}
	return mf.GetMetric()[0].GetGauge().GetValue()
}
