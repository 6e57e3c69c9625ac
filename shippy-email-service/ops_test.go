package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/opshttp/opstest"
	"github.com/shippy/shippy/internal/poll"
	pb "github.com/shippy/shippy/proto/user"
)

func TestLoadConfigOps(t *testing.T) {
	const day = 24 * time.Hour
	js := func(kv ...string) map[string]string {
		env := map[string]string{"MICRO_BROKER": "jetstream"}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	tests := []struct {
		name    string
		env     map[string]string
		check   func(Config) bool
		wantErr string
	}{
		{"metrics default", nil, func(c Config) bool { return c.MetricsAddress == ":9092" }, ""},
		{"metrics off", map[string]string{"METRICS_ADDRESS": "off"}, func(c Config) bool { return c.MetricsAddress == "" }, ""},
		{"metrics elsewhere", map[string]string{"METRICS_ADDRESS": "127.0.0.1:9300"}, func(c Config) bool { return c.MetricsAddress == "127.0.0.1:9300" }, ""},
		{"metrics not an address", map[string]string{"METRICS_ADDRESS": "9092"}, nil, "METRICS_ADDRESS"},
		{"text logs", map[string]string{"LOG_FORMAT": "text"}, func(c Config) bool { return c.LogFormat == "text" }, ""},
		{"bad log format", map[string]string{"LOG_FORMAT": "xml"}, nil, "LOG_FORMAT"},
		{"sent log defaults to the stream's age", js("JETSTREAM_EVENTS_MAX_AGE", "14d"),
			func(c Config) bool { return c.SentMaxAge == 14*day && c.SentMaxBytes == 256<<20 }, ""},
		{"sent log limits", js("EMAIL_SENT_MAX_AGE", "30d", "EMAIL_SENT_MAX_BYTES", "1GiB"),
			func(c Config) bool { return c.SentMaxAge == 30*day && c.SentMaxBytes == 1<<30 }, ""},
		{"sent log without limits", js("EMAIL_SENT_MAX_AGE", "0", "EMAIL_SENT_MAX_BYTES", "0"),
			func(c Config) bool { return c.SentMaxAge == 0 && c.SentMaxBytes == 0 }, ""},
		{"events kept forever, ids too", js("JETSTREAM_EVENTS_MAX_AGE", "0"),
			func(c Config) bool { return c.SentMaxAge == 0 }, ""},
		// An event still in the stream can come again (a consumer created
		// again replays it); its id must still be known as sent.
		{"ids forgotten before their events", js("EMAIL_SENT_MAX_AGE", "3d"), nil, "at least JETSTREAM_EVENTS_MAX_AGE"},
		{"ids forgotten, events kept forever", js("JETSTREAM_EVENTS_MAX_AGE", "0", "EMAIL_SENT_MAX_AGE", "30d"), nil, "want 0"},
		{"sent log age not a duration", js("EMAIL_SENT_MAX_AGE", "soon"), nil, "EMAIL_SENT_MAX_AGE"},
		{"sent log size not a size", js("EMAIL_SENT_MAX_BYTES", "big"), nil, "EMAIL_SENT_MAX_BYTES"},
		{"sent log limits without jetstream", map[string]string{"EMAIL_SENT_MAX_BYTES": "1GiB"}, nil, "EMAIL_SENT_MAX_BYTES is set but MICRO_BROKER is not jetstream"},
		{"replicas reach the sent log", js("JETSTREAM_REPLICAS", "3"), func(c Config) bool { return c.Micro.JetStream.Replicas == 3 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadConfig(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("LoadConfig(%v) = %v; want nil", tt.env, err)
			case tt.wantErr == "" && !tt.check(got):
				t.Errorf("LoadConfig(%v) = %+v; not what the variables say", tt.env, got)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("LoadConfig(%v) = %v; want an error containing %q", tt.env, err, tt.wantErr)
			}
		})
	}
}

// The email-service as main wires it, on JetStream: a send and a permanent
// failure move the counters (and the dead letters), /readyz follows the
// broker and the sent log's bucket, /healthz does not.
func TestOpsServerOnJetStream(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	ops := newEmailOps(discardLog)
	ops.server.SetCheckTimeout(500 * time.Millisecond)

	sent, closeLog, err := dialKVSentLog(ctx, discardLog, ns.URL(), kvBucket{Name: defaultSentBucket}, defaultSendLease, nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("sent log: %v", err)
	}
	t.Cleanup(closeLog)
	ops.checkSentLog(sent)
	refused := mailerFunc(func(_ context.Context, e WelcomeEmail) error {
		if e.EventID == "ev-550" {
			return fmt.Errorf("%w: 550 no such user", errPermanent)
		}
		return nil
	})
	h := NewHandler(newDedupMailer(ops.countSends(refused), sent, defaultSendLease, discardLog), discardLog)
	b := jsbroker.New(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog), jsbroker.ReconnectWait(50*time.Millisecond))
	ops.watchBroker(b)
	srv, err := newEmailService(testEnv, testPlugins(b), h, defaultQueue)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	stopOps, err := ops.server.Run(runCtx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); stopOps() })
	addr := ops.server.Addr()
	if code, body := opstest.Get(t, addr, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"broker"`) {
		t.Errorf("/readyz before the broker connected = %d %s; want 503 naming the broker", code, body)
	}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.stop() })
	opstest.WaitStatus(t, addr, "/readyz", http.StatusOK)

	pubBroker := jsbroker.NewBroker(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))
	if err := pubBroker.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pubBroker.Disconnect() })
	pub := client.NewClient(client.Broker(pubBroker), client.Registry(registry.NewMemoryRegistry()))
	for _, id := range []string{"ev-ok", "ev-550"} {
		msg := pub.NewMessage(pb.TopicUserCreated, event(id), client.WithMessageContentType("application/protobuf"))
		if err := pub.Publish(jsbroker.WithEventID(ctx, id), msg); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
	want := map[string]float64{
		"shippy_emails_sent_total":                         1,
		`shippy_emails_failed_total{kind="permanent"}`:     1,
		`shippy_emails_failed_total{kind="temporary"}`:     0,
		"shippy_dead_letters_total":                        1,
		"shippy_events_delivered_total":                    2,
		"shippy_dead_letter_errors_total":                  0,
		`shippy_emails_failed_total{kind="made_up_label"}`: -1, // absent
	}
	var body string
	poll.Until(t, "the dead letter counted", waitLimit, func() bool {
		body = opstest.Scrape(t, addr)
		v, _ := opstest.Value(body, "shippy_dead_letters_total")
		return v == 1
	})
	for series, w := range want {
		v, ok := opstest.Value(body, series)
		if w < 0 {
			if ok {
				t.Errorf("%s present; want absent", series)
			}
			continue
		}
		if !ok || v != w {
			t.Errorf("%s = %v (present %v); want %v\n%s", series, v, ok, w, body)
		}
	}

	// NATS goes away: not ready, naming both; still alive.
	ns.Stop()
	poll.Until(t, "/readyz to fail", waitLimit, func() bool {
		code, body := opstest.Get(t, addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, `"broker":"not connected"`) && strings.Contains(body, `"sent_log"`)
	})
	if code, _ := opstest.Get(t, addr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with NATS down = %d; want 200", code)
	}
	ns.Restart()
	poll.Until(t, "/readyz back to 200", waitLimit, func() bool {
		code, _ := opstest.Get(t, addr, "/readyz")
		return code == http.StatusOK
	})
}

// A full sent-log bucket refuses new ids (key-value buckets discard new),
// so a claim fails and nothing is sent: the event is retried, not mailed
// without its record. The bucket carries its limits.
func TestKVSentLogAtItsByteLimit(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	ctx := context.Background()
	const limit = 1 << 20
	sent, closeLog, err := dialKVSentLog(ctx, discardLog, ns.URL(), kvBucket{Name: "full", MaxAge: time.Hour, MaxBytes: limit, Replicas: 1}, testLease)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeLog)
	st, err := sent.kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != time.Hour {
		t.Errorf("bucket TTL %s; want 1h", st.TTL())
	}
	if info := st.(*jetstream.KeyValueBucketStatus).StreamInfo(); info.Config.MaxBytes != limit || info.Config.Discard != jetstream.DiscardNew {
		t.Errorf("bucket max bytes %d, discard %v; want %d, DiscardNew", info.Config.MaxBytes, info.Config.Discard, limit)
	}
	tl := newTally()
	d := dedup(tl.mailer("r1"), sent)
	var failed error
	for i := 0; failed == nil && i < 100000; i++ {
		failed = d.Send(ctx, welcome(fmt.Sprintf("%036d", i)))
	}
	if failed == nil {
		t.Fatal("100000 claims fit in a 1 MiB bucket; want the bucket full")
	}
	if !strings.Contains(failed.Error(), "claim event") {
		t.Errorf("Send into a full bucket = %v; want the claim to fail", failed)
	}
	if n := tl.total(""); n == 0 {
		t.Errorf("sent %d emails before the bucket filled; want some", n)
	}
	before := tl.total("")
	if err := d.Send(ctx, welcome("ev-after-full")); err == nil || tl.total("") != before {
		t.Errorf("Send with the bucket full = %v, sent %d more; want an error and nothing sent", err, tl.total("")-before)
	}
}
