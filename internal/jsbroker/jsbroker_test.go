package jsbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

const waitLimit = 20 * time.Second

// newBroker returns a connected broker with fast retries, disconnected when
// the test ends.
func newBroker(t *testing.T, url string, opts ...broker.Option) *Broker {
	t.Helper()
	base := []broker.Option{
		broker.Addrs(url),
		Backoff(10 * time.Millisecond),
		ReconnectWait(50 * time.Millisecond),
		Logger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	b := New(append(base, opts...)...)
	if err := b.Connect(); err != nil {
		t.Fatalf("Connect() = %v; want nil", err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })
	return b
}

// recorder is a handler that remembers what it was given.
type recorder struct {
	mu     sync.Mutex
	events []broker.Event
	tries  map[string]int // by body
	fail   func(body string, try int) error
}

func (r *recorder) handle(e broker.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tries == nil {
		r.tries = make(map[string]int)
	}
	body := string(e.Message().Body)
	r.tries[body]++
	if r.fail != nil {
		if err := r.fail(body, r.tries[body]); err != nil {
			return err
		}
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) bodies() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.events))
	for _, e := range r.events {
		out = append(out, string(e.Message().Body))
	}
	return out
}

func (r *recorder) triesOf(body string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tries[body]
}

func publish(t *testing.T, b *Broker, topic, body string, header map[string]string) {
	t.Helper()
	if err := b.Publish(topic, &broker.Message{Header: header, Body: []byte(body)}); err != nil {
		t.Fatalf("Publish(%q, %q) = %v; want nil", topic, body, err)
	}
}

func subscribe(t *testing.T, b *Broker, topic string, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscriber {
	t.Helper()
	sub, err := b.Subscribe(topic, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe(%q) = %v; want nil", topic, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}

// watchDeadLetters subscribes nc to b's dead letters of topic, before
// anything is published, so that none is missed.
func watchDeadLetters(t *testing.T, nc *nats.Conn, b *Broker, topic string) *nats.Subscription {
	t.Helper()
	dead, err := nc.SubscribeSync(b.DeadLetterSubject(topic))
	if err != nil {
		t.Fatalf("subscribe to %s: %v", b.DeadLetterSubject(topic), err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return dead
}

// jsClient is a plain JetStream client for looking at the server's state.
func jsClient(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("nats.Connect(%q) = %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New = %v", err)
	}
	return nc, js
}

// settled reports whether consumer has nothing pending or unacked.
func settled(t *testing.T, js jetstream.JetStream, consumer string) bool {
	t.Helper()
	c, err := js.Consumer(context.Background(), DefaultStream, consumer)
	if err != nil {
		t.Fatalf("Consumer(%q) = %v", consumer, err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatalf("Consumer(%q).Info = %v", consumer, err)
	}
	return info.NumPending == 0 && info.NumAckPending == 0
}

func TestRoundTripKeepsBodyAndHeaders(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL())
	for _, queue := range []string{"", "email-service"} {
		t.Run("queue="+queue, func(t *testing.T) {
			topic := "user.created." + fmt.Sprint(len(queue))
			var rec recorder
			var opts []broker.SubscribeOption
			if queue != "" {
				opts = append(opts, broker.Queue(queue))
			}
			subscribe(t, b, topic, rec.handle, opts...)
			header := map[string]string{"Content-Type": "application/protobuf", HeaderEventID: "ev-" + topic, "X-Trace": "a b"}
			publish(t, b, topic, "payload", header)

			poll.Until(t, "the message", waitLimit, func() bool { return len(rec.bodies()) == 1 })
			rec.mu.Lock()
			got := rec.events[0]
			rec.mu.Unlock()
			if got.Topic() != topic {
				t.Errorf("Topic() = %q; want %q", got.Topic(), topic)
			}
			if body := string(got.Message().Body); body != "payload" {
				t.Errorf("Body = %q; want %q", body, "payload")
			}
			for k, v := range header {
				if got.Message().Header[k] != v {
					t.Errorf("Header[%q] = %q; want %q", k, got.Message().Header[k], v)
				}
			}
			poll.Until(t, "the ack", waitLimit, func() bool { return b.Stats().Acked >= 1 })
		})
	}
}

func TestQueueGroupSharesMessagesWithoutDuplicates(t *testing.T) {
	srv := natstest.Start(t)
	// Two brokers are two replicas: separate connections, one queue group.
	replicas := []*Broker{newBroker(t, srv.URL(), PullBatch(2)), newBroker(t, srv.URL(), PullBatch(2))}
	recs := make([]*recorder, len(replicas))
	for i, b := range replicas {
		recs[i] = &recorder{fail: func(string, int) error {
			time.Sleep(2 * time.Millisecond) // simulated work, so both replicas get a share
			return nil
		}}
		subscribe(t, b, "user.created", recs[i].handle, broker.Queue("email-service"))
	}
	const n = 100
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("m%03d", i)
		publish(t, replicas[0], "user.created", want[i], nil)
	}

	_, js := jsClient(t, srv.URL())
	total := func() int { return len(recs[0].bodies()) + len(recs[1].bodies()) }
	poll.Until(t, "all messages handled and acked", waitLimit, func() bool {
		return total() >= n && settled(t, js, ConsumerName("email-service", "user.created"))
	})
	got := append(recs[0].bodies(), recs[1].bodies()...)
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handled %d messages %v; want each of %d exactly once", len(got), got, n)
	}
	for i, r := range recs {
		if len(r.bodies()) == 0 {
			t.Errorf("replica %d handled no message; want a share", i)
		}
	}
}

func TestSameEventIDIsStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL())
	_, js := jsClient(t, srv.URL())
	tests := []struct {
		name   string
		header string
	}{
		{"Event-Id", HeaderEventID},
		{"Nats-Msg-Id", jetstream.MsgIDHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := "dedupe." + sanitize(tt.name)
			for i := 0; i < 3; i++ {
				publish(t, b, topic, "once", map[string]string{tt.header: "id-" + tt.name})
			}
			publish(t, b, topic, "other", map[string]string{tt.header: "id2-" + tt.name})
			s, err := js.Stream(context.Background(), DefaultStream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(b.Subject(topic)))
			if err != nil {
				t.Fatal(err)
			}
			if got := info.State.Subjects[b.Subject(topic)]; got != 2 {
				t.Errorf("stored %d messages on %s; want 2 (3 publishes of one id, 1 of another)", got, b.Subject(topic))
			}
		})
	}
	if got := b.Stats().Duplicates; got != 4 {
		t.Errorf("Stats().Duplicates = %d; want 4", got)
	}
}

func TestFailingHandlerGetsMessageAgain(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), MaxDeliver(5))
	rec := &recorder{fail: func(body string, try int) error {
		if try <= 3 {
			return fmt.Errorf("mailer down (try %d)", try)
		}
		return nil
	}}
	subscribe(t, b, "user.created", rec.handle, broker.Queue("email-service"))
	publish(t, b, "user.created", "flaky", nil)

	poll.Until(t, "the 4th delivery to succeed", waitLimit, func() bool { return len(rec.bodies()) == 1 })
	if got := rec.triesOf("flaky"); got != 4 {
		t.Errorf("handler called %d times; want 4", got)
	}
	_, js := jsClient(t, srv.URL())
	poll.Until(t, "the ack", waitLimit, func() bool { return settled(t, js, ConsumerName("email-service", "user.created")) })
	if st := b.Stats(); st.Retried != 3 || st.Acked != 1 || st.DeadLettered != 0 {
		t.Errorf("Stats() = %+v; want Retried 3, Acked 1, DeadLettered 0", st)
	}
}

func TestAlwaysFailingMessageIsDeadLettered(t *testing.T) {
	srv := natstest.Start(t)
	const maxDeliver = 3
	b := newBroker(t, srv.URL(), MaxDeliver(maxDeliver))
	nc, js := jsClient(t, srv.URL())
	dead := watchDeadLetters(t, nc, b, "user.created")

	rec := &recorder{fail: func(body string, _ int) error {
		if body == "poison" {
			return errors.New("smtp: 550 mailbox unavailable")
		}
		return nil
	}}
	subscribe(t, b, "user.created", rec.handle, broker.Queue("email-service"))
	publish(t, b, "user.created", "poison", map[string]string{HeaderEventID: "ev-poison"})
	publish(t, b, "user.created", "fine", nil)

	msg, err := dead.NextMsg(waitLimit)
	if err != nil {
		t.Fatalf("no dead letter on %s: %v", b.DeadLetterSubject("user.created"), err)
	}
	checks := map[string]string{
		HeaderDeadLetterReason:     "smtp: 550 mailbox unavailable",
		HeaderDeadLetterTopic:      "user.created",
		HeaderDeadLetterDeliveries: fmt.Sprint(maxDeliver),
		HeaderEventID:              "ev-poison",
	}
	for k, want := range checks {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q; want %q", k, got, want)
		}
	}
	if string(msg.Data) != "poison" {
		t.Errorf("dead letter body = %q; want %q", msg.Data, "poison")
	}

	// Terminated, so the consumer settles with no redelivery pending.
	poll.Until(t, "the consumer to settle", waitLimit, func() bool {
		return settled(t, js, ConsumerName("email-service", "user.created")) && len(rec.bodies()) == 1
	})
	if got := rec.triesOf("poison"); got != maxDeliver {
		t.Errorf("handler called %d times for the poison message; want %d", got, maxDeliver)
	}
	if st := b.Stats(); st.DeadLettered != 1 {
		t.Errorf("Stats().DeadLettered = %d; want 1", st.DeadLettered)
	}
	// The dead letter is kept in its own stream for an operator.
	s, err := js.Stream(context.Background(), DefaultStream+"_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("dead-letter stream holds %d messages; want 1", info.State.Msgs)
	}
}

func TestMessagesPublishedWithoutSubscriberAreDelivered(t *testing.T) {
	srv := natstest.Start(t)
	pub := newBroker(t, srv.URL())

	// Before the queue's consumer ever existed.
	publish(t, pub, "user.created", "early", nil)

	sb := newBroker(t, srv.URL())
	rec := &recorder{}
	sub := subscribe(t, sb, "user.created", rec.handle, broker.Queue("email-service"))
	poll.Until(t, "the early message", waitLimit, func() bool { return len(rec.bodies()) == 1 })
	_, js := jsClient(t, srv.URL())
	poll.Until(t, "the ack", waitLimit, func() bool { return settled(t, js, ConsumerName("email-service", "user.created")) })
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}

	// While the subscriber is away (the email-service is down).
	publish(t, pub, "user.created", "while-down-1", nil)
	publish(t, pub, "user.created", "while-down-2", nil)

	rec2 := &recorder{}
	subscribe(t, sb, "user.created", rec2.handle, broker.Queue("email-service"))
	poll.Until(t, "the messages published while down", waitLimit, func() bool { return len(rec2.bodies()) == 2 })
	if got := fmt.Sprint(rec2.bodies()); got != "[while-down-1 while-down-2]" {
		t.Errorf("after resubscribing got %s; want [while-down-1 while-down-2] (no replay of acked ones)", got)
	}
}

func TestServerRestart(t *testing.T) {
	for _, queue := range []string{"email-service", ""} {
		t.Run("queue="+queue, func(t *testing.T) { testServerRestart(t, queue) })
	}
}

func testServerRestart(t *testing.T, queue string) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), PublishTimeout(500*time.Millisecond))
	rec := &recorder{}
	var opts []broker.SubscribeOption
	if queue != "" {
		opts = append(opts, broker.Queue(queue))
	}
	subscribe(t, b, "user.created", rec.handle, opts...)
	publish(t, b, "user.created", "before", nil)
	poll.Until(t, "the message before the outage", waitLimit, func() bool { return len(rec.bodies()) == 1 })

	srv.Stop()
	if err := b.Publish("user.created", &broker.Message{Body: []byte("down")}); err == nil {
		t.Fatalf("Publish while the server is down = nil; want an error")
	}

	srv.Restart()
	after := &broker.Message{Header: map[string]string{HeaderEventID: "ev-after"}, Body: []byte("after")}
	poll.Until(t, "a publish to succeed after the restart", waitLimit, func() bool {
		return b.Publish("user.created", after) == nil
	})
	poll.Until(t, "the consumer to resume", waitLimit, func() bool {
		for _, body := range rec.bodies() {
			if body == "after" {
				return true
			}
		}
		return false
	})
	if st := b.Stats(); st.PublishErrors == 0 {
		t.Errorf("Stats().PublishErrors = 0; want the failed publishes counted")
	}
}

func TestConsumerName(t *testing.T) {
	tests := []struct{ queue, topic, want string }{
		{"email-service", "user_created", "email-service_user_created"},
		{"email-service", "user.created", "email-service_user_created_"},
		{"go.micro.srv.email", "user.*", "go_micro_srv_email_user__"},
	}
	for _, tt := range tests {
		got := ConsumerName(tt.queue, tt.topic)
		if len(got) < len(tt.want) || got[:len(tt.want)] != tt.want {
			t.Errorf("ConsumerName(%q, %q) = %q; want prefix %q", tt.queue, tt.topic, got, tt.want)
		}
	}
	if a, b := ConsumerName("q", "a.b"), ConsumerName("q", "a_b"); a == b {
		t.Errorf("ConsumerName(q, a.b) = ConsumerName(q, a_b) = %q; want distinct", a)
	}
}

func TestDeletedConsumerIsRecreated(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL())
	rec := &recorder{}
	subscribe(t, b, "user.created", rec.handle, broker.Queue("email-service"))
	publish(t, b, "user.created", "first", nil)
	poll.Until(t, "the first message", waitLimit, func() bool { return len(rec.bodies()) == 1 })

	_, js := jsClient(t, srv.URL())
	name := ConsumerName("email-service", "user.created")
	// The server sometimes fails a delete while the consumer writes its
	// state ("directory not empty"); an operator would retry too.
	poll.Until(t, "the consumer to be deleted", waitLimit, func() bool {
		err := js.DeleteConsumer(context.Background(), DefaultStream, name)
		return err == nil || errors.Is(err, jetstream.ErrConsumerNotFound)
	})
	publish(t, b, "user.created", "second", nil)
	// The recreated durable starts from the first stored message again: at
	// least once, so "first" may come twice; "second" must come.
	poll.Until(t, "the message published after the consumer was deleted", waitLimit, func() bool {
		for _, body := range rec.bodies() {
			if body == "second" {
				return true
			}
		}
		return false
	})
}

// A stopping subscriber hands the messages it pulled but has not handled
// back at once: the handler running finishes, the others go to another
// subscriber of the queue group, each exactly once.
func TestUnsubscribeHandsBufferedMessagesBack(t *testing.T) {
	srv := natstest.Start(t)
	// An ack wait past waitLimit: a message that comes again within the
	// test was handed back, not timed out.
	stopping := newBroker(t, srv.URL(), AckWait(time.Minute))
	const n = 10
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("m%02d", i))
		publish(t, stopping, "user.created", want[i], nil)
	}

	var mu sync.Mutex
	var handled []string
	entered := make(chan struct{})
	release := make(chan struct{})
	sub := subscribe(t, stopping, "user.created", func(e broker.Event) error {
		mu.Lock()
		handled = append(handled, string(e.Message().Body))
		if len(handled) == 1 {
			close(entered)
		}
		mu.Unlock()
		<-release
		return nil
	}, broker.Queue("email-service"))

	_, js := jsClient(t, srv.URL())
	name := ConsumerName("email-service", "user.created")
	<-entered
	poll.Until(t, "every message pulled by the first subscriber", waitLimit, func() bool {
		c, err := js.Consumer(context.Background(), DefaultStream, name)
		if err != nil {
			t.Fatalf("Consumer(%q) = %v", name, err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatalf("Consumer(%q).Info = %v", name, err)
		}
		return info.NumAckPending == n
	})

	unsubscribed := make(chan struct{})
	go func() {
		_ = sub.Unsubscribe()
		close(unsubscribed)
	}()
	<-sub.(*subscriber).done // stopping, with its handler still running
	close(release)
	poll.Until(t, "Unsubscribe to return", waitLimit, func() bool {
		select {
		case <-unsubscribed:
			return true
		default:
			return false
		}
	})

	other := newBroker(t, srv.URL(), AckWait(time.Minute))
	rec := &recorder{}
	subscribe(t, other, "user.created", rec.handle, broker.Queue("email-service"))
	poll.Until(t, "the handed-back messages handled and acked", waitLimit, func() bool {
		return len(rec.bodies()) >= n-1 && settled(t, js, name)
	})

	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 {
		t.Fatalf("stopping subscriber handled %v; want only the message it was handling", handled)
	}
	got := append(rec.bodies(), handled[0])
	sort.Strings(got)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("handled %v (first subscriber %q, then the other); want each of %d exactly once", got, handled[0], n)
	}
}
