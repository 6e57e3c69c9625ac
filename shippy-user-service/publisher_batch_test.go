package main

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/outbox"
	pb "github.com/shippy/shippy/proto/user"
)

// TestPublishBatchSendsWhatPublishSends: the relay's batch path on the
// JetStream broker stores the same message as go-micro's client does
// through Publish (body, content type, topic, event and request id
// headers), so the email-service cannot tell them apart.
func TestPublishBatchSendsWhatPublishSends(t *testing.T) {
	srv := natstest.Start(t)
	b := jsbroker.New(broker.Addrs(srv.URL()), jsbroker.Logger(discardLog))
	if err := b.Connect(); err != nil {
		t.Fatalf("Connect() = %v", err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })
	held := newHeldBroker(b)
	cfg := testCfg(codecProto)
	pub := outboxPublisher{events: protoPublisher{client: cfg.Micro.NewClient(testPlugins(registry.NewMemoryRegistry(), held))}}
	if pub.jetStream() != b {
		t.Fatalf("outboxPublisher.jetStream() does not find the JetStream broker under the held broker")
	}
	message := func(id string) outbox.Message {
		ev := &pb.UserCreated{EventId: id, Id: "u-" + id, Name: "Ann", Email: "ann@example.com", CreatedAtUnixMs: 1}
		payload, _ := proto.Marshal(ev)
		return outbox.Message{EventID: id, Topic: pb.TopicUserCreated, Payload: payload, RequestID: "req-" + id}
	}
	ctx := context.Background()
	if err := pub.Publish(ctx, message("one")); err != nil {
		t.Fatalf("Publish(one) = %v", err)
	}
	if errs := pub.PublishBatch(ctx, []outbox.Message{message("two"), message("three")}); slices.ContainsFunc(errs, func(e error) bool { return e != nil }) {
		t.Fatalf("PublishBatch(two, three) = %v; want no error", errs)
	}

	nc, js := natsJS(t, srv.URL())
	defer nc.Close()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(sctx, jsbroker.DefaultStream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	msgs := map[string]*jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := stream.GetMsg(sctx, seq)
		if err != nil {
			t.Fatalf("GetMsg(%d) = %v", seq, err)
		}
		msgs[m.Header.Get(jsbroker.HeaderEventID)] = m
	}
	viaClient := msgs["one"]
	for _, id := range []string{"two", "three"} {
		m := msgs[id]
		if m == nil {
			t.Fatalf("event %s not in the stream", id)
		}
		if got, want := slices.Sorted(maps.Keys(m.Header)), slices.Sorted(maps.Keys(viaClient.Header)); !slices.Equal(got, want) {
			t.Errorf("event %s headers %v; want those of go-micro's Publish %v", id, got, want)
		}
		for _, k := range []string{"Content-Type", "Micro-Topic"} {
			if m.Header.Get(k) != viaClient.Header.Get(k) {
				t.Errorf("event %s header %s = %q; want %q", id, k, m.Header.Get(k), viaClient.Header.Get(k))
			}
		}
		if got := m.Header.Get("X-Request-Id"); got != "req-"+id {
			t.Errorf("event %s X-Request-Id = %q; want %q", id, got, "req-"+id)
		}
		ev := &pb.UserCreated{}
		if err := proto.Unmarshal(m.Data, ev); err != nil || ev.EventId != id || ev.Id != "u-"+id {
			t.Errorf("event %s body = %v, %v; want the event", id, ev, err)
		}
	}
}

func natsJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
