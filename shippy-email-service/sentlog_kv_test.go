package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// openKVSentLog opens bucket on its own connection, as a replica does.
func openKVSentLog(t *testing.T, url, bucket string) *kvSentLog {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, closeNATS, err := dialKVSentLog(ctx, discardLog, url, kvBucket{Name: bucket}, testLease)
	if err != nil {
		t.Fatalf("dialKVSentLog(%s, %s) = %v; want nil", url, bucket, err)
	}
	t.Cleanup(closeNATS)
	return s
}

func TestKVSentLogSurvivesRestart(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	tl := newTally()
	before := dedup(tl.mailer("r1"), openKVSentLog(t, srv.URL(), defaultSentBucket))
	if err := before.Send(context.Background(), welcome("ev-1")); err != nil {
		t.Fatalf("Send(ev-1) = %v; want nil", err)
	}

	srv.Restart()

	// A replica started after the restart, and the one whose connection
	// came back, both find ev-1 sent.
	after := dedup(tl.mailer("r2"), openKVSentLog(t, srv.URL(), defaultSentBucket))
	if err := after.Send(context.Background(), welcome("ev-1")); err != nil {
		t.Fatalf("Send(ev-1) after restart = %v; want nil", err)
	}
	poll.Until(t, "the first replica's connection to come back", waitLimit, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return before.Send(ctx, welcome("ev-1")) == nil
	})
	if n := len(tl.sends("ev-1")); n != 1 {
		t.Errorf("sends for ev-1 across a NATS restart = %d; want 1", n)
	}
}

func TestKVSentLogUnreachableSendsNothing(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	tl := newTally()
	d := dedup(tl.mailer("r1"), openKVSentLog(t, srv.URL(), defaultSentBucket))
	srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.Send(ctx, welcome("ev-1")); err == nil {
		t.Errorf("Send(ev-1) with NATS down = nil; want an error for the broker to redeliver")
	}
	if n := len(tl.sends("ev-1")); n != 0 {
		t.Errorf("sends for ev-1 with NATS down = %d; want 0", n)
	}
}

func TestKVSentLogOddEventIDs(t *testing.T) {
	t.Parallel()
	url := natstest.Start(t).URL()
	tl := newTally()
	r1 := dedup(tl.mailer("r1"), openKVSentLog(t, url, "odd_ids"))
	r2 := dedup(tl.mailer("r2"), openKVSentLog(t, url, "odd_ids"))
	ids := []string{
		"6f1c2a4e-8d3b-4c1e-9f2a-7b5d0e3c9a18",
		"ev.1", "ev 1", "ev*", "ev>", "ev_1", "évènement", "a/b", "\x00",
		strings.Repeat("x", 2000),
	}
	for _, id := range ids {
		for _, r := range []*dedupMailer{r1, r2} {
			if err := r.Send(context.Background(), welcome(id)); err != nil {
				t.Errorf("Send(%q) = %v; want nil", id, err)
			}
		}
	}
	for _, id := range ids {
		if n := len(tl.sends(id)); n != 1 {
			t.Errorf("sends for %q delivered twice = %d; want 1", id, n)
		}
	}
}

func TestKVKey(t *testing.T) {
	validKey := regexp.MustCompile(`^[-/_=\.a-zA-Z0-9]+$`)
	tests := []struct {
		id, want string
	}{
		{"6f1c2a4e-8d3b-4c1e-9f2a-7b5d0e3c9a18", "6f1c2a4e-8d3b-4c1e-9f2a-7b5d0e3c9a18"},
		{"ev-1", "ev-1"},
		{"ev.1", ""}, {"ev_1", ""}, {"ev>", ""}, {"", ""}, {strings.Repeat("a", 65), ""},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		got := kvKey(tt.id)
		if tt.want != "" && got != tt.want {
			t.Errorf("kvKey(%q) = %q; want %q", tt.id, got, tt.want)
		}
		if tt.want == "" && !strings.HasPrefix(got, "sha256_") {
			t.Errorf("kvKey(%q) = %q; want a sha256_ key", tt.id, got)
		}
		if !validKey.MatchString(got) {
			t.Errorf("kvKey(%q) = %q; not a valid KV key", tt.id, got)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("kvKey(%q) = kvKey(%q) = %q; want distinct keys", tt.id, other, got)
		}
		seen[got] = tt.id
	}
}
