package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/broker"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// The events commands against NATS as deploy/nats/shippy.conf runs it
// (docker-compose.yml, make up), logged in as ops; the events come from
// shippy's JetStream broker, logged in as the services' users.

var eventsPasswords = map[string]string{
	"user-service":  "pw-user-service-events-test",
	"email-service": "pw-email-service-events-test",
	"cli":           "pw-cli-events-test",
	"ops":           "pw-ops-events-test",
}

func startEventsNATS(t *testing.T) *natstest.Server {
	t.Helper()
	return natstest.StartConfig(t, filepath.Join("..", "deploy", "nats", "shippy.conf"), map[string]string{
		"NATS_USER_SERVICE_PASSWORD":  eventsPasswords["user-service"],
		"NATS_EMAIL_SERVICE_PASSWORD": eventsPasswords["email-service"],
		"NATS_CLI_PASSWORD":           eventsPasswords["cli"],
		"NATS_OPS_PASSWORD":           eventsPasswords["ops"],
	})
}

// jsBroker is shippy's JetStream broker as user (it creates the streams).
func jsBroker(t *testing.T, url, user string, opts ...broker.Option) *jsbroker.Broker {
	t.Helper()
	b := jsbroker.New(append([]broker.Option{broker.Addrs(url),
		jsbroker.NatsOptions(nats.UserInfo(user, eventsPasswords[user]), nats.CustomInboxPrefix("_INBOX_"+user))}, opts...)...)
	if err := b.Connect(); err != nil {
		t.Fatalf("jsbroker as %s: Connect() = %v", user, err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })
	return b
}

func publishUser(t *testing.T, b *jsbroker.Broker, ev *pb.UserCreated) {
	t.Helper()
	body, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	msg := &broker.Message{Header: map[string]string{
		"Content-Type": "application/protobuf", "Micro-Topic": pb.TopicUserCreated, jsbroker.HeaderEventID: ev.EventId,
	}, Body: body}
	if err := b.Publish(pb.TopicUserCreated, msg); err != nil {
		t.Fatalf("publish %s: %v", ev.EventId, err)
	}
}

// eventsRun runs the CLI in this process with env as its environment.
type eventsRun struct {
	code           int
	stdout, stderr *logbuf.Buffer
	done           chan struct{}
}

func startEventsCLI(ctx context.Context, env map[string]string, args ...string) *eventsRun {
	r := &eventsRun{stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, done: make(chan struct{})}
	a := &app{stdout: r.stdout, stderr: r.stderr, getenv: func(k string) string { return env[k] },
		connect: func() (pb.UserService, error) { return nil, errors.New("events must not call the user-service") }}
	go func() {
		r.code = a.run(ctx, args)
		close(r.done)
	}()
	return r
}

func runEventsCLI(t *testing.T, env map[string]string, args ...string) *eventsRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startEventsCLI(ctx, env, args...)
	<-r.done
	return r
}

func opsEnv(url string) map[string]string {
	return map[string]string{
		"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": url,
		"NATS_USER": "ops", "NATS_PASSWORD": eventsPasswords["ops"],
	}
}

func waitOutput(t *testing.T, what string, buf *logbuf.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(buf.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q within 15s; got %q", what, want, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEventsTailPrintsEachUserCreated(t *testing.T) {
	t.Parallel()
	ns := startEventsNATS(t)
	users := jsBroker(t, ns.URL(), "user-service")
	// Stored before the tail starts: only --from-start prints it.
	old := &pb.UserCreated{Id: "u-old", Name: "Old User", Email: "old@example.com", EventId: "ev-old", CreatedAtUnixMs: time.Now().UnixMilli()}
	publishUser(t, users, old)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tail := startEventsCLI(ctx, opsEnv(ns.URL()), "--json", "events", "tail")
	// Its own context: it must stop by itself after --count events, not
	// with the Ctrl-C that stops the other tail.
	fromCtx, fromCancel := context.WithCancel(context.Background())
	defer fromCancel()
	fromStart := startEventsCLI(fromCtx, opsEnv(ns.URL()), "events", "tail", "--from-start", "--count", "2")
	waitOutput(t, "events tail", tail.stderr, "waiting for user.created")
	waitOutput(t, "events tail --from-start", fromStart.stderr, "waiting for user.created")

	ada := &pb.UserCreated{Id: "u-ada", Name: "Ada Lovelace", Company: "Analytical Engines", Email: "ada@example.com", EventId: "ev-ada", CreatedAtUnixMs: time.Now().UnixMilli()}
	publishUser(t, users, ada)
	waitOutput(t, "events tail", tail.stdout, "ev-ada")
	cancel() // Ctrl-C
	<-tail.done
	if tail.code != exitOK {
		t.Errorf("events tail stopped by a signal: exit %d (stderr %q); want 0", tail.code, tail.stderr)
	}
	lines := strings.Split(strings.TrimSpace(tail.stdout.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("events tail --json printed %d lines %q; want 1 (the event published after it started)", len(lines), lines)
	}
	var got struct {
		Time string `json:"time"`
		eventJSON
	}
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("events tail --json line %q: %v", lines[0], err)
	}
	want := eventJSON{EventID: "ev-ada", UserID: "u-ada", Name: "Ada Lovelace", Email: "ada@example.com", Company: "Analytical Engines"}
	got.Seq, got.CreatedAt = 0, ""
	if got.eventJSON != want || got.Time == "" {
		t.Errorf("events tail --json printed %+v; want %+v with a time", got, want)
	}
	if strings.Contains(strings.ToLower(lines[0]), "password") {
		t.Errorf("events tail printed a password field: %s", lines[0])
	}

	select {
	case <-fromStart.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("events tail --from-start --count 2 still running 30s after the second event; stdout %q", fromStart.stdout)
	}
	out := fromStart.stdout.String()
	if fromStart.code != exitOK || !strings.Contains(out, "Old User <old@example.com>") || !strings.Contains(out, "Ada Lovelace <ada@example.com> (Analytical Engines)") {
		t.Errorf("events tail --from-start --count 2 = exit %d, %q; want both events", fromStart.code, out)
	}
}

// A dead letter is listed with its reason; --replay publishes its event
// again, with its Event-Id, and removes it: the subscriber gets it once.
func TestEventsDeadLettersListAndReplay(t *testing.T) {
	t.Parallel()
	ns := startEventsNATS(t)
	users := jsBroker(t, ns.URL(), "user-service")
	email := jsBroker(t, ns.URL(), "email-service", jsbroker.UpdateStreams(false))

	var mu sync.Mutex
	refuse := true
	received := map[string]int{}
	_, err := email.Subscribe(pb.TopicUserCreated, func(e broker.Event) error {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			return jsbroker.Permanent(errors.New("550 5.1.1 mailbox unavailable"))
		}
		received[e.Message().Header[jsbroker.HeaderEventID]]++
		return nil
	}, broker.Queue("go.micro.srv.email"))
	if err != nil {
		t.Fatal(err)
	}

	env := opsEnv(ns.URL())
	if r := runEventsCLI(t, env, "events", "dead-letters"); r.code != exitOK || !strings.Contains(r.stdout.String(), "No dead letters.") {
		t.Fatalf("events dead-letters on an empty DLQ = exit %d, %q, %q; want 0 and No dead letters.", r.code, r.stdout, r.stderr)
	}

	publishUser(t, users, &pb.UserCreated{Id: "u-bounce", Name: "Bounce Once", Email: "bounce@example.com", EventId: "ev-bounce"})
	var dls []deadLetterJSON
	deadline := time.Now().Add(15 * time.Second)
	for len(dls) == 0 {
		r := runEventsCLI(t, env, "--json", "events", "dead-letters")
		if r.code != exitOK {
			t.Fatalf("events dead-letters --json = exit %d, stderr %q", r.code, r.stderr)
		}
		if err := json.Unmarshal([]byte(r.stdout.String()), &dls); err != nil {
			t.Fatalf("events dead-letters --json printed %q: %v", r.stdout, err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the refused event was not listed as a dead letter within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := dls[0]
	if len(dls) != 1 || d.Event.EventID != "ev-bounce" || d.Event.Name != "Bounce Once" || d.Event.Email != "bounce@example.com" ||
		!strings.Contains(d.Reason, "550 5.1.1") || d.Deliveries != 1 || d.Topic != pb.TopicUserCreated || d.ID == 0 {
		t.Fatalf("events dead-letters --json = %+v; want one dead letter of ev-bounce, reason 550, 1 delivery", dls)
	}
	r := runEventsCLI(t, env, "events", "dead-letters")
	if !strings.Contains(r.stdout.String(), "Bounce Once") || !strings.Contains(r.stdout.String(), "550 5.1.1") {
		t.Errorf("events dead-letters printed %q; want the dead letter's name and reason", r.stdout)
	}

	mu.Lock()
	refuse = false
	mu.Unlock()
	id := fmt.Sprint(d.ID)
	if r := runEventsCLI(t, env, "events", "dead-letters", "--replay", id); r.code != exitOK || !strings.Contains(r.stdout.String(), "Replayed dead letter "+id) {
		t.Fatalf("events dead-letters --replay %s = exit %d, %q, %q; want 0", id, r.code, r.stdout, r.stderr)
	}
	count := func(id string) int { mu.Lock(); defer mu.Unlock(); return received[id] }
	waitReceived := func(id string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for count(id) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("event %s did not reach the subscriber within 15s", id)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitReceived("ev-bounce")
	// A sentinel published after the replay: once it is in, a second copy
	// of the replayed event would be too.
	publishUser(t, users, &pb.UserCreated{Id: "u-sentinel", Name: "Sentinel", Email: "sentinel@example.com", EventId: "ev-sentinel"})
	waitReceived("ev-sentinel")
	if n := count("ev-bounce"); n != 1 {
		t.Errorf("the replayed event reached the subscriber %d times; want 1", n)
	}
	if r := runEventsCLI(t, env, "events", "dead-letters"); !strings.Contains(r.stdout.String(), "No dead letters.") {
		t.Errorf("after the replay, events dead-letters printed %q; want none left", r.stdout)
	}
	if r := runEventsCLI(t, env, "events", "dead-letters", "--replay", id); r.code != exitRejected || !strings.Contains(r.stderr.String(), "no dead letter "+id) {
		t.Errorf("a second --replay %s = exit %d, %q; want 1, no dead letter", id, r.code, r.stderr)
	}
}

func TestEventsExitCodes(t *testing.T) {
	t.Parallel()
	ns := startEventsNATS(t)
	jsBroker(t, ns.URL(), "user-service")
	asCLI := opsEnv(ns.URL())
	asCLI["NATS_USER"], asCLI["NATS_PASSWORD"] = "cli", eventsPasswords["cli"]
	wrongPassword := opsEnv(ns.URL())
	wrongPassword["NATS_PASSWORD"] = "not-the-password"
	coreNATS := opsEnv(ns.URL())
	coreNATS["MICRO_BROKER"] = "nats"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		says string
	}{
		{"no broker configured", map[string]string{}, []string{"events", "tail"}, exitUsage, "MICRO_BROKER=jetstream"},
		{"no subcommand", opsEnv(ns.URL()), []string{"events"}, exitUsage, "tail or dead-letters"},
		{"unknown subcommand", opsEnv(ns.URL()), []string{"events", "purge"}, exitUsage, "unknown events subcommand"},
		{"replay of no number", opsEnv(ns.URL()), []string{"events", "dead-letters", "--replay", "abc"}, exitUsage, "--replay takes"},
		{"from-start on core NATS", coreNATS, []string{"events", "tail", "--from-start"}, exitUsage, "--from-start needs"},
		{"dead letters on core NATS", coreNATS, []string{"events", "dead-letters"}, exitUsage, "need MICRO_BROKER=jetstream"},
		{"as the cli user", asCLI, []string{"events", "dead-letters"}, exitRejected, "NATS_USER=ops"},
		{"wrong password", wrongPassword, []string{"events", "tail"}, exitRejected, "refused the login"},
		{"unreachable NATS", map[string]string{"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": "nats://127.0.0.1:1"}, []string{"--timeout", "2s", "events", "tail"}, exitUnavailable, "cannot reach NATS"},
		{"replay of a missing dead letter", opsEnv(ns.URL()), []string{"events", "dead-letters", "--replay", "99"}, exitRejected, "no dead letter 99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runEventsCLI(t, tt.env, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr.String(), tt.says) {
				t.Errorf("%q = exit %d, stderr %q; want exit %d saying %q", tt.args, r.code, r.stderr, tt.code, tt.says)
			}
		})
	}
}
