package main

// Fault test 4 of issue 4, the failing mailer. It runs here rather than in
// e2e because it needs a mailer that fails, which the binary does not have:
// the email-service is assembled as main assembles it (handler, dedupMailer
// over the JetStream key-value sent log, go-micro subscriber in the queue
// group) on the JetStream broker with its default retry settings, with a
// fake mailer in place of the logging one.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

var errMailerDown = errors.New("smtp: 451 try again later")

// flakyMailer fails the first failFirst attempts for events in flaky and
// every attempt for events in poison; it records each attempt and each
// successful send by event id.
type flakyMailer struct {
	failFirst int
	flaky     map[string]bool
	poison    map[string]bool

	mu       sync.Mutex
	attempts map[string]int
	sent     map[string]int
}

func (m *flakyMailer) Send(_ context.Context, e WelcomeEmail) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts[e.EventID]++
	if m.poison[e.EventID] || (m.flaky[e.EventID] && m.attempts[e.EventID] <= m.failFirst) {
		return errMailerDown
	}
	m.sent[e.EventID]++
	return nil
}

func (m *flakyMailer) counts(id string) (attempts, sent int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.attempts[id], m.sent[id]
}

func TestFaultFailingMailer(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ns := natstest.Start(t)
	ctx := context.Background()

	var ids, flaky, poison []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("ok-%02d", i))
	}
	for i := range 3 {
		flaky = append(flaky, fmt.Sprintf("flaky-%d", i))
	}
	poison = []string{"poison-0"}
	m := &flakyMailer{failFirst: 3, flaky: set(flaky), poison: set(poison), attempts: map[string]int{}, sent: map[string]int{}}

	// The dead-letter subject is watched before anything is published.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	dead := make(chan *nats.Msg, 16)
	deadSubject := jsbroker.DefaultDeadLetterPrefix + "." + pb.TopicUserCreated
	if _, err := nc.ChanSubscribe(deadSubject, dead); err != nil {
		t.Fatalf("subscribe to %s: %v", deadSubject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The email-service as main builds it, with the fake mailer.
	sentLog, closeLog, err := dialKVSentLog(ctx, ns.URL(), defaultSentBucket, defaultSendLease)
	if err != nil {
		t.Fatalf("sent log: %v", err)
	}
	t.Cleanup(closeLog)
	srv := micro.NewService(serviceName,
		micro.Broker(jsbroker.NewBroker(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))),
		micro.Registry(registry.NewMemoryRegistry()),
		micro.Address("127.0.0.1:0"),
		micro.HandleSignal(false),
	)
	h := NewHandler(newDedupMailer(m, sentLog, defaultSendLease, discardLog), discardLog)
	if err := Subscribe(srv.Server(), h, defaultQueue); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start email-service: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })

	// Events published as the user-service's outbox relay does: protobuf,
	// with the event id as a header.
	pubBroker := jsbroker.NewBroker(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))
	if err := pubBroker.Connect(); err != nil {
		t.Fatalf("connect publisher: %v", err)
	}
	t.Cleanup(func() { _ = pubBroker.Disconnect() })
	pub := client.NewClient(client.Broker(pubBroker), client.Registry(registry.NewMemoryRegistry()))
	all := append(append(append([]string(nil), ids...), flaky...), poison...)
	for _, id := range all {
		msg := pub.NewMessage(pb.TopicUserCreated, event(id), client.WithMessageContentType("application/protobuf"))
		if err := pub.Publish(jsbroker.WithEventID(ctx, id), msg); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}

	// The poison event is dead-lettered after the default MaxDeliver attempts.
	var dl *nats.Msg
	select {
	case dl = <-dead:
	case <-time.After(60 * time.Second):
		a, _ := m.counts(poison[0])
		t.Fatalf("no dead letter on %s within 60s (%d attempts of %s)", deadSubject, a, poison[0])
	}
	if got := dl.Header.Get(jsbroker.HeaderEventID); got != poison[0] {
		t.Errorf("dead letter's %s = %q; want %q", jsbroker.HeaderEventID, got, poison[0])
	}
	if got := dl.Header.Get(jsbroker.HeaderDeadLetterReason); !strings.Contains(got, errMailerDown.Error()) {
		t.Errorf("dead letter's %s = %q; want the mailer's error %q", jsbroker.HeaderDeadLetterReason, got, errMailerDown)
	}
	if got := dl.Header.Get(jsbroker.HeaderDeadLetterDeliveries); got != strconv.Itoa(jsbroker.DefaultMaxDeliver) {
		t.Errorf("dead letter's %s = %q; want %d", jsbroker.HeaderDeadLetterDeliveries, got, jsbroker.DefaultMaxDeliver)
	}

	// At rest: the consumer has nothing pending or unacked, so nothing can
	// be delivered again, the poison event included.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, jsbroker.DefaultStream, jsbroker.ConsumerName(defaultQueue, pb.TopicUserCreated))
	if err != nil {
		t.Fatalf("email consumer: %v", err)
	}
	var state string
	if !poll(60*time.Second, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			state = err.Error()
			return false
		}
		state = fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		return info.NumPending == 0 && info.NumAckPending == 0
	}) {
		t.Fatalf("email consumer not at rest within 60s: %s", state)
	}

	lost, duplicated := 0, 0
	for _, id := range append(append([]string(nil), ids...), flaky...) {
		attempts, sent := m.counts(id)
		switch {
		case sent == 0:
			lost++
			t.Errorf("event %s: no email after %d attempts; want 1", id, attempts)
		case sent > 1:
			duplicated += sent - 1
			t.Errorf("event %s: %d emails; want 1", id, sent)
		}
		if want := 1 + m.failFirst*btoi(m.flaky[id]); attempts != want {
			t.Errorf("event %s: %d mailer attempts; want %d", id, attempts, want)
		}
	}
	attempts, sent := m.counts(poison[0])
	if sent != 0 || attempts != jsbroker.DefaultMaxDeliver {
		t.Errorf("poison event: %d attempts, %d emails; want %d attempts and no email", attempts, sent, jsbroker.DefaultMaxDeliver)
	}
	select {
	case extra := <-dead:
		t.Errorf("second dead letter %v; want one", extra.Header)
	default:
	}
	t.Logf("%d events (%d failing the first %d attempts) sent once each, poison event dead-lettered after %d attempts (reason %q): lost=%d duplicated=%d; runtime %s",
		len(ids)+len(flaky), len(flaky), m.failFirst, attempts, dl.Header.Get(jsbroker.HeaderDeadLetterReason), lost, duplicated, time.Since(start).Round(time.Millisecond))
}

func set(ids []string) map[string]bool {
	s := map[string]bool{}
	for _, id := range ids {
		s[id] = true
	}
	return s
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
