package jsbroker

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// streamInfo reads a stream's state on its own connection.
func streamInfo(t *testing.T, url, name string) *jetstream.StreamInfo {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	return info
}

func TestLimitsOptions(t *testing.T) {
	tests := []struct {
		name        string
		opts        []broker.Option
		wantEvents  Limits
		wantDLQ     Limits
		wantReplica int
		wantUpdate  bool
	}{
		{"defaults", nil, Limits{DefaultMaxAge, DefaultMaxBytes}, Limits{DefaultDeadLetterMaxAge, DefaultDeadLetterMaxBytes}, 1, true},
		{"set", []broker.Option{EventLimits(Limits{time.Hour, 1 << 20}), DeadLetterLimits(Limits{2 * time.Hour, 2 << 20}), Replicas(3), UpdateStreams(false)},
			Limits{time.Hour, 1 << 20}, Limits{2 * time.Hour, 2 << 20}, 3, false},
		// Zero is no limit, not the default.
		{"no limits", []broker.Option{EventLimits(Limits{}), DeadLetterLimits(Limits{})}, Limits{}, Limits{}, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(tt.opts...).cfg
			got := Limits{c.maxAge, c.maxBytes}
			if got != tt.wantEvents || c.deadLetterLimits != tt.wantDLQ || c.replicas != tt.wantReplica || c.updateStreams != tt.wantUpdate {
				t.Errorf("New(%s) = events %+v, dlq %+v, replicas %d, update %v; want %+v, %+v, %d, %v", tt.name,
					got, c.deadLetterLimits, c.replicas, c.updateStreams, tt.wantEvents, tt.wantDLQ, tt.wantReplica, tt.wantUpdate)
			}
		})
	}
}

// At its byte limit the event stream drops its oldest events, whether a
// consumer had them or not, and publishing goes on; lowering the limit on a
// stream that holds more drops the excess at once.
func TestEventStreamAtItsLimits(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	const limit = 1 << 20
	b := newBroker(t, ns.URL(), EventLimits(Limits{MaxAge: time.Hour, MaxBytes: limit}))
	body := bytes.Repeat([]byte("x"), 100<<10)
	for i := range 30 { // 3 MB through a 1 MiB stream
		if err := b.Publish("limits", &broker.Message{Header: map[string]string{HeaderEventID: fmt.Sprintf("ev-%d", i)}, Body: body}); err != nil {
			t.Fatalf("Publish #%d = %v; want nil (the stream drops old events, it does not refuse new ones)", i, err)
		}
	}
	info := streamInfo(t, ns.URL(), DefaultStream)
	if info.State.Bytes > limit {
		t.Errorf("stream holds %d bytes; want at most its limit %d", info.State.Bytes, limit)
	}
	if info.State.FirstSeq <= 1 || info.State.LastSeq != 30 {
		t.Errorf("stream sequences %d..%d; want the oldest dropped and the 30th kept", info.State.FirstSeq, info.State.LastSeq)
	}
	kept := info.State.Msgs

	// A subscriber that was never there gets only what is left.
	var rec recorder
	if _, err := b.Subscribe("limits", rec.handle, broker.Queue("late")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the kept events", waitLimit, func() bool { return uint64(len(rec.bodies())) == kept })

	// The owner lowers the limit: JetStream accepts it and drops at once.
	newBroker(t, ns.URL(), EventLimits(Limits{MaxAge: time.Hour, MaxBytes: limit / 4}))
	info = streamInfo(t, ns.URL(), DefaultStream)
	if info.Config.MaxBytes != limit/4 || info.State.Bytes > limit/4 || info.State.Msgs >= kept {
		t.Errorf("after lowering the limit to %d: max bytes %d, %d bytes in %d messages (had %d); want the excess dropped",
			limit/4, info.Config.MaxBytes, info.State.Bytes, info.State.Msgs, kept)
	}
}

// JETSTREAM_REPLICAS on a real 3-server cluster: both streams are
// replicated, and events are published and delivered with a server down.
func TestStreamsReplicatedOnACluster(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	// Created with one replica, as before JETSTREAM_REPLICAS, then raised
	// by the owner's next start: JetStream scales the streams in place.
	first := newBroker(t, c.URLs())
	if r := streamInfo(t, c.URLs(), DefaultStream).Config.Replicas; r != 1 {
		t.Fatalf("stream created with %d replicas; want 1", r)
	}
	if err := first.Disconnect(); err != nil {
		t.Fatal(err)
	}
	b := newBroker(t, c.URLs(), Replicas(3), PublishTimeout(2*time.Second))
	// The new replicas catch up in the background.
	for _, name := range []string{DefaultStream, DefaultStream + "_DLQ"} {
		poll.Until(t, name+" on 3 servers", waitLimit, func() bool {
			info := streamInfo(t, c.URLs(), name)
			if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				return false
			}
			for _, r := range info.Cluster.Replicas {
				if !r.Current {
					return false
				}
			}
			return true
		})
	}
	var rec recorder
	if _, err := b.Subscribe("replicated", rec.handle, broker.Queue("q")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish("replicated", &broker.Message{Body: []byte("before")}); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	poll.Until(t, "the first event", waitLimit, func() bool { return len(rec.bodies()) == 1 })

	// The stream's leader goes away; the other two elect another.
	leader := streamInfo(t, c.URLs(), DefaultStream).Cluster.Leader
	for _, s := range c.Servers {
		if s.Name() == leader {
			s.Stop()
		}
	}
	poll.Until(t, "a publish with the leader down", waitLimit, func() bool {
		return b.Publish("replicated", &broker.Message{Header: map[string]string{HeaderEventID: "after"}, Body: []byte("after")}) == nil
	})
	poll.Until(t, "the event published with the leader down", waitLimit, func() bool { return len(rec.bodies()) == 2 })
}
