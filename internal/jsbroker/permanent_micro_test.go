package jsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// go-micro hands the broker only the text of a subscriber's error: the
// Permanent mark survives it, and the dead letter comes after one delivery
// with the handler's own words as the reason.
func TestPermanentErrorThroughGoMicro(t *testing.T) {
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

	var calls atomic.Int32
	handler := func(_ context.Context, ev *pb.UserCreated) error {
		calls.Add(1)
		return fmt.Errorf("send welcome email for event %s: %w", ev.EventId, jsbroker.Permanent(errors.New("550 5.1.1 no such user")))
	}
	emailSrv := newService(t, "go.micro.srv.email", ns.URL())
	if err := micro.RegisterSubscriber(pb.TopicUserCreated, emailSrv.Server(), handler, server.SubscriberQueue("email-service")); err != nil {
		t.Fatalf("RegisterSubscriber = %v", err)
	}
	start(t, emailSrv)
	userSrv := newService(t, "go.micro.srv.user", ns.URL())
	start(t, userSrv)
	ev := &pb.UserCreated{EventId: "ev-refused", Id: "u-1", Name: "Ewan", Email: "nobody@example.com"}
	if err := micro.NewEvent(pb.TopicUserCreated, userSrv.Client()).Publish(jsbroker.WithEventID(context.Background(), ev.EventId), ev); err != nil {
		t.Fatalf("Publish = %v; want nil", err)
	}

	msg, err := dead.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	for k, want := range map[string]string{
		jsbroker.HeaderDeadLetterReason:     "subscriber error: send welcome email for event ev-refused: 550 5.1.1 no such user",
		jsbroker.HeaderDeadLetterDeliveries: "1",
		jsbroker.HeaderEventID:              "ev-refused",
	} {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q; want %q", k, got, want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("handler called %d times; want 1", n)
	}
}
