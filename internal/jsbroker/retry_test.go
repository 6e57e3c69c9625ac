package jsbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// A subscription's WithRetry schedule replaces the broker's MaxDeliver and
// Backoff for that subscription only: len(backoff)+1 deliveries at most.
func TestWithRetryOverridesTheBrokerSchedule(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name      string
		retry     []time.Duration // nil: the broker's MaxDeliver(2)
		failFirst int
		wantTries int
		wantDead  bool
	}{
		{"broker default dead-letters after 2", nil, 4, 2, true},
		{"six deliveries outlast four failures", []time.Duration{10 * ms, 10 * ms, 10 * ms, 10 * ms, 10 * ms}, 4, 5, false},
		{"three deliveries, then dead-lettered", []time.Duration{10 * ms, 10 * ms}, 4, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := natstest.Start(t)
			b := newBroker(t, srv.URL(), MaxDeliver(2))
			nc, js := jsClient(t, srv.URL())
			dead := watchDeadLetters(t, nc, b, "user.created")
			rec := &recorder{fail: func(_ string, try int) error {
				if try <= tt.failFirst {
					return fmt.Errorf("mailer down (try %d)", try)
				}
				return nil
			}}
			ctx := context.Background()
			if tt.retry != nil {
				ctx = WithRetry(ctx, tt.retry...)
			}
			subscribe(t, b, "user.created", rec.handle, broker.Queue("email-service"), broker.SubscribeContext(ctx))
			publish(t, b, "user.created", "flaky", nil)

			consumer := ConsumerName("email-service", "user.created")
			poll.Until(t, "the message to be acked or dead-lettered", waitLimit, func() bool {
				st := b.Stats()
				return st.Acked+st.DeadLettered == 1 && settled(t, js, consumer)
			})
			if got := rec.triesOf("flaky"); got != tt.wantTries {
				t.Errorf("handler called %d times; want %d", got, tt.wantTries)
			}
			if st := b.Stats(); (st.DeadLettered == 1) != tt.wantDead {
				t.Fatalf("Stats() = %+v; want dead-lettered %v", st, tt.wantDead)
			}
			if !tt.wantDead {
				if got := len(rec.bodies()); got != 1 {
					t.Errorf("handled %d times; want 1", got)
				}
				return
			}
			msg, err := dead.NextMsg(waitLimit)
			if err != nil {
				t.Fatalf("no dead letter: %v", err)
			}
			if got, want := msg.Header.Get(HeaderDeadLetterDeliveries), fmt.Sprint(tt.wantTries); got != want {
				t.Errorf("dead letter's %s = %q; want %q", HeaderDeadLetterDeliveries, got, want)
			}
		})
	}
}
