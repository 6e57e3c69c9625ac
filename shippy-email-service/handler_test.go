package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/servicelog"

	pb "github.com/shippy/shippy/proto/user"
)

func validEvent() *pb.UserCreated {
	return &pb.UserCreated{
		EventId:         "ev-1",
		Id:              "user-1",
		Name:            "Ewan Valentine",
		Company:         "Shippy",
		Email:           "ewan@example.com",
		CreatedAtUnixMs: 1700000000000,
	}
}

func TestHandleValidates(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*pb.UserCreated)
	}{
		{"no event id", func(e *pb.UserCreated) { e.EventId = "" }},
		{"no user id", func(e *pb.UserCreated) { e.Id = "" }},
		{"no name", func(e *pb.UserCreated) { e.Name = "" }},
		{"no email", func(e *pb.UserCreated) { e.Email = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally()
			ev := validEvent()
			tt.mutate(ev)
			err := NewHandler(tl.mailer("r"), discardLog).Handle(context.Background(), ev)
			if !errors.Is(err, errInvalidEvent) {
				t.Errorf("Handle(%v) = %v; want %v", ev, err, errInvalidEvent)
			}
			if n := tl.total(""); n != 0 {
				t.Errorf("Handle(%v) sent %d emails; want 0", ev, n)
			}
		})
	}
}

func TestLogMailerPrintsTheTutorialLine(t *testing.T) {
	tests := []struct {
		name, userName, wantOut string
	}{
		{"plain", "Ewan Valentine", "Sending email to: Ewan Valentine\n"},
		{"newline in name stays one line", "Ewan\nSending email to: Mallory", "Sending email to: EwanSending email to: Mallory\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, logs bytes.Buffer
			m := NewLogMailer(&out, slog.New(slog.NewJSONHandler(&logs, nil)))
			e := WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: tt.userName, Email: "ewan@example.com"}
			if err := m.Send(context.Background(), e); err != nil {
				t.Fatalf("Send(%v) = %v; want nil", e, err)
			}
			if out.String() != tt.wantOut {
				t.Errorf("Send(%v) printed %q; want %q", e, out.String(), tt.wantOut)
			}
			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("log line %q is not one JSON object: %v", logs.String(), err)
			}
			for k, want := range map[string]string{"event_id": "ev-1", "user_id": "user-1", "email": "ewan@example.com"} {
				if line[k] != want {
					t.Errorf("log line %s = %v; want %q", k, line[k], want)
				}
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	defaults := Config{LogLevel: slog.LevelInfo, LogFormat: servicelog.DefaultFormat(), MetricsAddress: ":9092",
		Queue: "go.micro.srv.email", Concurrency: 8, SentBucket: "shippy_email_sent", SendLease: 10 * time.Second,
		RetryBackoff: defaultRetryBackoff}
	// On jetstream the sent log is bounded: 7 days (the event stream's
	// max age), 256 MiB.
	sentLimits := func(c *Config) { c.SentMaxAge, c.SentMaxBytes = 7*24*time.Hour, 256<<20 }
	with := func(change func(*Config)) Config {
		c := defaults
		change(&c)
		return c
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr string
	}{
		{"defaults", nil, defaults, ""},
		{"set", map[string]string{"LOG_LEVEL": "debug", "EMAIL_QUEUE": "emails", "EMAIL_SENT_BUCKET": "sent-2", "EMAIL_SEND_LEASE": "1m"},
			with(func(c *Config) {
				c.LogLevel, c.Queue, c.SentBucket, c.SendLease = slog.LevelDebug, "emails", "sent-2", time.Minute
			}), ""},
		{"jetstream: shared log at the default address", map[string]string{"MICRO_BROKER": "jetstream"},
			with(func(c *Config) { c.SentNATS = "nats://127.0.0.1:4222"; sentLimits(c) }), ""},
		{"jetstream: shared log at the broker's addresses", map[string]string{"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": "nats://n1:4222,n2:4222"},
			with(func(c *Config) { c.SentNATS = "nats://n1:4222,n2:4222"; sentLimits(c) }), ""},
		{"jetstream: lease within the last redelivery delay", map[string]string{"MICRO_BROKER": "jetstream", "EMAIL_SEND_LEASE": "14s", "EMAIL_RETRY_BACKOFF": "1s, 2s,15s"},
			with(func(c *Config) {
				c.SentNATS, c.SendLease, c.RetryBackoff = "nats://127.0.0.1:4222", 14*time.Second, []time.Duration{time.Second, 2 * time.Second, 15 * time.Second}
				sentLimits(c)
			}), ""},
		{"jetstream: lease outlasting the redeliveries", map[string]string{"MICRO_BROKER": "jetstream", "EMAIL_SEND_LEASE": "15s", "EMAIL_RETRY_BACKOFF": "1s,2s,15s"}, Config{}, "EMAIL_SEND_LEASE"},
		{"jetstream: default schedule fits a long lease", map[string]string{"MICRO_BROKER": "jetstream", "EMAIL_SEND_LEASE": "4m"},
			with(func(c *Config) { c.SentNATS, c.SendLease = "nats://127.0.0.1:4222", 4*time.Minute; sentLimits(c) }), ""},
		{"retry backoff", map[string]string{"EMAIL_RETRY_BACKOFF": "500ms,1m"},
			with(func(c *Config) { c.RetryBackoff = []time.Duration{500 * time.Millisecond, time.Minute} }), ""},
		{"bad retry backoff", map[string]string{"EMAIL_RETRY_BACKOFF": "1s,soon"}, Config{}, "EMAIL_RETRY_BACKOFF"},
		{"zero retry delay", map[string]string{"EMAIL_RETRY_BACKOFF": "1s,0s"}, Config{}, "EMAIL_RETRY_BACKOFF"},
		{"empty retry delay", map[string]string{"EMAIL_RETRY_BACKOFF": "1s,"}, Config{}, "EMAIL_RETRY_BACKOFF"},
		{"core nats: in memory", map[string]string{"MICRO_BROKER": "nats", "MICRO_BROKER_ADDRESS": "nats://n1:4222"}, defaults, ""},
		{"bad broker address", map[string]string{"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": "http://n1:4222"}, Config{}, "MICRO_BROKER_ADDRESS"},
		{"empty broker address in list", map[string]string{"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": "nats://n1:4222,"}, Config{}, "MICRO_BROKER_ADDRESS"},
		{"bad bucket", map[string]string{"EMAIL_SENT_BUCKET": "sent.ids"}, Config{}, "EMAIL_SENT_BUCKET"},
		{"bad lease", map[string]string{"EMAIL_SEND_LEASE": "30"}, Config{}, "EMAIL_SEND_LEASE"},
		{"lease too short", map[string]string{"EMAIL_SEND_LEASE": "10ms"}, Config{}, "EMAIL_SEND_LEASE"},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, Config{}, "LOG_LEVEL"},
		{"bad queue", map[string]string{"EMAIL_QUEUE": "my queue"}, Config{}, "EMAIL_QUEUE"},
		{"wildcard queue", map[string]string{"EMAIL_QUEUE": "emails.>"}, Config{}, "EMAIL_QUEUE"},
		{"concurrency", map[string]string{"EMAIL_CONCURRENCY": "1"}, with(func(c *Config) { c.Concurrency = 1 }), ""},
		{"no concurrency", map[string]string{"EMAIL_CONCURRENCY": "0"}, Config{}, "EMAIL_CONCURRENCY"},
		{"bad concurrency", map[string]string{"EMAIL_CONCURRENCY": "many"}, Config{}, "EMAIL_CONCURRENCY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadConfig(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("LoadConfig(%v) = %v; want an error naming %s", tt.env, err, tt.wantErr)
				}
				return
			}
			got.Micro = microenv.Env{} // internal/microenv's own tests check it
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("LoadConfig(%v) = %+v, %v; want %+v, nil", tt.env, got, err, tt.want)
			}
		})
	}
}
