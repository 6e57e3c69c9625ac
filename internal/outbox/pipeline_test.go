package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/shippy/shippy/internal/poll"
)

// inFlightPublisher wraps a fakePublisher and records how many publishes
// ran at once; hold, if set, keeps each publish until it is closed.
type inFlightPublisher struct {
	*fakePublisher
	cur, peak atomic.Int64
	hold      chan struct{}
}

func (p *inFlightPublisher) Publish(ctx context.Context, m Message) error {
	n := p.cur.Add(1)
	defer p.cur.Add(-1)
	for old := p.peak.Load(); n > old && !p.peak.CompareAndSwap(old, n); old = p.peak.Load() {
	}
	if p.hold != nil {
		select {
		case <-p.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.fakePublisher.Publish(ctx, m)
}

// TestMaxInFlightPublishesConcurrentlyOnce: a pipelined relay has up to
// WithMaxInFlight publishes out at once, publishes and marks every event
// once, and retries a failed one without publishing the others again.
func TestMaxInFlightPublishesConcurrentlyOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		const inFlight = 8
		ids := eventIDs("p", 100)
		enqueue(t, db, ids...)
		errBroker := errors.New("broker hiccup")
		pub := &inFlightPublisher{fakePublisher: newFakePublisher(), hold: make(chan struct{})}
		pub.fail = func(_ context.Context, m Message, call int) error {
			if m.EventID == "p-0003" && call == 1 {
				return errBroker
			}
			return nil
		}
		r := New(db, pub, WithLogger(discardLogger()), WithMaxInFlight(inFlight),
			WithBackoff(time.Millisecond, 5*time.Millisecond), WithBatchSize(50))
		startRun(t, r)
		r.Notify()
		poll.Until(t, fmt.Sprintf("%d publishes out at once", inFlight), waitTimeout, func() bool { return pub.cur.Load() == inFlight })
		close(pub.hold)
		// Stats count a batch right after its commit: wait for both.
		poll.Until(t, "every event published and counted", waitTimeout, func() bool {
			return pending(t, r) == 0 && r.Stats().Published == uint64(len(ids))
		})

		if got := pub.peak.Load(); got != inFlight {
			t.Errorf("at most %d publishes ran at once; want %d", got, inFlight)
		}
		counts, _ := pub.snapshot()
		for _, id := range ids {
			if counts[id] != 1 {
				t.Errorf("event %s published %d times; want 1", id, counts[id])
			}
		}
		for _, ev := range rows(t, db) {
			want := 1
			if ev.EventID == "p-0003" {
				want = 2
			}
			if ev.PublishedAt == nil || ev.Attempts != want {
				t.Errorf("row %s: published_at %v, attempts %d; want set, %d", ev.EventID, ev.PublishedAt, ev.Attempts, want)
			}
			if failed := want > 1; failed != strings.Contains(ev.LastError, errBroker.Error()) {
				t.Errorf("row %s: last_error %q after %d attempts", ev.EventID, ev.LastError, ev.Attempts)
			}
		}
		if st := r.Stats(); st.Published != uint64(len(ids)) || st.Failed != 1 {
			t.Errorf("Stats() = %+v; want %d published, 1 failed", st, len(ids))
		}
	})
}

// TestMaxInFlightStopMidway: a pipelined relay stopped while publishes are
// out marks what was published and leaves the rest pending and untouched;
// a restarted relay publishes the rest, each event once over both runs.
func TestMaxInFlightStopMidway(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ids := eventIDs("s", 40)
		enqueue(t, db, ids...)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var calls atomic.Int64
		first := newFakePublisher()
		first.fail = func(pctx context.Context, _ Message, _ int) error {
			if calls.Add(1) <= 12 {
				return nil
			}
			cancel()
			<-pctx.Done()
			return pctx.Err()
		}
		r1 := New(db, first, WithLogger(discardLogger()), WithMaxInFlight(4), WithBatchSize(10))
		if err := r1.Run(ctx); err != nil {
			t.Fatalf("Run() = %v; want nil", err)
		}
		counts, _ := first.snapshot()
		for _, ev := range rows(t, db) {
			if marked := ev.PublishedAt != nil; marked != (counts[ev.EventID] == 1) {
				t.Errorf("row %s: marked %v, published %d times", ev.EventID, marked, counts[ev.EventID])
			}
			if ev.PublishedAt == nil && (ev.Attempts != 0 || ev.LeaseOwner != "") {
				t.Errorf("row %s pending: attempts %d, lease_owner %q; want 0, empty", ev.EventID, ev.Attempts, ev.LeaseOwner)
			}
		}
		second := newFakePublisher()
		r2 := New(db, second, WithLogger(discardLogger()), WithMaxInFlight(4), WithBatchSize(10))
		startRun(t, r2)
		r2.Notify()
		poll.Until(t, "every event published after the restart", waitTimeout, func() bool { return pending(t, r2) == 0 })
		again, _ := second.snapshot()
		for _, id := range ids {
			if n := counts[id] + again[id]; n != 1 {
				t.Errorf("event %s published %d times over both runs; want 1", id, n)
			}
		}
	})
}

// TestReplicasShareTheOutbox (issue 13.2): two relays on their own pools,
// configured as the user-service's (pipelined), each notified by its own
// replica's Creates while those go on: every event is published exactly
// once, and each replica publishes a share (none starves).
func TestReplicasShareTheOutbox(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb testDB, _ *gorm.DB) {
		const replicas, perReplica = 2, 300
		pub := newFakePublisher()
		relays := make([]*Relay, replicas)
		pools := make([]*gorm.DB, replicas)
		for i := range relays {
			pools[i] = tdb.open(t)
			relays[i] = New(pools[i], pub, WithLogger(discardLogger()), WithMaxInFlight(16),
				WithSweepInterval(50*time.Millisecond))
			startRun(t, relays[i])
		}
		var wg sync.WaitGroup
		for i := range relays {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range perReplica {
					id := fmt.Sprintf("r%d-%04d", i, j)
					if err := pools[i].Transaction(func(tx *gorm.DB) error {
						return Enqueue(context.Background(), tx, message(id))
					}); err != nil {
						t.Errorf("enqueue %s: %v", id, err)
						return
					}
					relays[i].Notify()
				}
			}()
		}
		wg.Wait()
		// Stats count a batch right after its commit: wait for both.
		poll.Until(t, "every event published and counted", waitTimeout, func() bool {
			var n uint64
			for _, r := range relays {
				n += r.Stats().Published
			}
			return pending(t, relays[0]) == 0 && n >= replicas*perReplica
		})

		counts, _ := pub.snapshot()
		if len(counts) != replicas*perReplica {
			t.Errorf("%d distinct events published; want %d", len(counts), replicas*perReplica)
		}
		for id, n := range counts {
			if n != 1 {
				t.Errorf("event %s published %d times; want 1", id, n)
			}
		}
		var total uint64
		shares := make([]uint64, replicas)
		for i, r := range relays {
			shares[i] = r.Stats().Published
			total += shares[i]
			if shares[i] == 0 {
				t.Errorf("relay %d published nothing; want a share of the work", i)
			}
		}
		if total != replicas*perReplica {
			t.Errorf("relays marked %v = %d published; want %d", shares, total, replicas*perReplica)
		}
		t.Logf("events per relay: %v", shares)
	})
}

// batchPublisher is a BatchPublisher over a fakePublisher that records the
// size of each batch.
type batchPublisher struct {
	*fakePublisher
	mu    sync.Mutex
	sizes []int
}

func (p *batchPublisher) PublishBatch(ctx context.Context, ms []Message) []error {
	p.mu.Lock()
	p.sizes = append(p.sizes, len(ms))
	p.mu.Unlock()
	errs := make([]error, len(ms))
	for i, m := range ms {
		errs[i] = p.Publish(ctx, m)
	}
	return errs
}

// TestMaxInFlightUsesBatchPublisher: a pipelined relay hands a
// BatchPublisher at most WithMaxInFlight rows per call, retries a failed
// event after a backoff, and publishes every event once.
func TestMaxInFlightUsesBatchPublisher(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		const inFlight = 16
		ids := eventIDs("b", 100)
		enqueue(t, db, ids...)
		pub := &batchPublisher{fakePublisher: newFakePublisher()}
		pub.fail = func(_ context.Context, m Message, call int) error {
			if m.EventID == "b-0020" && call == 1 {
				return errors.New("broker hiccup")
			}
			return nil
		}
		r := New(db, pub, WithLogger(discardLogger()), WithMaxInFlight(inFlight),
			WithBackoff(time.Millisecond, 5*time.Millisecond))
		startRun(t, r)
		r.Notify()
		// Stats count a batch right after its commit: wait for both.
		poll.Until(t, "every event published and counted", waitTimeout, func() bool {
			return pending(t, r) == 0 && r.Stats().Published == uint64(len(ids))
		})
		counts, _ := pub.snapshot()
		for _, id := range ids {
			if counts[id] != 1 {
				t.Errorf("event %s published %d times; want 1", id, counts[id])
			}
		}
		pub.mu.Lock()
		defer pub.mu.Unlock()
		for _, n := range pub.sizes {
			if n > inFlight {
				t.Errorf("batch sizes %v; want each at most %d", pub.sizes, inFlight)
				break
			}
		}
		if pub.sizes[0] != inFlight {
			t.Errorf("first batch of %d events; want %d", pub.sizes[0], inFlight)
		}
		if st := r.Stats(); st.Published != uint64(len(ids)) || st.Failed != 1 {
			t.Errorf("Stats() = %+v; want %d published, 1 failed", st, len(ids))
		}
	})
}

// TestMaxInFlightBrokerDown: while every publish fails, a pipelined relay
// records the attempt and the error on each row it tried, publishes nothing,
// and once the broker is back publishes every event once.
func TestMaxInFlightBrokerDown(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ids := eventIDs("d", 30)
		enqueue(t, db, ids...)
		var down atomic.Bool
		down.Store(true)
		pub := &batchPublisher{fakePublisher: newFakePublisher()}
		pub.fail = func(context.Context, Message, int) error {
			if down.Load() {
				return errors.New("nats: no servers available")
			}
			return nil
		}
		r := New(db, pub, WithLogger(discardLogger()), WithMaxInFlight(100),
			WithBackoff(time.Millisecond, 5*time.Millisecond))
		startRun(t, r)
		r.Notify()
		poll.Until(t, "two failed rounds", waitTimeout, func() bool { return r.Stats().Failed >= 2*uint64(len(ids)) })
		down.Store(false)
		poll.Until(t, "every event published and counted", waitTimeout, func() bool {
			return pending(t, r) == 0 && r.Stats().Published == uint64(len(ids))
		})
		counts, _ := pub.snapshot()
		for _, id := range ids {
			if counts[id] != 1 {
				t.Errorf("event %s published %d times; want 1", id, counts[id])
			}
		}
		for _, ev := range rows(t, db) {
			if ev.Attempts < 3 || !strings.Contains(ev.LastError, "no servers available") {
				t.Errorf("row %s: attempts %d, last_error %q; want at least 3 and the broker's error", ev.EventID, ev.Attempts, ev.LastError)
			}
		}
	})
}
