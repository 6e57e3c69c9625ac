package e2e

// The built-in broker (MICRO_BROKER unset: shippy's internal/httpbroker,
// go-micro's http broker made synchronous) under load, with the registry on
// NATS as in docker-compose.yml. Its Publish returns only after the
// email-service's handler succeeded, so the user-service's outbox keeps
// every event the email-service did not take and publishes it again.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/httpbroker"
	"github.com/shippy/shippy/internal/natsregistry"
	pb "github.com/shippy/shippy/proto/user"
)

// With the email-service up, a burst of 1,000 creates gives 1,000 emails, on
// the embedded SQLite store. (go-micro's own http broker lost 40 to 91 of
// them here, and none in a run on PostgreSQL: its Publish returns before it
// sends, and its inbox of unsent messages keeps 64.)
func TestBuiltinBrokerBurst(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStackOn(t, "", 0, 1)
	for k := range s.userEnv {
		if strings.HasPrefix(k, "DB_") || k == "DATABASE_URL" {
			delete(s.userEnv, k)
		}
	}
	s.userEnv["SQLITE_PATH"] = filepath.Join(t.TempDir(), "users.db")
	s.startUser()
	s.waitHTTPSubscribers(1)
	s.createAll(1000, 16, s.users[0].addr)
	s.settleCreated(1000)
}

// The email-service is stopped (SIGTERM) during a burst of 600 creates and
// started again: every user gets one email, those created while it was down
// from the outbox once it is back.
func TestBuiltinBrokerEmailServiceRestart(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStackOn(t, "", 1, 1)
	s.waitHTTPSubscribers(1)
	addr := s.users[0].addr
	res, wait := s.load(context.Background(), 600, 8, func() []string { return []string{addr} })

	waitUntil(t, "100 emails sent", 60*time.Second, func() bool { return len(s.sends()) >= 100 })
	e := s.emails[0]
	took := e.stop(t, syscall.SIGTERM, exitDeadline)
	if code := e.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("email-service exited with code %d after SIGTERM; want 0:\n%s", code, tail(e.stderr.String(), 20))
	}
	down := res.ok.Load()
	// Users are created while no email-service runs, unless the burst is
	// over already.
	loadDone := make(chan struct{})
	go func() { wait(); close(loadDone) }()
	waitUntil(t, "100 users created with the email-service down", 60*time.Second, func() bool {
		select {
		case <-loadDone:
			return true
		default:
			return res.ok.Load() >= down+100
		}
	})
	_, pending, err := s.outboxCounts()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("email-service exited %s after SIGTERM with %d emails sent; %d users created by then, %d now, %d events pending in the outbox",
		took.Round(time.Millisecond), len(s.sends()), down, res.ok.Load(), pending)
	if pending == 0 {
		t.Errorf("no event pending in the outbox while the email-service is down; the test proved nothing")
	}
	s.startEmail()
	<-loadDone
	if res.failed.Load() != 0 {
		t.Errorf("Create: %s; stopping the email-service must not fail any", res)
	}
	if tl := s.settle(); tl.users != 600 {
		t.Errorf("%d users committed; want 600", tl.users)
	}
}

// waitHTTPSubscribers waits until n built-in broker nodes subscribe to
// user.created: an email-service registers its service a moment before its
// subscription.
func (s *faultStack) waitHTTPSubscribers(n int) {
	t := s.t
	t.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(s.nats.URL())}, natsregistry.AskGoMicro(true))
	nodes := 0
	waitUntil(t, "the email-service's subscription registered", 30*time.Second, func() bool {
		svcs, err := reg.GetService(httpbroker.ServiceName)
		if err != nil {
			return false
		}
		nodes = 0
		for _, svc := range svcs {
			for _, node := range svc.Nodes {
				if node.Metadata["topic"] == pb.TopicUserCreated {
					nodes++
				}
			}
		}
		return nodes >= n
	})
}

// settleCreated is settle for a store the test cannot read (SQLite): the
// users are the n this test created, numbered 1 to n, all successfully. It
// waits until each has an email and the user-service has logged n distinct
// events published (after which nothing is sent again), then fails unless
// each user got exactly one email and nobody else got any.
func (s *faultStack) settleCreated(n int) {
	t := s.t
	t.Helper()
	want := map[string]int{}
	for i := 1; i <= n; i++ {
		want[fmt.Sprintf("%s-%d@example.com", s.prefix, i)] = 0
	}
	got := map[string]int{}
	var published int
	start := time.Now()
	lastMissing, lastChange := -1, start
	for {
		clear(got)
		for _, m := range s.sends() {
			got[m.Email]++
		}
		missing := 0
		for e := range want {
			if got[e] == 0 {
				missing++
			}
		}
		published = s.publishedEvents()
		if missing == 0 && published >= n {
			break
		}
		if missing != lastMissing {
			lastMissing, lastChange = missing, time.Now()
		}
		// Everything published and no email for a while: with a broker
		// that delivers after Publish returned, what is missing is lost.
		if published >= n && time.Since(lastChange) > 10*time.Second {
			break
		}
		if time.Since(start) > settleTimeout {
			t.Errorf("not at rest after %s: %d of %d users without an email, %d events published", settleTimeout, missing, n, published)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var lost, dup, ghosts int
	var examples []string
	for e := range want {
		switch c := got[e]; {
		case c == 0:
			lost++
			if len(examples) < 5 {
				examples = append(examples, e+" got no email")
			}
		case c > 1:
			dup += c - 1
			if len(examples) < 5 {
				examples = append(examples, fmt.Sprintf("%s got %d emails", e, c))
			}
		}
	}
	for e, c := range got {
		if _, ok := want[e]; !ok {
			ghosts += c
		}
	}
	t.Logf("%d users created, %d emails: lost=%d duplicated=%d ghosts=%d, %d events published (settled in %s)",
		n, len(s.sends()), lost, dup, ghosts, published, time.Since(start).Round(time.Millisecond))
	if lost != 0 || dup != 0 || ghosts != 0 {
		t.Errorf("lost=%d duplicated=%d ghosts=%d; want 0 each: %s", lost, dup, ghosts, strings.Join(examples, "; "))
	}
}

// publishedEvents counts the distinct event ids the user-services logged
// as published by the outbox relay.
func (s *faultStack) publishedEvents() int {
	s.mu.Lock()
	users := append([]*userProcess(nil), s.users...)
	s.mu.Unlock()
	ids := map[string]bool{}
	for _, u := range users {
		sc := bufio.NewScanner(strings.NewReader(u.stderr.String()))
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			var line struct {
				Msg     string `json:"msg"`
				EventID string `json:"event_id"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "outbox event published" {
				ids[line.EventID] = true
			}
		}
	}
	return len(ids)
}
