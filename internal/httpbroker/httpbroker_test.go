package httpbroker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport/headers"

	"github.com/shippy/shippy/internal/poll"
)

const topic = "user.created"

// connect returns a connected broker on reg, disconnected at cleanup.
func connect(t *testing.T, reg registry.Registry) *Broker {
	t.Helper()
	b := NewBroker(broker.Registry(reg))
	if err := b.Connect(); err != nil {
		t.Fatalf("Connect() = %v; want nil", err)
	}
	t.Cleanup(func() { b.Disconnect() })
	return b
}

// recorder is a handler that records the events it got, by their
// Event-Id header, and fails with fail if set.
type recorder struct {
	mu   sync.Mutex
	got  []*broker.Message
	fail error
}

func (r *recorder) handle(e broker.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, e.Message())
	return nil
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.got))
	for i, m := range r.got {
		out[i] = m.Header["Event-Id"]
	}
	return out
}

func subscribe(t *testing.T, b broker.Broker, h broker.Handler, opts ...broker.SubscribeOption) broker.Subscriber {
	t.Helper()
	s, err := b.Subscribe(topic, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe(%q) = %v; want nil", topic, err)
	}
	return s
}

func message(id string) *broker.Message {
	return &broker.Message{Header: map[string]string{"Event-Id": id, "Content-Type": "application/json"}, Body: []byte(`{"event_id":"` + id + `"}`)}
}

func publish(t *testing.T, b broker.Broker, id string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return b.Publish(topic, message(id), broker.PublishContext(ctx))
}

// Publish returns only once the handler has run, with the message as sent.
func TestPublishDeliversBeforeReturning(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	var rec recorder
	subscribe(t, connect(t, reg), rec.handle, broker.Queue("email"))
	pub := connect(t, reg)

	for i := range 5 {
		id := fmt.Sprintf("ev-%d", i)
		if err := publish(t, pub, id); err != nil {
			t.Fatalf("Publish(%s) = %v; want nil", id, err)
		}
		got := rec.ids()
		if len(got) != i+1 || got[i] != id {
			t.Fatalf("after Publish(%s) returned, the handler had seen %v; want it to end with %s", id, got, id)
		}
	}
	m := rec.got[0]
	if m.Header[headers.Message] != topic || m.Header["Content-Type"] != "application/json" || string(m.Body) != `{"event_id":"ev-0"}` {
		t.Errorf("handler got header %v, body %q; want the message as published, with %s=%s", m.Header, m.Body, headers.Message, topic)
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	t.Run("handler error reaches the publisher", func(t *testing.T) {
		t.Parallel()
		reg := registry.NewMemoryRegistry()
		rec := &recorder{fail: errors.New("mailer down")}
		subscribe(t, connect(t, reg), rec.handle, broker.Queue("email"))
		err := publish(t, connect(t, reg), "ev-1")
		if err == nil || !strings.Contains(err.Error(), "mailer down") || !strings.Contains(err.Error(), "500") {
			t.Errorf("Publish with a failing handler = %v; want an error with the handler's text and status 500", err)
		}
	})
	t.Run("no subscriber", func(t *testing.T) {
		t.Parallel()
		if err := publish(t, connect(t, registry.NewMemoryRegistry()), "ev-1"); !errors.Is(err, ErrNoSubscriber) {
			t.Errorf("Publish with nobody subscribed = %v; want ErrNoSubscriber", err)
		}
	})
	t.Run("subscriber to another topic only", func(t *testing.T) {
		t.Parallel()
		reg := registry.NewMemoryRegistry()
		var rec recorder
		if _, err := connect(t, reg).Subscribe("user.deleted", rec.handle); err != nil {
			t.Fatal(err)
		}
		if err := publish(t, connect(t, reg), "ev-1"); !errors.Is(err, ErrNoSubscriber) {
			t.Errorf("Publish(%s) with a subscriber to user.deleted only = %v; want ErrNoSubscriber", topic, err)
		}
	})
	t.Run("after unsubscribe", func(t *testing.T) {
		t.Parallel()
		reg := registry.NewMemoryRegistry()
		var rec recorder
		sub := subscribe(t, connect(t, reg), rec.handle, broker.Queue("email"))
		pub := connect(t, reg)
		if err := publish(t, pub, "ev-1"); err != nil {
			t.Fatalf("Publish = %v; want nil", err)
		}
		if err := sub.Unsubscribe(); err != nil {
			t.Fatalf("Unsubscribe() = %v", err)
		}
		// The publisher's registry cache may still hold the node: it must
		// then answer 404, not swallow the event.
		if err := publish(t, pub, "ev-2"); err == nil {
			t.Errorf("Publish after the only subscriber unsubscribed = nil; want an error")
		}
		if got := rec.ids(); len(got) != 1 {
			t.Errorf("handler saw %v; want ev-1 only", got)
		}
	})
	t.Run("not connected", func(t *testing.T) {
		t.Parallel()
		b := NewBroker(broker.Registry(registry.NewMemoryRegistry()))
		if err := publish(t, b, "ev-1"); !errors.Is(err, ErrNotConnected) {
			t.Errorf("Publish before Connect = %v; want ErrNotConnected", err)
		}
		var rec recorder
		if _, err := b.Subscribe(topic, rec.handle); !errors.Is(err, ErrNotConnected) {
			t.Errorf("Subscribe before Connect = %v; want ErrNotConnected", err)
		}
	})
}

// Nodes sharing a queue get each event once between them, all of them some.
func TestQueueGroupGetsOneDelivery(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	recs := make([]*recorder, 3)
	for i := range recs {
		recs[i] = &recorder{}
		subscribe(t, connect(t, reg), recs[i].handle, broker.Queue("email"))
	}
	pub := connect(t, reg)
	const n = 60
	for i := range n {
		if err := publish(t, pub, fmt.Sprintf("ev-%d", i)); err != nil {
			t.Fatalf("Publish = %v; want nil", err)
		}
	}
	seen := map[string]int{}
	for i, r := range recs {
		ids := r.ids()
		if len(ids) == 0 {
			t.Errorf("node %d got none of %d events; want them spread over the group", i, n)
		}
		for _, id := range ids {
			seen[id]++
		}
	}
	for i := range n {
		if id := fmt.Sprintf("ev-%d", i); seen[id] != 1 {
			t.Errorf("event %s delivered %d times to the queue group; want 1", id, seen[id])
		}
	}
}

// A node that fails (its handler, a stale registry entry, a dead address)
// does not fail the publish while another node of the group takes it.
func TestQueueGroupFailsOver(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	failing := &recorder{fail: errors.New("mailer down")}
	subscribe(t, connect(t, reg), failing.handle, broker.Queue("email"))
	var ok recorder
	live := connect(t, reg)
	goodSub := subscribe(t, live, ok.handle, broker.Queue("email"))
	// A node id the live broker does not serve, and an address nobody
	// listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	for _, n := range []*registry.Node{
		{Id: topic + "-gone", Address: live.Address()},
		{Id: topic + "-dead", Address: dead},
	} {
		n.Metadata = map[string]string{"broker": "http", "topic": topic, "secure": "false"}
		if err := reg.Register(&registry.Service{Name: ServiceName, Version: "email", Nodes: []*registry.Node{n}}); err != nil {
			t.Fatal(err)
		}
	}
	pub := connect(t, reg)
	const n = 20
	for i := range n {
		if err := publish(t, pub, fmt.Sprintf("ev-%d", i)); err != nil {
			t.Fatalf("Publish with one good node of four = %v; want nil", err)
		}
	}
	if got := ok.ids(); len(got) != n {
		t.Errorf("the good node handled %d events; want %d", len(got), n)
	}

	// Without the good node, the publish fails with every node's reason.
	if err := goodSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	err = publish(t, pub, "ev-last")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "mailer down") {
		t.Errorf("Publish with no good node left = %v; want an error naming each node's failure", err)
	}
}

// Subscribers without a queue get every event; each queue group gets it once.
func TestBroadcastAndGroups(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	var all [2]recorder
	for i := range all {
		subscribe(t, connect(t, reg), all[i].handle)
	}
	var audit [2]recorder
	for i := range audit {
		subscribe(t, connect(t, reg), audit[i].handle, broker.Queue("audit"))
	}
	var email recorder
	subscribe(t, connect(t, reg), email.handle, broker.Queue("email"))
	pub := connect(t, reg)
	const n = 10
	for i := range n {
		if err := publish(t, pub, fmt.Sprintf("ev-%d", i)); err != nil {
			t.Fatalf("Publish = %v; want nil", err)
		}
	}
	for i := range all {
		if got := all[i].ids(); len(got) != n {
			t.Errorf("broadcast subscriber %d got %d events; want all %d", i, len(got), n)
		}
	}
	if got := len(audit[0].ids()) + len(audit[1].ids()); got != n {
		t.Errorf("queue group audit got %d events; want %d", got, n)
	}
	if got := email.ids(); len(got) != n {
		t.Errorf("queue group email got %d events; want %d", len(got), n)
	}

	// One broadcast subscriber failing fails the publish.
	all[1].mu.Lock()
	all[1].fail = errors.New("disk full")
	all[1].mu.Unlock()
	if err := publish(t, pub, "ev-fail"); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Publish with a failing broadcast subscriber = %v; want its error", err)
	}
}

// The publish context bounds a delivery whose handler does not return.
func TestPublishHonoursContextDeadline(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free() // before the cleanups disconnect, which wait for the handler
	entered := make(chan struct{}, 1)
	subscribe(t, connect(t, reg), func(broker.Event) error {
		entered <- struct{}{}
		<-release
		return nil
	}, broker.Queue("email"))
	pub := connect(t, reg)

	// A fallback, so that a Publish ignoring its deadline fails the test
	// instead of hanging it.
	fallback := time.AfterFunc(20*time.Second, free)
	defer fallback.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := pub.Publish(topic, message("ev-1"), broker.PublishContext(ctx))
	select {
	case <-release:
		t.Fatalf("Publish returned (%v) only after the handler was released; want it to return at its deadline", err)
	default:
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish with a stuck handler = %v; want context.DeadlineExceeded", err)
	}
	// The POST may reach the handler only after the deadline on a loaded
	// machine: wait for it, bounded so a lost delivery fails, not hangs.
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Errorf("the handler was never called")
	}
}

// Disconnect lets a delivery in flight finish and answers it before it
// stops: the publisher sees it delivered, not cut.
func TestDisconnectAnswersDeliveriesInFlight(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	release := make(chan struct{})
	entered := make(chan struct{})
	sub := connect(t, reg)
	subscribe(t, sub, func(broker.Event) error {
		close(entered)
		<-release
		return nil
	}, broker.Queue("email"))
	pub := connect(t, reg)
	published := make(chan error, 1)
	go func() { published <- publish(t, pub, "ev-1") }()
	<-entered
	disconnected := make(chan error, 1)
	go func() { disconnected <- sub.Disconnect() }()
	// Disconnect deregisters before it waits for the delivery.
	poll.Until(t, "the subscription deregistered", 10*time.Second, func() bool {
		svcs, err := reg.GetService(ServiceName)
		return errors.Is(err, registry.ErrNotFound) || (err == nil && len(subscriberGroups(svcs, topic)) == 0)
	})
	close(release)
	if err := <-published; err != nil {
		t.Errorf("Publish of the delivery in flight at Disconnect = %v; want nil", err)
	}
	if err := <-disconnected; err != nil {
		t.Errorf("Disconnect() = %v; want nil", err)
	}
	if err := publish(t, pub, "ev-2"); err == nil {
		t.Errorf("Publish after the only subscriber disconnected = nil; want an error")
	}
}

// go-micro's stock http broker publishes to shippy's subscriber.
func TestInteropStockPublisher(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	var rec recorder
	subscribe(t, connect(t, reg), rec.handle, broker.Queue("email"))
	stock := broker.NewHttpBroker(broker.Registry(reg))
	if err := stock.Connect(); err != nil {
		t.Fatalf("stock Connect() = %v", err)
	}
	t.Cleanup(func() { stock.Disconnect() })
	if err := stock.Publish(topic, message("ev-1")); err != nil {
		t.Fatalf("stock Publish = %v; want nil", err)
	}
	// The stock broker sends after Publish returned.
	poll.Until(t, "the event from go-micro's broker", 10*time.Second, func() bool { return len(rec.ids()) == 1 })
	if m := rec.got[0]; string(m.Body) != `{"event_id":"ev-1"}` || m.Header[headers.Message] != topic {
		t.Errorf("handler got header %v, body %q; want the stock publisher's message", m.Header, m.Body)
	}
}

// shippy's publisher delivers to go-micro's stock subscriber, which runs
// its handler before it answers; it answers 200 even when the handler
// failed, so such a failure does not reach the publisher.
func TestInteropStockSubscriber(t *testing.T) {
	t.Parallel()
	for _, queue := range []string{"email", ""} {
		t.Run("queue="+queue, func(t *testing.T) {
			t.Parallel()
			reg := registry.NewMemoryRegistry()
			stock := broker.NewHttpBroker(broker.Registry(reg))
			if err := stock.Connect(); err != nil {
				t.Fatalf("stock Connect() = %v", err)
			}
			t.Cleanup(func() { stock.Disconnect() })
			var rec recorder
			var opts []broker.SubscribeOption
			if queue != "" {
				opts = append(opts, broker.Queue(queue))
			}
			subscribe(t, stock, rec.handle, opts...)
			pub := connect(t, reg)
			if err := publish(t, pub, "ev-1"); err != nil {
				t.Fatalf("Publish to a stock subscriber = %v; want nil", err)
			}
			if got := rec.ids(); len(got) != 1 || got[0] != "ev-1" {
				t.Fatalf("stock subscriber had handled %v when Publish returned; want [ev-1]", got)
			}
			if m := rec.got[0]; m.Header[headers.Message] != topic || string(m.Body) != `{"event_id":"ev-1"}` {
				t.Errorf("stock handler got header %v, body %q; want the message as published", m.Header, m.Body)
			}
			rec.mu.Lock()
			rec.fail = errors.New("mailer down")
			rec.mu.Unlock()
			if err := publish(t, pub, "ev-2"); err != nil {
				t.Errorf("Publish to a failing stock subscriber = %v; want nil (go-micro's broker answers 200)", err)
			}
		})
	}
}

// Many publishers at once: each event delivered once (run with -race).
func TestConcurrentPublishes(t *testing.T) {
	t.Parallel()
	reg := registry.NewMemoryRegistry()
	var a, b recorder
	subscribe(t, connect(t, reg), a.handle, broker.Queue("email"))
	subscribe(t, connect(t, reg), b.handle, broker.Queue("email"))
	pub := connect(t, reg)
	const callers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := publish(t, pub, fmt.Sprintf("ev-%d-%d", c, i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Publish = %v; want nil", err)
	}
	seen := map[string]int{}
	for _, id := range append(a.ids(), b.ids()...) {
		seen[id]++
	}
	if len(seen) != callers*each {
		t.Errorf("%d distinct events handled; want %d", len(seen), callers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("event %s handled %d times; want 1", id, n)
		}
	}
}

func TestAdvertiseAddress(t *testing.T) {
	tests := []struct {
		in       string
		wantSame bool
	}{
		{"127.0.0.1:8001", true},
		{"10.1.2.3:8001", true},
		{"0.0.0.0:8001", false},
		{"[::]:8001", false},
	}
	for _, tt := range tests {
		got, err := advertiseAddress(tt.in)
		if err != nil {
			t.Fatalf("advertiseAddress(%q) = %v", tt.in, err)
		}
		host, port, _ := net.SplitHostPort(got)
		ip := net.ParseIP(host)
		switch {
		case tt.wantSame && got != tt.in:
			t.Errorf("advertiseAddress(%q) = %q; want it unchanged", tt.in, got)
		case !tt.wantSame && (ip == nil || ip.IsUnspecified() || port != "8001"):
			t.Errorf("advertiseAddress(%q) = %q; want a dialable address on port 8001", tt.in, got)
		}
	}
}
