package jsbroker_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// newService builds a go-micro service on its own jsbroker, as a separate
// process would, and stops it when the test ends.
func newService(t *testing.T, name, url string) micro.Service {
	t.Helper()
	b := jsbroker.NewBroker(broker.Addrs(url),
		jsbroker.Backoff(10*time.Millisecond),
		jsbroker.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	return micro.NewService(name,
		micro.Broker(b),
		micro.Registry(registry.NewMemoryRegistry()),
		micro.Address("127.0.0.1:0"),
	)
}

func start(t *testing.T, srv micro.Service) {
	t.Helper()
	if err := srv.Server().Start(); err != nil {
		t.Fatalf("Start(%s) = %v; want nil", srv.Name(), err)
	}
	t.Cleanup(func() { _ = srv.Server().Stop() })
}

type seen struct {
	Event  *pb.UserCreated
	Header string // the Event-Id header as go-micro passed it on
}

func TestThroughGoMicro(t *testing.T) {
	nats := natstest.Start(t)

	var mu sync.Mutex
	tries := map[string]int{}
	var got []seen
	handler := func(ctx context.Context, ev *pb.UserCreated) error {
		mu.Lock()
		defer mu.Unlock()
		tries[ev.EventId]++
		if ev.EventId == "ev-flaky" && tries[ev.EventId] == 1 {
			return errors.New("mailer down")
		}
		h, _ := metadata.Get(ctx, jsbroker.HeaderEventID)
		got = append(got, seen{Event: ev, Header: h})
		return nil
	}

	emailSrv := newService(t, "go.micro.srv.email", nats.URL())
	if err := micro.RegisterSubscriber(pb.TopicUserCreated, emailSrv.Server(), handler, server.SubscriberQueue("email-service")); err != nil {
		t.Fatalf("RegisterSubscriber = %v", err)
	}
	start(t, emailSrv)

	userSrv := newService(t, "go.micro.srv.user", nats.URL())
	start(t, userSrv)
	pub := micro.NewEvent(pb.TopicUserCreated, userSrv.Client())

	for _, id := range []string{"ev-ok", "ev-flaky"} {
		ctx := jsbroker.WithEventID(context.Background(), id)
		ev := &pb.UserCreated{EventId: id, Id: "u-" + id, Name: "Ewan", Email: "ewan@example.com"}
		if err := pub.Publish(ctx, ev); err != nil {
			t.Fatalf("Publish(%s) = %v; want nil", id, err)
		}
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d events within 20s; want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	mu.Lock()
	defer mu.Unlock()
	byID := map[string]seen{}
	for _, s := range got {
		byID[s.Event.EventId] = s
	}
	for _, id := range []string{"ev-ok", "ev-flaky"} {
		s, ok := byID[id]
		if !ok {
			t.Errorf("event %s not handled; got %v", id, got)
			continue
		}
		if s.Event.Id != "u-"+id || s.Event.Email != "ewan@example.com" {
			t.Errorf("event %s decoded as %v; want user_id %q, email %q", id, s.Event, "u-"+id, "ewan@example.com")
		}
		if s.Header != id {
			t.Errorf("event %s: header %s = %q; want %q", id, jsbroker.HeaderEventID, s.Header, id)
		}
	}
	if tries["ev-flaky"] != 2 {
		t.Errorf("handler saw ev-flaky %d times; want 2 (a redelivery after the error)", tries["ev-flaky"])
	}
	if tries["ev-ok"] != 1 {
		t.Errorf("handler saw ev-ok %d times; want 1", tries["ev-ok"])
	}
}

func TestSelectedByMicroBrokerVariable(t *testing.T) {
	nats := natstest.Start(t)
	vars := map[string]string{"MICRO_BROKER": "jetstream", "MICRO_BROKER_ADDRESS": nats.URL()}
	env, err := microenv.LoadEnv(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatalf("microenv.LoadEnv = %v; want nil", err)
	}
	p, err := env.Plugins()
	if err != nil {
		t.Fatalf("Plugins() = %v; want nil", err)
	}
	b := p.Broker
	if b.String() != "jetstream" {
		t.Fatalf("MICRO_BROKER=jetstream gave broker %q; want jetstream", b.String())
	}
	if err := b.Connect(); err != nil {
		t.Fatalf("Connect() = %v; want nil", err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })
	if b.Address() != nats.URL() {
		t.Errorf("Address() = %q; want %q from MICRO_BROKER_ADDRESS", b.Address(), nats.URL())
	}
}

// A go-micro subscriber's error reaches the broker as go-micro's JSON error;
// the dead letter carries its readable detail.
func TestDeadLetterReasonThroughGoMicro(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	dead, err := nc.SubscribeSync(jsbroker.DefaultDeadLetterPrefix + "." + pb.TopicUserCreated)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	emailSrv := newService(t, "go.micro.srv.email", ns.URL())
	handler := func(context.Context, *pb.UserCreated) error { return errors.New("smtp: 550 mailbox unavailable") }
	if err := micro.RegisterSubscriber(pb.TopicUserCreated, emailSrv.Server(), handler, server.SubscriberQueue("email-service")); err != nil {
		t.Fatalf("RegisterSubscriber = %v", err)
	}
	start(t, emailSrv)
	userSrv := newService(t, "go.micro.srv.user", ns.URL())
	start(t, userSrv)
	ev := &pb.UserCreated{EventId: "ev-poison", Id: "u-1", Name: "Ewan", Email: "ewan@example.com"}
	if err := micro.NewEvent(pb.TopicUserCreated, userSrv.Client()).Publish(jsbroker.WithEventID(context.Background(), ev.EventId), ev); err != nil {
		t.Fatalf("Publish = %v; want nil", err)
	}

	msg, err := dead.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	const want = "subscriber error: smtp: 550 mailbox unavailable"
	if got := msg.Header.Get(jsbroker.HeaderDeadLetterReason); got != want {
		t.Errorf("dead letter header %s = %q; want %q", jsbroker.HeaderDeadLetterReason, got, want)
	}
}

func TestFinalRetryDelay(t *testing.T) {
	s := time.Second
	tests := []struct {
		maxDeliver int
		backoff    []time.Duration
		want       time.Duration
	}{
		{jsbroker.DefaultMaxDeliver, jsbroker.DefaultBackoff, 15 * s},
		{2, []time.Duration{s, 2 * s}, s},
		{3, []time.Duration{s, 2 * s}, 2 * s},
		{10, []time.Duration{s, 2 * s}, 2 * s}, // the last entry repeats
		{1, []time.Duration{s}, 0},             // no retry at all
	}
	for _, tt := range tests {
		if got := jsbroker.FinalRetryDelay(tt.maxDeliver, tt.backoff); got != tt.want {
			t.Errorf("FinalRetryDelay(%d, %v) = %v; want %v", tt.maxDeliver, tt.backoff, got, tt.want)
		}
	}
	if jsbroker.DefaultFinalRetryDelay != 15*s {
		t.Errorf("DefaultFinalRetryDelay = %v; want 15s", jsbroker.DefaultFinalRetryDelay)
	}
}
