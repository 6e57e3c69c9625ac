package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
	pb "github.com/shippy/shippy/proto/user"
	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	natsbroker "go-micro.dev/v6/broker/nats"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
)

// startEmailService runs one email-service replica in the test process, as
// main does but with explicit options instead of MICRO_* variables: its own
// NATS broker connection, a private registry and a random port.
func startEmailService(t *testing.T, natsURL string, m Mailer) {
	t.Helper()
	srv := micro.NewService(serviceName,
		micro.Broker(natsbroker.NewNatsBroker(broker.Addrs(natsURL))),
		micro.Registry(registry.NewMemoryRegistry()),
		micro.Address("127.0.0.1:0"),
		micro.HandleSignal(false),
	)
	if err := Subscribe(srv.Server(), NewHandler(m, discardLog), defaultQueue); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start email-service: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
}

// userService publishes user.created the two ways the user-service does.
type userService struct {
	srv micro.Service
}

func newUserService(t *testing.T, natsURL string) *userService {
	t.Helper()
	srv := micro.NewService("go.micro.srv.user",
		micro.Broker(natsbroker.NewNatsBroker(broker.Addrs(natsURL))),
		micro.Registry(registry.NewMemoryRegistry()),
		micro.Address("127.0.0.1:0"),
		micro.HandleSignal(false),
	)
	// go-micro v6's client defaults to application/json; the user-service's
	// default codec is protobuf.
	if err := srv.Client().Init(client.ContentType("application/protobuf")); err != nil {
		t.Fatalf("client content type: %v", err)
	}
	b := srv.Server().Options().Broker
	if err := b.Connect(); err != nil {
		t.Fatalf("connect publisher broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })
	return &userService{srv: srv}
}

// publishProto is the default: go-micro pubsub with the protobuf codec.
func (u *userService) publishProto(t *testing.T, ev *pb.UserCreated) {
	t.Helper()
	if err := micro.NewEvent(pb.TopicUserCreated, u.srv.Client()).Publish(context.Background(), ev); err != nil {
		t.Fatalf("publish %s (protobuf): %v", ev.EventId, err)
	}
}

// publishJSON is EVENTS_CODEC=json: a raw broker message.
func (u *userService) publishJSON(t *testing.T, ev *pb.UserCreated) {
	t.Helper()
	if err := u.srv.Server().Options().Broker.Publish(pb.TopicUserCreated, rawJSONMessage(t, ev)); err != nil {
		t.Fatalf("publish %s (json): %v", ev.EventId, err)
	}
}

func event(id string) *pb.UserCreated {
	return &pb.UserCreated{
		EventId:         id,
		Id:              "user-" + id,
		Name:            "Name " + id,
		Company:         "Shippy",
		Email:           id + "@example.com",
		CreatedAtUnixMs: time.Now().UnixMilli(),
	}
}

// markUntilEachReplicaSaw publishes marker events until every replica has
// handled one. Core NATS keeps one publisher's messages in order for each
// subscriber, and a subscriber handles them one at a time, so once a replica
// has handled a marker it has handled everything published before it. It
// is used first to wait for the subscriptions (a message published before
// them is dropped by core NATS) and last to wait out late duplicates.
func markUntilEachReplicaSaw(t *testing.T, u *userService, tl *tally, prefix string, replicas ...string) {
	t.Helper()
	eachSaw := func() bool {
		for _, r := range replicas {
			if !tl.replicaSaw(r, prefix) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !eachSaw(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no marker %s* reached every replica of %v within 10s", prefix, replicas)
		}
		id := fmt.Sprintf("%s%d", prefix, i)
		u.publishProto(t, event(id))
		// Before the subscriptions exist a marker is lost: stop waiting for
		// it after a short while and send another.
		poll.For(200*time.Millisecond, func() bool { return len(tl.sends(id)) > 0 })
	}
}

func TestNATSBothCodecs(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Start(t).URL()
	tl := newTally()
	startEmailService(t, natsURL, tl.mailer("email-1"))
	u := newUserService(t, natsURL)
	markUntilEachReplicaSaw(t, u, tl, "ready-", "email-1")

	proto, json := event("proto-1"), event("json-1")
	u.publishProto(t, proto)
	u.publishJSON(t, json)
	markUntilEachReplicaSaw(t, u, tl, "done-", "email-1")

	for _, ev := range []*pb.UserCreated{proto, json} {
		got := tl.sends(ev.EventId)
		want := WelcomeEmail{EventID: ev.EventId, UserID: ev.Id, Name: ev.Name, Email: ev.Email, Company: ev.Company}
		if len(got) != 1 || got[0] != want {
			t.Errorf("sends for %s = %+v; want exactly [%+v]", ev.EventId, got, want)
		}
	}
}

func TestNATSTwoReplicasShareTheWork(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Start(t).URL()
	tl := newTally()
	startEmailService(t, natsURL, tl.mailer("email-1"))
	startEmailService(t, natsURL, tl.mailer("email-2"))
	u := newUserService(t, natsURL)
	// Both subscriptions must be live, or "no duplicates" would prove nothing.
	markUntilEachReplicaSaw(t, u, tl, "ready-", "email-1", "email-2")

	const n = 50
	for i := 0; i < n; i++ {
		ev := event(fmt.Sprintf("user-%02d", i))
		if i%2 == 0 {
			u.publishProto(t, ev)
		} else {
			u.publishJSON(t, ev)
		}
	}
	poll.Until(t, fmt.Sprintf("%d sends", n), waitLimit, func() bool { return tl.total("user-") >= n })
	markUntilEachReplicaSaw(t, u, tl, "done-", "email-1", "email-2")

	if got := tl.total("user-"); got != n {
		t.Errorf("total sends = %d; want %d", got, n)
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("user-%02d", i)
		if got := len(tl.sends(id)); got != 1 {
			t.Errorf("sends for %s = %d; want 1", id, got)
		}
	}
}

func TestNATSRedeliveredEventsSendOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	natsURL := natstest.Start(t).URL()
	tl := newTally()
	for _, r := range []string{"email-1", "email-2"} {
		startEmailService(t, natsURL, dedup(tl.mailer(r), openKVSentLog(t, natsURL, defaultSentBucket)))
	}
	u := newUserService(t, natsURL)
	markUntilEachReplicaSaw(t, u, tl, "ready-", "email-1", "email-2")

	// Each event arrives three times, on either replica, in either codec, as
	// a redelivering broker or a retrying publisher would send it.
	const n = 20
	for round := 0; round < 3; round++ {
		for i := 0; i < n; i++ {
			ev := event(fmt.Sprintf("user-%02d", i))
			if (i+round)%2 == 0 {
				u.publishProto(t, ev)
			} else {
				u.publishJSON(t, ev)
			}
		}
	}
	poll.Until(t, fmt.Sprintf("%d sends", n), waitLimit, func() bool { return tl.total("user-") >= n })
	markUntilEachReplicaSaw(t, u, tl, "done-", "email-1", "email-2")

	for i := 0; i < n; i++ {
		id := fmt.Sprintf("user-%02d", i)
		if got := len(tl.sends(id)); got != 1 {
			t.Errorf("sends for %s delivered 3 times = %d; want 1", id, got)
		}
	}
}
