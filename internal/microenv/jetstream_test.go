package microenv

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
)

func TestLoadJetStreamEnv(t *testing.T) {
	const day = 24 * time.Hour
	defaults := JetStreamEnv{
		Replicas:    1,
		Events:      jsbroker.Limits{MaxAge: 7 * day, MaxBytes: 1 << 30},
		DeadLetters: jsbroker.Limits{MaxAge: 30 * day, MaxBytes: 256 << 20},
	}
	js := func(env map[string]string) map[string]string {
		env["MICRO_BROKER"] = "jetstream"
		return env
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    JetStreamEnv
		wantErr string
	}{
		{"defaults", js(map[string]string{}), defaults, ""},
		{"defaults on the http broker", map[string]string{}, defaults, ""},
		{"a cluster", js(map[string]string{"JETSTREAM_REPLICAS": "3"}),
			JetStreamEnv{Replicas: 3, Events: defaults.Events, DeadLetters: defaults.DeadLetters}, ""},
		{"limits", js(map[string]string{
			"JETSTREAM_EVENTS_MAX_AGE": "14d", "JETSTREAM_EVENTS_MAX_BYTES": "2GiB",
			"JETSTREAM_DEADLETTER_MAX_AGE": "90m", "JETSTREAM_DEADLETTER_MAX_BYTES": "500MB",
		}), JetStreamEnv{
			Replicas:    1,
			Events:      jsbroker.Limits{MaxAge: 14 * day, MaxBytes: 2 << 30},
			DeadLetters: jsbroker.Limits{MaxAge: 90 * time.Minute, MaxBytes: 500e6},
		}, ""},
		{"no limits", js(map[string]string{
			"JETSTREAM_EVENTS_MAX_AGE": "0", "JETSTREAM_EVENTS_MAX_BYTES": "0",
			"JETSTREAM_DEADLETTER_MAX_AGE": "0", "JETSTREAM_DEADLETTER_MAX_BYTES": "0",
		}), JetStreamEnv{Replicas: 1}, ""},
		{"bytes without a unit", js(map[string]string{"JETSTREAM_EVENTS_MAX_BYTES": "1048576"}),
			JetStreamEnv{Replicas: 1, Events: jsbroker.Limits{MaxAge: 7 * day, MaxBytes: 1 << 20}, DeadLetters: defaults.DeadLetters}, ""},
		{"no replica", js(map[string]string{"JETSTREAM_REPLICAS": "0"}), JetStreamEnv{}, `JETSTREAM_REPLICAS="0"`},
		{"too many replicas", js(map[string]string{"JETSTREAM_REPLICAS": "6"}), JetStreamEnv{}, `JETSTREAM_REPLICAS="6"`},
		{"replicas not a number", js(map[string]string{"JETSTREAM_REPLICAS": "three"}), JetStreamEnv{}, `JETSTREAM_REPLICAS="three"`},
		{"age not a duration", js(map[string]string{"JETSTREAM_EVENTS_MAX_AGE": "a week"}), JetStreamEnv{}, "JETSTREAM_EVENTS_MAX_AGE"},
		{"negative age", js(map[string]string{"JETSTREAM_DEADLETTER_MAX_AGE": "-1h"}), JetStreamEnv{}, "JETSTREAM_DEADLETTER_MAX_AGE"},
		{"age in seconds", js(map[string]string{"JETSTREAM_EVENTS_MAX_AGE": "30s"}), JetStreamEnv{}, "at least 1m"},
		{"size not a size", js(map[string]string{"JETSTREAM_EVENTS_MAX_BYTES": "lots"}), JetStreamEnv{}, "JETSTREAM_EVENTS_MAX_BYTES"},
		{"negative size", js(map[string]string{"JETSTREAM_DEADLETTER_MAX_BYTES": "-1"}), JetStreamEnv{}, "JETSTREAM_DEADLETTER_MAX_BYTES"},
		// 1024 bytes is more likely a unit forgotten than a limit wanted.
		{"tiny size", js(map[string]string{"JETSTREAM_EVENTS_MAX_BYTES": "1024"}), JetStreamEnv{}, "at least 1MiB"},
		{"lowercase unit", js(map[string]string{"JETSTREAM_EVENTS_MAX_BYTES": "1gib"}), JetStreamEnv{}, "JETSTREAM_EVENTS_MAX_BYTES"},
		{"overflow", js(map[string]string{"JETSTREAM_EVENTS_MAX_BYTES": "9999999TiB"}), JetStreamEnv{}, "JETSTREAM_EVENTS_MAX_BYTES"},
		// Setting them for another broker must not look as if it worked.
		{"replicas on the http broker", map[string]string{"JETSTREAM_REPLICAS": "3"}, JetStreamEnv{}, "JETSTREAM_REPLICAS is set but MICRO_BROKER=http"},
		{"limits on core NATS", map[string]string{"MICRO_BROKER": "nats", "JETSTREAM_EVENTS_MAX_AGE": "1h"}, JetStreamEnv{}, "JETSTREAM_EVENTS_MAX_AGE is set but MICRO_BROKER=nats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := LoadEnv(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("LoadEnv(%v) = %v; want nil", tt.env, err)
			case tt.wantErr == "" && e.JetStream != tt.want:
				t.Errorf("LoadEnv(%v).JetStream = %+v; want %+v", tt.env, e.JetStream, tt.want)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("LoadEnv(%v) = %v; want an error containing %q", tt.env, err, tt.wantErr)
			}
		})
	}
}

// The program that owns the streams (OwnStreams: the user-service) applies
// JETSTREAM_*; another (the email-service) creates them when missing and
// otherwise leaves them alone, saying so when its settings differ.
func TestPluginsApplyJetStreamEnvOnlyForTheOwner(t *testing.T) {
	ns := natstest.Start(t)
	env := func(t *testing.T, kv map[string]string) Env {
		t.Helper()
		kv["MICRO_BROKER"], kv["MICRO_BROKER_ADDRESS"], kv["MICRO_REGISTRY"] = "jetstream", ns.URL(), "memory"
		e, err := LoadEnv(func(k string) string { return kv[k] })
		if err != nil {
			t.Fatalf("LoadEnv: %v", err)
		}
		return e
	}
	connect := func(t *testing.T, e Env, opts ...PluginOption) string {
		t.Helper()
		var logs logbuf.Buffer
		opts = append(opts, Logger(slog.New(slog.NewJSONHandler(&logs, nil))))
		p, err := e.Plugins(opts...)
		if err != nil {
			t.Fatalf("Plugins: %v", err)
		}
		if err := p.Broker.Connect(); err != nil {
			t.Fatalf("Connect: %v", err)
		}
		if err := BrokerReady(p.Broker)(context.Background()); err != nil {
			t.Errorf("broker ready = %v; want nil once connected", err)
		}
		if err := p.Broker.Disconnect(); err != nil {
			t.Fatalf("Disconnect: %v", err)
		}
		return logs.String()
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	config := func(t *testing.T, name string) jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		return s.CachedInfo().Config
	}
	check := func(t *testing.T, when string, events, dlq jsbroker.Limits) {
		t.Helper()
		for _, s := range []struct {
			name string
			want jsbroker.Limits
		}{{jsbroker.DefaultStream, events}, {jsbroker.DefaultStream + "_DLQ", dlq}} {
			c := config(t, s.name)
			if c.MaxAge != s.want.MaxAge || c.MaxBytes != s.want.MaxBytes || c.Replicas != 1 || c.Discard != jetstream.DiscardOld {
				t.Errorf("%s: stream %s max age %s, max bytes %d, replicas %d, discard %v; want %s, %d, 1, DiscardOld",
					when, s.name, c.MaxAge, c.MaxBytes, c.Replicas, c.Discard, s.want.MaxAge, s.want.MaxBytes)
			}
		}
	}
	small := map[string]string{
		"JETSTREAM_EVENTS_MAX_AGE": "48h", "JETSTREAM_EVENTS_MAX_BYTES": "64MiB",
		"JETSTREAM_DEADLETTER_MAX_AGE": "96h", "JETSTREAM_DEADLETTER_MAX_BYTES": "32MiB",
	}
	smallEvents := jsbroker.Limits{MaxAge: 48 * time.Hour, MaxBytes: 64 << 20}
	smallDLQ := jsbroker.Limits{MaxAge: 96 * time.Hour, MaxBytes: 32 << 20}

	// The email-service starts first: it creates the streams as configured.
	connect(t, env(t, map[string]string{}))
	check(t, "created by a program that does not own them", jsbroker.Limits{MaxAge: jsbroker.DefaultMaxAge, MaxBytes: jsbroker.DefaultMaxBytes},
		jsbroker.Limits{MaxAge: jsbroker.DefaultDeadLetterMaxAge, MaxBytes: jsbroker.DefaultDeadLetterMaxBytes})

	// The owner applies its settings.
	connect(t, env(t, small), OwnStreams())
	check(t, "after the owner connected", smallEvents, smallDLQ)

	// Another program with other settings changes nothing, and says so.
	logs := connect(t, env(t, map[string]string{}))
	check(t, "after a program with other settings connected", smallEvents, smallDLQ)
	if !strings.Contains(logs, "stream exists with other limits") {
		t.Errorf("no warning about differing limits; logs:\n%s", logs)
	}
	// With the same settings, no warning.
	if logs := connect(t, env(t, small)); strings.Contains(logs, "other limits") {
		t.Errorf("warning with the same settings:\n%s", logs)
	}

	// Replicas over 1 need a cluster: the error names them.
	p, err := env(t, map[string]string{"JETSTREAM_REPLICAS": "3"}).Plugins(OwnStreams(), Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Broker.Connect(); err == nil || !strings.Contains(err.Error(), "replicas 3") {
		t.Errorf("Connect with 3 replicas on one server = %v; want an error naming the replicas", err)
	}
}
