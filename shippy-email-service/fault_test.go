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
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
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

// faultEnv is the email-service as main builds it on the JetStream broker,
// with a fake mailer, plus what a test needs to watch it: the dead-letter
// subject and the email consumer.
type faultEnv struct {
	url     string
	sentLog *kvSentLog
	dead    chan *nats.Msg
	js      jetstream.JetStream
	pub     client.Client
	// log is what startService's handler, sent log and broker log to
	// (discarded unless a test sets it).
	log *slog.Logger
	// retry is startService's EMAIL_RETRY_BACKOFF; nil is the broker's
	// default schedule, which is quicker to dead-letter.
	retry []time.Duration
}

// startFaultEnv starts an in-process NATS server, watches the dead-letter
// subject, and runs the email-service (handler, dedupMailer over the
// JetStream key-value sent log with the default lease, go-micro subscriber
// in the default queue group, jsbroker with its default retry settings)
// with mailer m; with a nil m, the test starts it (startService).
func startFaultEnv(t *testing.T, m Mailer) *faultEnv {
	t.Helper()
	ns := natstest.Start(t)
	ctx := context.Background()
	env := &faultEnv{url: ns.URL(), dead: make(chan *nats.Msg, 16), log: discardLog}

	// The dead-letter subject is watched before anything is published.
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	deadSubject := jsbroker.DefaultDeadLetterPrefix + "." + pb.TopicUserCreated
	if _, err := nc.ChanSubscribe(deadSubject, env.dead); err != nil {
		t.Fatalf("subscribe to %s: %v", deadSubject, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if env.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}

	sentLog, closeLog, err := dialKVSentLog(ctx, discardLog, ns.URL(), kvBucket{Name: defaultSentBucket}, defaultSendLease)
	if err != nil {
		t.Fatalf("sent log: %v", err)
	}
	t.Cleanup(closeLog)
	env.sentLog = sentLog

	// Events are published as the user-service's outbox relay does:
	// protobuf, with the event id as a header.
	pubBroker := jsbroker.NewBroker(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))
	if err := pubBroker.Connect(); err != nil {
		t.Fatalf("connect publisher: %v", err)
	}
	t.Cleanup(func() { _ = pubBroker.Disconnect() })
	env.pub = client.NewClient(client.Broker(pubBroker), client.Registry(registry.NewMemoryRegistry()))
	if m != nil {
		env.startService(t, m)
	}
	return env
}

// startService starts the email-service (as main builds it) with mailer m;
// wrap, if given, wraps its broker.
func (env *faultEnv) startService(t *testing.T, m Mailer, wrap ...func(broker.Broker) broker.Broker) {
	t.Helper()
	h := NewHandler(newDedupMailer(m, env.sentLog, defaultSendLease, env.log), env.log).WithRetry(env.retry)
	var b broker.Broker = jsbroker.NewBroker(broker.Addrs(env.url), jsbroker.Logger(env.log))
	for _, w := range wrap {
		b = w(b)
	}
	srv, err := newEmailService(testEnv, testPlugins(b), h, defaultQueue)
	if err != nil {
		t.Fatalf("newEmailService: %v", err)
	}
	if err := srv.start(); err != nil {
		t.Fatalf("start email-service: %v", err)
	}
	t.Cleanup(func() { _ = srv.stop() })
}

func (env *faultEnv) publish(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		msg := env.pub.NewMessage(pb.TopicUserCreated, event(id), client.WithMessageContentType("application/protobuf"))
		if err := env.pub.Publish(jsbroker.WithEventID(context.Background(), id), msg); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
}

// waitAtRest waits until the email consumer has nothing pending or unacked,
// so that nothing can be delivered again.
func (env *faultEnv) waitAtRest(t *testing.T, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	cons, err := env.js.Consumer(ctx, jsbroker.DefaultStream, jsbroker.ConsumerName(defaultQueue, pb.TopicUserCreated))
	if err != nil {
		t.Fatalf("email consumer: %v", err)
	}
	var state string
	if !poll.For(within, func() bool {
		info, err := cons.Info(ctx)
		if err != nil {
			state = err.Error()
			return false
		}
		state = fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
		return info.NumPending == 0 && info.NumAckPending == 0
	}) {
		t.Fatalf("email consumer not at rest within %s: %s", within, state)
	}
}

func TestFaultFailingMailer(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var ids, flaky, poison []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("ok-%02d", i))
	}
	for i := range 3 {
		flaky = append(flaky, fmt.Sprintf("flaky-%d", i))
	}
	poison = []string{"poison-0"}
	m := &flakyMailer{failFirst: 3, flaky: set(flaky), poison: set(poison), attempts: map[string]int{}, sent: map[string]int{}}
	env := startFaultEnv(t, m)
	env.publish(t, append(append(append([]string(nil), ids...), flaky...), poison...)...)

	// The poison event is dead-lettered after the default MaxDeliver attempts.
	var dl *nats.Msg
	select {
	case dl = <-env.dead:
	case <-time.After(60 * time.Second):
		a, _ := m.counts(poison[0])
		t.Fatalf("no dead letter within 60s (%d attempts of %s)", a, poison[0])
	}
	if got := dl.Header.Get(jsbroker.HeaderEventID); got != poison[0] {
		t.Errorf("dead letter's %s = %q; want %q", jsbroker.HeaderEventID, got, poison[0])
	}
	// The handler's error as go-micro reported it, without its JSON wrapper.
	wantReason := fmt.Sprintf("subscriber error: send welcome email for event %s: %v", poison[0], errMailerDown)
	if got := dl.Header.Get(jsbroker.HeaderDeadLetterReason); got != wantReason {
		t.Errorf("dead letter's %s = %q; want %q", jsbroker.HeaderDeadLetterReason, got, wantReason)
	}
	if got := dl.Header.Get(jsbroker.HeaderDeadLetterDeliveries); got != strconv.Itoa(jsbroker.DefaultMaxDeliver) {
		t.Errorf("dead letter's %s = %q; want %d", jsbroker.HeaderDeadLetterDeliveries, got, jsbroker.DefaultMaxDeliver)
	}

	// At rest, the poison event included: nothing is delivered again.
	env.waitAtRest(t, 60*time.Second)

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
	case extra := <-env.dead:
		t.Errorf("second dead letter %v; want one", extra.Header)
	default:
	}
	t.Logf("%d events (%d failing the first %d attempts) sent once each, poison event dead-lettered after %d attempts (reason %q): lost=%d duplicated=%d; runtime %s",
		len(ids)+len(flaky), len(flaky), m.failFirst, attempts, dl.Header.Get(jsbroker.HeaderDeadLetterReason), lost, duplicated, time.Since(start).Round(time.Millisecond))
}

// A mail server down for longer than the broker's default schedule allows:
// EMAIL_RETRY_BACKOFF's schedule keeps the event until the server is back,
// and the email goes out once, with no dead letter.
func TestFaultRetryScheduleOutlastsAnOutage(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	m := &flakyMailer{failFirst: jsbroker.DefaultMaxDeliver + 1, flaky: set([]string{"slow-server"}), attempts: map[string]int{}, sent: map[string]int{}}
	env := startFaultEnv(t, nil)
	env.retry = []time.Duration{10 * ms, 10 * ms, 10 * ms, 10 * ms, 10 * ms, 10 * ms, 10 * ms}
	env.startService(t, m)
	env.publish(t, "slow-server")

	if !poll.For(60*time.Second, func() bool { _, sent := m.counts("slow-server"); return sent == 1 }) {
		attempts, _ := m.counts("slow-server")
		t.Fatalf("no email after %d attempts; want one on attempt %d", attempts, m.failFirst+1)
	}
	env.waitAtRest(t, 60*time.Second)
	if attempts, sent := m.counts("slow-server"); attempts != m.failFirst+1 || sent != 1 {
		t.Errorf("%d attempts, %d emails; want %d attempts and 1 email", attempts, sent, m.failFirst+1)
	}
	select {
	case dl := <-env.dead:
		t.Errorf("dead letter %v; want none", dl.Header)
	default:
	}
}

// A replica claimed an event in the shared sent log and died before
// sending: the claim stays for the lease, and every delivery meanwhile finds
// it held (errSendInProgress) and is redelivered. The broker must not run
// out of deliveries before the lease ends: the event is sent once, after
// the lease, and not dead-lettered.
func TestFaultClaimAbandonedByDeadReplica(t *testing.T) {
	t.Parallel()
	start := time.Now()
	tl := newTally()
	env := startFaultEnv(t, tl.mailer("survivor"))

	const id = "claimed-by-dead-replica"
	// The dead replica's claim, as its dedupMailer took it before its send.
	if _, ok, err := env.sentLog.Claim(context.Background(), id); err != nil || !ok {
		t.Fatalf("Claim(%q) = %v, %v; want true, nil", id, ok, err)
	}
	env.publish(t, id)

	// Bounded by the lease plus the whole retry schedule, with room.
	within := defaultSendLease + 60*time.Second
	if !poll.For(within, func() bool { return len(tl.sends(id)) > 0 || len(env.dead) > 0 }) {
		t.Fatalf("event %s neither sent nor dead-lettered within %s", id, within)
	}
	select {
	case dl := <-env.dead:
		t.Fatalf("event %s dead-lettered after %s deliveries (reason %q); want it sent once the dead replica's lease ended",
			id, dl.Header.Get(jsbroker.HeaderDeadLetterDeliveries), dl.Header.Get(jsbroker.HeaderDeadLetterReason))
	default:
	}
	env.waitAtRest(t, 60*time.Second)
	if n := len(tl.sends(id)); n != 1 {
		t.Errorf("event %s: %d emails; want 1", id, n)
	}
	select {
	case dl := <-env.dead:
		t.Errorf("dead letter %v; want none", dl.Header)
	default:
	}
	t.Logf("event claimed by a dead replica sent once after its %s lease; runtime %s", defaultSendLease, time.Since(start).Round(time.Millisecond))
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

// A replica starts with a backlog of events: every one is sent once.
// go-micro subscribes on the broker before its router knows the subscriber,
// and a durable broker delivers a backlog at once: an event delivered in
// that gap was acked unsent (see readyBroker). The gap is widened here, so
// that the first delivery surely falls into it.
func TestFaultBacklogAtStart(t *testing.T) {
	t.Parallel()
	tl := newTally()
	env := startFaultEnv(t, nil)
	var ids []string
	for i := range 50 {
		ids = append(ids, fmt.Sprintf("backlog-%03d", i))
	}
	env.publish(t, ids...)
	var slow *slowSubscribeBroker
	env.startService(t, tl.mailer("late"), func(b broker.Broker) broker.Broker {
		slow = &slowSubscribeBroker{Broker: b}
		return slow
	})
	if slow == nil || !slow.widened.Load() {
		t.Fatalf("no user.created subscription got a delivery within %s of subscribing: the gap at start was not widened", slowSubscribeGuard)
	}
	env.waitAtRest(t, 60*time.Second)
	lost, duplicated := 0, 0
	for _, id := range ids {
		switch n := len(tl.sends(id)); {
		case n == 0:
			lost++
		case n > 1:
			duplicated += n - 1
		}
	}
	if lost != 0 || duplicated != 0 {
		t.Errorf("%d events waiting at start: lost=%d duplicated=%d; want 0 each", len(ids), lost, duplicated)
	}
}

// slowSubscribeGuard bounds slowSubscribeBroker's wait for a first delivery
// (a hang guard: the backlog is there, so it should never run out).
const slowSubscribeGuard = 10 * time.Second

// slowSubscribeBroker returns from Subscribe only once the subscription has
// delivered its first message, as a loaded host may schedule it; widened
// records that a first message came (rather than slowSubscribeGuard ran out).
type slowSubscribeBroker struct {
	broker.Broker
	widened atomic.Bool
}

func (b *slowSubscribeBroker) Subscribe(topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscriber, error) {
	first := make(chan struct{})
	var once sync.Once
	sub, err := b.Broker.Subscribe(topic, func(e broker.Event) error {
		once.Do(func() { close(first) })
		return h(e)
	}, opts...)
	if err != nil {
		return nil, err
	}
	select {
	case <-first:
		b.widened.Store(true)
	case <-time.After(slowSubscribeGuard):
	}
	return sub, nil
}
