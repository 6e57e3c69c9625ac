package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6"
	"go-micro.dev/v6/server"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// eventPublishers is how many goroutines publish through go-micro: its
// Publish returns after one send (after the stream's ack for jetstream), so
// a single publisher would measure one round trip per event, not the path.
// The user-service publishes from each Create's goroutine, concurrently.
const eventPublishers = 8

// counter counts handled events.
type counter struct{ n atomic.Int64 }

// waitFor polls until n events were handled in total.
func (c *counter) waitFor(b *testing.B, n int64, timeout time.Duration) {
	b.Helper()
	if !c.settle(n, timeout) {
		b.Fatalf("handled %d events within %s; want %d", c.n.Load(), timeout, n)
	}
}

// settle polls until n events were handled, or until no event arrived for
// idle; it reports whether all n arrived. At the end, the time of the
// last arrival.
func (c *counter) settle(n int64, idle time.Duration) bool {
	last, lastAt := c.n.Load(), time.Now()
	for {
		cur := c.n.Load()
		if cur >= n {
			return true
		}
		if cur != last {
			last, lastAt = cur, time.Now()
		} else if time.Since(lastAt) > idle {
			return false
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func sampleEvent(i int) *pb.UserCreated {
	return &pb.UserCreated{
		EventId: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i), Id: "0b7c7b8e-5f0e-4d2a-9a59-3f1c2e7d9a10",
		Name: "Bench User", Company: "Bench", Email: "bench.user@example.com", CreatedAtUnixMs: time.Now().UnixMilli(),
	}
}

// microEvents runs a subscriber service and a publisher client in this
// process, both built by microenv from the current MICRO_* environment, and
// returns a function that publishes n events with micro.NewEvent and waits
// until the subscriber's handler has run for each.
//
// The built-in broker drops events by design when publishes outpace
// delivery (its retry inbox holds 64): for it, lost events are counted in
// result.errs and the throughput is of events handled.
func microEvents(b *testing.B, natsURL, topic string, builtin bool) func(n int) result {
	b.Helper()
	var handled counter
	env, p := fromEnv(b)
	sub := env.NewServer("bench.events.sub", p, server.Address("127.0.0.1:0"))
	if err := sub.Subscribe(sub.NewSubscriber(topic, func(_ context.Context, ev *pb.UserCreated) error {
		if ev.EventId == "" {
			return fmt.Errorf("empty event")
		}
		handled.n.Add(1)
		return nil
	}, server.SubscriberQueue("bench"))); err != nil {
		b.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		b.Fatalf("start subscriber: %v", err)
	}
	b.Cleanup(func() { sub.Stop() })
	waitRegistered(b, natsURL, "bench.events.sub", nil)

	// The publisher has parts of its own, as the user-service would; its
	// client sends protobuf, as the user-service's does.
	pubEnv, pubParts := fromEnv(b)
	c := pubEnv.NewClient(pubParts)
	if err := pubParts.Broker.Connect(); err != nil {
		b.Fatalf("connect publisher broker: %v", err)
	}
	ev := micro.NewEvent(topic, c)
	ctx := context.Background()

	// The built-in broker finds subscribers through the registry: publish
	// until one event arrives before measuring.
	deadline := time.Now().Add(30 * time.Second)
	for handled.n.Load() == 0 {
		if err := ev.Publish(ctx, sampleEvent(0)); err != nil && time.Now().After(deadline) {
			b.Fatalf("warm-up publish: %v", err)
		}
		if time.Now().After(deadline) {
			b.Fatal("no warm-up event handled within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let stragglers of the warm-up land
	return func(n int) result {
		start := handled.n.Load()
		t0 := time.Now()
		r := run(n, eventPublishers, func(i int) error { return ev.Publish(ctx, sampleEvent(i)) })
		if !builtin {
			handled.waitFor(b, start+int64(n), 60*time.Second)
			r.dur = time.Since(t0)
			return r
		}
		const idle = 2 * time.Second
		if !handled.settle(start+int64(n), idle) {
			r.dur = time.Since(t0) - idle
		} else {
			r.dur = time.Since(t0)
		}
		got := int(handled.n.Load() - start)
		r.errs += n - got
		r.ops = got
		return r
	}
}

// rawNATSEvents publishes n protobuf events with nats.go and waits until a
// queue subscriber on another connection has decoded each.
func rawNATSEvents(b *testing.B, natsURL string) func(n int) result {
	b.Helper()
	var handled counter
	subConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(subConn.Close)
	if _, err := subConn.QueueSubscribe("bench.raw.events", "bench", func(m *nats.Msg) {
		var ev pb.UserCreated
		if proto.Unmarshal(m.Data, &ev) == nil {
			handled.n.Add(1)
		}
	}); err != nil {
		b.Fatal(err)
	}
	subConn.Flush()
	pubConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pubConn.Close)
	return func(n int) result {
		start := handled.n.Load()
		t0 := time.Now()
		errs := 0
		for i := range n {
			data, _ := proto.Marshal(sampleEvent(i))
			if pubConn.Publish("bench.raw.events", data) != nil {
				errs++
			}
		}
		handled.waitFor(b, start+int64(n), 60*time.Second)
		return result{ops: n, errs: errs, dur: time.Since(t0)}
	}
}

// jetStreamConn is JetStream on a NATS connection of its own to natsURL,
// closed with the benchmark.
func jetStreamConn(b *testing.B, natsURL string) jetstream.JetStream {
	b.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}

// rawJetStreamEvents publishes n events with JetStream async publish into a
// file-backed stream and waits until a durable pull consumer has decoded and
// acked each (explicit ack policy).
func rawJetStreamEvents(b *testing.B, natsURL string) func(n int) result {
	b.Helper()
	var handled counter
	ctx := context.Background()
	js := jetStreamConn(b, natsURL)
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_RAW", Subjects: []string{"bench.rawjs.>"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Fatal(err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	subCons, err := jetStreamConn(b, natsURL).Consumer(ctx, "BENCH_RAW", cons.CachedInfo().Name)
	if err != nil {
		b.Fatal(err)
	}
	cc, err := subCons.Consume(func(m jetstream.Msg) {
		var ev pb.UserCreated
		if proto.Unmarshal(m.Data(), &ev) == nil && m.Ack() == nil {
			handled.n.Add(1)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return func(n int) result {
		start := handled.n.Load()
		t0 := time.Now()
		errs := 0
		for i := range n {
			data, _ := proto.Marshal(sampleEvent(i))
			if _, err := js.PublishAsync("bench.rawjs.user.created", data); err != nil {
				errs++
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			b.Fatal("async publishes not acked within 60s")
		}
		handled.waitFor(b, start+int64(n), 60*time.Second)
		return result{ops: n, errs: errs, dur: time.Since(t0)}
	}
}

// BenchmarkEvents is pair 4: micro.NewEvent publish to subscriber handled,
// per broker, against raw nats.go publish/subscribe (for the built-in and
// nats brokers) and raw JetStream async publish plus durable consume with
// ack (for jetstream).
func BenchmarkEvents(b *testing.B) {
	ns := natstest.Start(b)
	b.Setenv("MICRO_REGISTRY", "nats")
	b.Setenv("MICRO_REGISTRY_ADDRESS", ns.URL())
	rawNATS := rawNATSEvents(b, ns.URL())
	rawJS := rawJetStreamEvents(b, ns.URL())
	brokers := []struct {
		name, env string
		half      int
		raw       func(int) result
		rawName   string
	}{
		{"http", "", 500, rawNATS, "rawnats"},
		{"nats", "nats", 5000, rawNATS, "rawnats"},
		{"jetstream", "jetstream", 2000, rawJS, "rawjs"},
	}
	for _, br := range brokers {
		b.Run(br.name, func(b *testing.B) {
			b.Setenv("MICRO_BROKER", br.env)
			b.Setenv("MICRO_BROKER_ADDRESS", map[bool]string{true: ns.URL()}[br.env != ""])
			subj := microEvents(b, ns.URL(), fmt.Sprintf("bench.%s.user.created", br.name), br.env == "")
			half := b.N * br.half
			rawR, micro := alternate(half, br.raw, subj)
			if br.env == "" {
				b.ReportMetric(float64(micro.errs), "lost-events")
				fmt.Printf("built-in broker: %d of %d events lost\n", micro.errs, micro.errs+micro.ops)
			} else {
				checkErrs(b, br.name, micro)
			}
			b.ReportMetric(rawR.perSec(), br.rawName+"-events/s")
			b.ReportMetric(micro.perSec(), "micro-events/s")
			ratio(b, fmt.Sprintf("4-events-%s-vs-%s", br.name, br.rawName), micro.perSec()/rawR.perSec())
		})
	}
}
