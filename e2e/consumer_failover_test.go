package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/jsbroker"
)

// The NATS server leading a durable consumer is SIGKILLed while events flow
// and the subscriber's own server stays up. A pull request waiting at the
// dead leader gets no answer: the subscriber must notice, pull from the new
// leader and go on receiving. How long that takes is logged, not asserted
// (jsbroker's 5 s pull expiry bounds the wait for a lost pull).
func TestConsumerLeaderKilled(t *testing.T) {
	t.Parallel()
	c := startNATSCluster(t, 3)
	home := c.nodes[0] // the subscriber's only server
	homeURL := fmt.Sprintf("nats://127.0.0.1:%d", home.port)
	b := jsbroker.New(broker.Addrs(homeURL), jsbroker.Replicas(3),
		jsbroker.Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err := b.Connect(); err != nil {
		t.Fatalf("Connect = %v", err)
	}
	t.Cleanup(func() { _ = b.Disconnect() })

	var (
		mu                  sync.Mutex
		published, received = map[string]bool{}, map[string]bool{}
	)
	count := func(m map[string]bool) int { mu.Lock(); defer mu.Unlock(); return len(m) }
	sub, err := b.Subscribe("leader.test", func(e broker.Event) error {
		mu.Lock()
		defer mu.Unlock()
		received[string(e.Message().Body)] = true
		return nil
	}, broker.Queue("q"))
	if err != nil {
		t.Fatalf("Subscribe = %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	publish := func(body string) error {
		return b.Publish("leader.test", &broker.Message{Header: map[string]string{jsbroker.HeaderEventID: body}, Body: []byte(body)})
	}
	// The consumer's leader is moved off home, then killed.
	nc, err := nats.Connect(homeURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	consumer := jsbroker.ConsumerName("q", "leader.test")
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, jsbroker.DefaultStream, consumer)
		if err != nil {
			return ""
		}
		info, err := cons.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	var dead string
	waitUntil(t, "a consumer leader other than "+home.name, 60*time.Second, func() bool {
		dead = leader()
		if dead == home.name {
			_, _ = nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+jsbroker.DefaultStream+"."+consumer, nil, 2*time.Second)
		}
		return dead != "" && dead != home.name
	})
	// Events keep coming, as under load, so that pulls are renewed while
	// the consumer has no leader.
	pubCtx, stopPublishing := context.WithCancel(context.Background())
	t.Cleanup(stopPublishing) // a failing test stops the publisher too
	var pubs sync.WaitGroup
	pubs.Add(1)
	go func() {
		defer pubs.Done()
		tick := time.NewTicker(20 * time.Millisecond) // the publish rate
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-pubCtx.Done():
				return
			case <-tick.C:
			}
			// Fails while the stream has no leader; what the stream took
			// must all be delivered.
			if body := fmt.Sprint("load-", i); publish(body) == nil {
				mu.Lock()
				published[body] = true
				mu.Unlock()
			}
		}
	}()
	waitUntil(t, "events flowing", 30*time.Second, func() bool { return count(received) > 20 })
	c.node(t, dead).proc.kill(t)
	killed := time.Now()
	atKill := count(received)
	waitUntil(t, "events delivered after the kill", 2*time.Minute, func() bool { return count(received) > atKill+20 })
	resumed := time.Since(killed)
	stopPublishing()
	pubs.Wait()
	waitUntil(t, "every event the stream took delivered", time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for body := range published {
			if !received[body] {
				return false
			}
		}
		return true
	})
	t.Logf("20 events delivered %s after %s, the consumer's leader, was SIGKILLed; %d published, all delivered",
		resumed.Round(time.Millisecond), dead, count(published))
}
