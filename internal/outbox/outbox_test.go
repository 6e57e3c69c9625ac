package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"

	"github.com/shippy/shippy/internal/pgtest"
	"github.com/shippy/shippy/internal/poll"
)

// waitTimeout bounds every wait for the relay; it is a deadline, not a
// measurement.
const waitTimeout = 30 * time.Second

// testDB is one database, on either dialect; open gives another connection
// pool to it, as a second replica would have.
type testDB struct {
	dialect string
	dsn     string
}

func (d testDB) open(t *testing.T) *gorm.DB {
	t.Helper()
	cfg := &gorm.Config{Logger: gormlogger.Discard, NowFunc: func() time.Time { return time.Now().UTC() }}
	var (
		db  *gorm.DB
		err error
	)
	switch d.dialect {
	case "sqlite":
		// As the user-service opens it: wait for locks, WAL, one connection.
		db, err = gorm.Open(sqlite.Open(d.dsn+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"), cfg)
	case "postgres":
		db, err = gorm.Open(postgres.Open(d.dsn), cfg)
	}
	if err != nil {
		t.Fatalf("open %s: %v", d.dialect, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatalf("open %s: %v", d.dialect, err)
	}
	if d.dialect == "sqlite" {
		sqlDB.SetMaxOpenConns(1)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return db
}

// forEachDialect runs f against a fresh, migrated SQLite file and a fresh
// PostgreSQL database.
func forEachDialect(t *testing.T, f func(t *testing.T, tdb testDB, db *gorm.DB)) {
	t.Helper()
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			tdb := testDB{dialect: dialect}
			if dialect == "sqlite" {
				tdb.dsn = filepath.Join(t.TempDir(), "outbox.db")
			} else {
				tdb.dsn = pgtest.NewDatabase(t)
			}
			db := tdb.open(t)
			if err := Migrate(context.Background(), db); err != nil {
				t.Fatalf("Migrate: %v", err)
			}
			f(t, tdb, db)
		})
	}
}

// fakePublisher records what it was given, per event id and in order.
type fakePublisher struct {
	// fail, if set, decides whether the call-th attempt at m fails.
	fail func(ctx context.Context, m Message, call int) error

	mu     sync.Mutex
	calls  map[string]int
	counts map[string]int
	order  []string
	// published receives each published event id; it never blocks.
	published chan string
}

func newFakePublisher() *fakePublisher {
	return &fakePublisher{calls: map[string]int{}, counts: map[string]int{}, published: make(chan string, 2000)}
}

func (p *fakePublisher) Publish(ctx context.Context, m Message) error {
	p.mu.Lock()
	p.calls[m.EventID]++
	call := p.calls[m.EventID]
	p.mu.Unlock()
	if p.fail != nil {
		if err := p.fail(ctx, m, call); err != nil {
			return err
		}
	}
	if want := "payload of " + m.EventID; string(m.Payload) != want {
		return fmt.Errorf("fake publisher: payload %q, want %q", m.Payload, want)
	}
	p.mu.Lock()
	p.counts[m.EventID]++
	p.order = append(p.order, m.EventID)
	p.mu.Unlock()
	select {
	case p.published <- m.EventID:
	default:
	}
	return nil
}

func (p *fakePublisher) snapshot() (counts map[string]int, order []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps(p.counts), slices.Clone(p.order)
}

func maps(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func message(id string) Message {
	return Message{EventID: id, Topic: "user.created", Payload: []byte("payload of " + id)}
}

func eventIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}

// enqueue commits ids in one transaction, in order.
func enqueue(t *testing.T, db *gorm.DB, ids ...string) {
	t.Helper()
	ctx := context.Background()
	err := db.Transaction(func(tx *gorm.DB) error {
		for _, id := range ids {
			if err := Enqueue(ctx, tx, message(id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue %d events: %v", len(ids), err)
	}
}

func rows(t *testing.T, db *gorm.DB) []Event {
	t.Helper()
	var evs []Event
	if err := db.Order("id").Find(&evs).Error; err != nil {
		t.Fatalf("read outbox_events: %v", err)
	}
	return evs
}

func pending(t *testing.T, r *Relay) int64 {
	t.Helper()
	n, err := r.Pending(context.Background())
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return n
}

// waitPublished receives from the publisher until id comes.
func waitPublished(t *testing.T, p *fakePublisher, id string) {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case got := <-p.published:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("event %s not published within %v", id, waitTimeout)
		}
	}
}

// startRun runs r until the test ends or the returned stop is called; stop
// waits for Run to return and fails the test if it does not, promptly.
func startRun(t *testing.T, r *Relay) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run() = %v after cancel; want nil", err)
				}
			case <-time.After(waitTimeout):
				t.Errorf("Run did not return within %v of cancel", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func TestEnqueueCommitRollbackPublishOnceInOrder(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ctx := context.Background()
		committed := eventIDs("committed", 5)
		enqueue(t, db, committed...)
		errRollback := errors.New("user insert failed")
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := Enqueue(ctx, tx, message("rolled-back")); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("Transaction = %v; want %v", err, errRollback)
		}

		pub := newFakePublisher()
		r := New(db, pub, WithLogger(discardLogger()), WithBatchSize(2))
		if n := pending(t, r); n != int64(len(committed)) {
			t.Fatalf("Pending() = %d; want %d", n, len(committed))
		}
		// Two full drains: the second must find nothing to publish again.
		for range 2 {
			if err := r.drain(ctx); err != nil {
				t.Fatalf("drain() = %v; want nil", err)
			}
		}

		counts, order := pub.snapshot()
		if !slices.Equal(order, committed) {
			t.Errorf("published %v; want %v", order, committed)
		}
		for _, id := range committed {
			if counts[id] != 1 {
				t.Errorf("event %s published %d times; want 1", id, counts[id])
			}
		}
		if n := pending(t, r); n != 0 {
			t.Errorf("Pending() = %d after drain; want 0", n)
		}
		if got := r.Stats().Published; got != uint64(len(committed)) {
			t.Errorf("Stats().Published = %d; want %d", got, len(committed))
		}
		for _, ev := range rows(t, db) {
			if ev.PublishedAt == nil || ev.Attempts != 1 || ev.LeaseOwner != "" {
				t.Errorf("row %s: published_at %v, attempts %d, lease_owner %q; want set, 1, empty",
					ev.EventID, ev.PublishedAt, ev.Attempts, ev.LeaseOwner)
			}
		}
	})
}

func TestEnqueueRefuses(t *testing.T) {
	tests := []struct {
		name string
		m    Message
	}{
		{"empty event id", Message{Topic: "user.created"}},
		{"long event id", Message{EventID: strings.Repeat("x", MaxEventIDLen+1), Topic: "user.created"}},
		{"empty topic", Message{EventID: "e-1"}},
		{"long topic", Message{EventID: "e-1", Topic: strings.Repeat("t", MaxTopicLen+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The message is refused before the database is touched.
			if err := Enqueue(context.Background(), nil, tt.m); !errors.Is(err, ErrInvalidMessage) {
				t.Errorf("Enqueue(%+v) = %v; want %v", tt.m, err, ErrInvalidMessage)
			}
		})
	}
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		enqueue(t, db, "dup")
		err := db.Transaction(func(tx *gorm.DB) error { return Enqueue(context.Background(), tx, message("dup")) })
		if err == nil {
			t.Errorf("Enqueue(%q) twice = nil; want a unique violation", "dup")
		}
		if n := len(rows(t, db)); n != 1 {
			t.Errorf("%d rows after a duplicate enqueue; want 1", n)
		}
	})
}

func TestNotifyWakesIdleRelay(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		pub := newFakePublisher()
		// An hour-long sweep: only Notify can get an event out in time.
		r := New(db, pub, WithLogger(discardLogger()), WithSweepInterval(time.Hour))
		startRun(t, r)
		for _, id := range []string{"first", "second", "third"} {
			enqueue(t, db, id)
			r.Notify()
			waitPublished(t, pub, id)
		}
	})
}

func TestSweepFindsUnnotifiedEvents(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		pub := newFakePublisher()
		r := New(db, pub, WithLogger(discardLogger()), WithSweepInterval(20*time.Millisecond))
		startRun(t, r)
		// As if another replica, or this one before a crash, enqueued it.
		enqueue(t, db, "left-over")
		waitPublished(t, pub, "left-over")
	})
}

func TestFailingPublisherRetriesWithBackoff(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		errBroker := errors.New("broker down")
		pub := newFakePublisher()
		// "flaky" fails 3 times, "flaky-later" once; the others never.
		pub.fail = func(_ context.Context, m Message, call int) error {
			if (m.EventID == "flaky" && call <= 3) || (m.EventID == "flaky-later" && call <= 1) {
				return errBroker
			}
			return nil
		}
		const lo, hi = 10 * time.Millisecond, 25 * time.Millisecond
		r := New(db, pub, WithLogger(discardLogger()), WithBackoff(lo, hi), WithSweepInterval(time.Hour))
		var (
			mu     sync.Mutex
			sleeps []time.Duration
		)
		r.sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			sleeps = append(sleeps, d)
			mu.Unlock()
			return ctx.Err()
		}
		enqueue(t, db, "flaky", "after-flaky-1", "after-flaky-2")
		stop := startRun(t, r)
		r.Notify()
		waitPublished(t, pub, "after-flaky-2")
		enqueue(t, db, "flaky-later")
		r.Notify()
		waitPublished(t, pub, "flaky-later")
		stop()

		counts, order := pub.snapshot()
		want := []string{"flaky", "after-flaky-1", "after-flaky-2", "flaky-later"}
		if !slices.Equal(order, want) {
			t.Errorf("published %v; want %v (no event overtakes a failing one)", order, want)
		}
		for id, n := range counts {
			if n != 1 {
				t.Errorf("event %s published %d times; want 1", id, n)
			}
		}
		wantAttempts := map[string]int{"flaky": 4, "after-flaky-1": 1, "after-flaky-2": 1, "flaky-later": 2}
		for _, ev := range rows(t, db) {
			if ev.PublishedAt == nil || ev.Attempts != wantAttempts[ev.EventID] {
				t.Errorf("row %s: published_at %v, attempts %d; want set, %d",
					ev.EventID, ev.PublishedAt, ev.Attempts, wantAttempts[ev.EventID])
			}
			if failed := wantAttempts[ev.EventID] > 1; failed != strings.Contains(ev.LastError, errBroker.Error()) {
				t.Errorf("row %s: last_error %q after %d attempts", ev.EventID, ev.LastError, ev.Attempts)
			}
		}
		if got := r.Stats().Failed; got != 4 {
			t.Errorf("Stats().Failed = %d; want 4", got)
		}

		// Three waits growing to the cap, then, after a success, the first
		// wait again.
		mu.Lock()
		defer mu.Unlock()
		bases := []time.Duration{lo, 2 * lo, hi, lo}
		if len(sleeps) != len(bases) {
			t.Fatalf("relay backed off %d times (%v); want %d", len(sleeps), sleeps, len(bases))
		}
		for i, base := range bases {
			if sleeps[i] < base/2 || sleeps[i] > base {
				t.Errorf("backoff %d = %v; want within [%v, %v]", i, sleeps[i], base/2, base)
			}
		}
	})
}

func TestNextBackoff(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 10 * time.Second
	tests := []struct{ cur, want time.Duration }{
		{0, lo},
		{lo, 2 * lo},
		{3200 * time.Millisecond, 6400 * time.Millisecond},
		{6400 * time.Millisecond, hi},
		{hi, hi},
	}
	for _, tt := range tests {
		if got := nextBackoff(tt.cur, lo, hi); got != tt.want {
			t.Errorf("nextBackoff(%v) = %v; want %v", tt.cur, got, tt.want)
		}
	}
}

func TestConcurrentRelaysPublishEachEventOnce(t *testing.T) {
	forEachDialect(t, func(t *testing.T, tdb testDB, db *gorm.DB) {
		ids := eventIDs("e", 500)
		enqueue(t, db, ids...)
		replicas := 3
		if tdb.dialect == "sqlite" {
			replicas = 2
		}
		pub := newFakePublisher()
		relays := make([]*Relay, replicas)
		stops := make([]func(), replicas)
		for i := range relays {
			// Each relay on its own pool, as in its own process.
			relays[i] = New(tdb.open(t), pub, WithLogger(discardLogger()),
				WithBatchSize(10), WithSweepInterval(10*time.Millisecond))
			stops[i] = startRun(t, relays[i])
		}
		for _, r := range relays {
			r.Notify()
		}
		poll.Until(t, "every event published", waitTimeout, func() bool { return pending(t, relays[0]) == 0 })
		for _, stop := range stops {
			stop()
		}

		counts, _ := pub.snapshot()
		for _, id := range ids {
			if counts[id] != 1 {
				t.Errorf("event %s published %d times; want 1", id, counts[id])
			}
		}
		if len(counts) != len(ids) {
			t.Errorf("%d distinct events published; want %d", len(counts), len(ids))
		}
		var total uint64
		perRelay := make([]uint64, replicas)
		for i, r := range relays {
			perRelay[i] = r.Stats().Published
			total += perRelay[i]
		}
		if total != uint64(len(ids)) {
			t.Errorf("relays marked %v = %d events published; want %d", perRelay, total, len(ids))
		}
		t.Logf("events per relay: %v", perRelay)
	})
}

func TestStopMidwayAndRestart(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ids := eventIDs("e", 50)
		enqueue(t, db, ids...)

		// The 24th publish stops the relay and never completes: rows 21-23
		// of the batch of 21-30 are published, the rest not.
		const stopAt = 24
		var (
			stopOnce sync.Once
			calls    int
			mu       sync.Mutex
		)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		first := newFakePublisher()
		first.fail = func(pctx context.Context, _ Message, _ int) error {
			mu.Lock()
			calls++
			n := calls
			mu.Unlock()
			if n < stopAt {
				return nil
			}
			stopOnce.Do(cancel)
			<-pctx.Done()
			return pctx.Err()
		}
		r1 := New(db, first, WithLogger(discardLogger()), WithBatchSize(10))
		if err := r1.Run(ctx); err != nil {
			t.Fatalf("Run() = %v; want nil", err)
		}

		counts, _ := first.snapshot()
		if len(counts) != stopAt-1 {
			t.Fatalf("first relay published %d events; want %d", len(counts), stopAt-1)
		}
		for _, ev := range rows(t, db) {
			// A marked row was published, and a published row was marked
			// before the relay stopped.
			if marked := ev.PublishedAt != nil; marked != (counts[ev.EventID] == 1) {
				t.Errorf("row %s: marked %v, published %d times", ev.EventID, marked, counts[ev.EventID])
			}
			if ev.PublishedAt == nil && (ev.Attempts != 0 || ev.LeaseOwner != "") {
				t.Errorf("row %s pending: attempts %d, lease_owner %q; want 0, empty (stopping is no failure)",
					ev.EventID, ev.Attempts, ev.LeaseOwner)
			}
		}

		second := newFakePublisher()
		r2 := New(db, second, WithLogger(discardLogger()), WithBatchSize(10))
		stop := startRun(t, r2)
		r2.Notify()
		poll.Until(t, "every event published after the restart", waitTimeout, func() bool { return pending(t, r2) == 0 })
		stop()

		again, _ := second.snapshot()
		for _, id := range ids {
			if n := counts[id] + again[id]; n != 1 {
				t.Errorf("event %s published %d times over both runs; want 1", id, n)
			}
		}
	})
}

func TestPruneDeletesOnlyOldPublishedRows(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ctx := context.Background()
		now := time.Now()
		publishAt := func(at time.Time, ids ...string) {
			t.Helper()
			enqueue(t, db, ids...)
			r := New(db, newFakePublisher(), WithLogger(discardLogger()), WithClock(func() time.Time { return at }))
			if err := r.drain(ctx); err != nil {
				t.Fatalf("drain() = %v; want nil", err)
			}
		}
		old := eventIDs("old", 5)
		publishAt(now.Add(-48*time.Hour), old...)
		publishAt(now.Add(-time.Hour), "recent")
		enqueue(t, db, "pending") // never published, however old it gets

		// A failing broker keeps "pending" pending; pruning goes on meanwhile.
		failing := publisherFunc(func(context.Context, Message) error { return errors.New("broker down") })
		r := New(db, failing, WithLogger(discardLogger()), WithRetention(24*time.Hour),
			WithBatchSize(2), WithPruneInterval(10*time.Millisecond), WithBackoff(5*time.Millisecond, 20*time.Millisecond),
			WithClock(func() time.Time { return now }))
		stop := startRun(t, r)
		poll.Until(t, "old rows pruned", waitTimeout, func() bool { return r.Stats().Pruned >= uint64(len(old)) })
		stop()

		var left []string
		for _, ev := range rows(t, db) {
			left = append(left, ev.EventID)
		}
		if want := []string{"recent", "pending"}; !slices.Equal(left, want) {
			t.Errorf("rows after pruning: %v; want %v", left, want)
		}
		if n, err := r.Prune(ctx); err != nil || n != 0 {
			t.Errorf("Prune() again = %d, %v; want 0, nil", n, err)
		}
		if got := r.Stats().Pruned; got != uint64(len(old)) {
			t.Errorf("Stats().Pruned = %d; want %d", got, len(old))
		}
	})
}

type publisherFunc func(ctx context.Context, m Message) error

func (f publisherFunc) Publish(ctx context.Context, m Message) error { return f(ctx, m) }

func TestRunReturnsWhilePublishBlocks(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		enqueue(t, db, "stuck")
		called := make(chan struct{}, 1)
		blocking := publisherFunc(func(ctx context.Context, _ Message) error {
			select {
			case called <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		})
		// An hour's publish timeout: only the cancel can end the publish.
		r := New(db, blocking, WithLogger(discardLogger()), WithPublishTimeout(time.Hour))
		stop := startRun(t, r)
		r.Notify()
		select {
		case <-called:
		case <-time.After(waitTimeout):
			t.Fatalf("publisher not called within %v", waitTimeout)
		}
		stop() // fails the test unless Run returns promptly

		evs := rows(t, db)
		if len(evs) != 1 || evs[0].PublishedAt != nil || evs[0].Attempts != 0 || evs[0].LeaseOwner != "" {
			t.Errorf("row after a stop mid-publish: %+v; want pending, 0 attempts, no lease", evs)
		}
	})
}

func TestDrain(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		errBroker := errors.New("broker down")
		ids := eventIDs("drain", 7)
		enqueue(t, db, ids...)
		pub := newFakePublisher()
		pub.fail = func(_ context.Context, m Message, call int) error {
			if m.EventID == ids[4] && call == 1 {
				return errBroker
			}
			return nil
		}
		// No Run: Drain alone publishes, in batches of 3.
		r := New(db, pub, WithLogger(discardLogger()), WithBatchSize(3))

		// The first failure ends the drain: no wait, no retry.
		if err := r.Drain(context.Background()); !errors.Is(err, errBroker) {
			t.Fatalf("Drain with a failing publish = %v; want %v", err, errBroker)
		}
		if n := pending(t, r); n != 3 {
			t.Errorf("Pending after Drain stopped at the fifth of 7 events = %d; want 3", n)
		}
		if err := r.Drain(context.Background()); err != nil {
			t.Fatalf("Drain = %v; want nil", err)
		}
		if n := pending(t, r); n != 0 {
			t.Errorf("Pending after Drain = %d; want 0", n)
		}
		if _, order := pub.snapshot(); !slices.Equal(order, ids) {
			t.Errorf("published %v; want %v", order, ids)
		}
	})
}

func TestDrainReturnsWhenCtxEnds(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		enqueue(t, db, "stuck")
		blocking := publisherFunc(func(ctx context.Context, _ Message) error {
			<-ctx.Done()
			return ctx.Err()
		})
		r := New(db, blocking, WithLogger(discardLogger()), WithPublishTimeout(time.Hour))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := r.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Drain with a publish outlasting ctx = %v; want %v", err, context.DeadlineExceeded)
		}
		if n := pending(t, r); n != 1 {
			t.Errorf("Pending after an interrupted Drain = %d; want 1", n)
		}
	})
}
