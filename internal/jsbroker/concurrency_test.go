package jsbroker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// TestConcurrencyRunsHandlersInParallel: with WithConcurrency(4) four
// handlers run at once (each waits until all four are in), never more, every
// message is handled and acked once, and Unsubscribe waits for the handlers
// still running.
func TestConcurrencyRunsHandlersInParallel(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []broker.Option
		sub  []broker.SubscribeOption
	}{
		{"subscription", nil, []broker.SubscribeOption{broker.SubscribeContext(WithConcurrency(context.Background(), 4))}},
		{"broker", []broker.Option{Concurrency(4)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t)
			b := newBroker(t, srv.URL(), tc.opts...)
			const n, conc = 40, 4
			for i := range n {
				publish(t, b, "user.created", fmt.Sprintf("m%02d", i), nil)
			}
			var (
				inFlight, peak atomic.Int64
				mu             sync.Mutex
				seen           = map[string]int{}
				// The first conc handlers wait for each other: they only
				// all get in if they run at once.
				gate    sync.WaitGroup
				entered atomic.Int64
			)
			gate.Add(conc)
			release := make(chan struct{})
			h := func(e broker.Event) error {
				cur := inFlight.Add(1)
				defer inFlight.Add(-1)
				for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
				}
				if entered.Add(1) <= conc {
					gate.Done()
					gate.Wait()
				}
				if string(e.Message().Body) == "m39" {
					<-release // still running when Unsubscribe starts
				}
				mu.Lock()
				seen[string(e.Message().Body)]++
				mu.Unlock()
				return nil
			}
			opts := append([]broker.SubscribeOption{broker.Queue("email-service")}, tc.sub...)
			sub, err := b.Subscribe("user.created", h, opts...)
			if err != nil {
				t.Fatalf("Subscribe() = %v; want nil", err)
			}
			poll.Until(t, "every message but the held one handled", waitLimit, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(seen) == n-1
			})
			unsubscribed := make(chan struct{})
			go func() { _ = sub.Unsubscribe(); close(unsubscribed) }()
			select {
			case <-unsubscribed:
				t.Fatal("Unsubscribe returned while a handler was running")
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			<-unsubscribed

			if got := peak.Load(); got != conc {
				t.Errorf("at most %d handlers ran at once; want %d", got, conc)
			}
			for i := range n {
				if body := fmt.Sprintf("m%02d", i); seen[body] != 1 {
					t.Errorf("message %s handled %d times; want 1", body, seen[body])
				}
			}
			_, js := jsClient(t, srv.URL())
			name := ConsumerName("email-service", "user.created")
			poll.Until(t, "every message acked", waitLimit, func() bool { return settled(t, js, name) })
		})
	}
}
