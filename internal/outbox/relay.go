package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// Publisher sends one event to the broker. It must honour ctx: the relay
// bounds every publish with a timeout, and the claim of a row lasts only as
// long as a publish that respects it.
type Publisher interface {
	Publish(ctx context.Context, m Message) error
}

// BatchPublisher is a Publisher that can also send several events at once
// and wait for them together (JetStream's asynchronous publish): a relay
// with WithMaxInFlight above 1 hands it up to that many rows per call.
// errs[i] is the outcome of ms[i]; the call must honour ctx as Publish does.
type BatchPublisher interface {
	Publisher
	PublishBatch(ctx context.Context, ms []Message) (errs []error)
}

// Stats are the relay's counters since New.
type Stats struct {
	// Published counts events published and marked as such.
	Published uint64
	// Failed counts publishes that returned an error (each is retried).
	Failed uint64
	// Pruned counts published rows deleted after the retention.
	Pruned uint64
}

// Defaults of the options.
const (
	DefaultBatchSize      = 100
	DefaultSweepInterval  = time.Second
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	DefaultPublishTimeout = 5 * time.Second
	DefaultRetention      = 24 * time.Hour
	DefaultPruneInterval  = time.Minute
	// DefaultMaxInFlight publishes one event at a time, in id order.
	DefaultMaxInFlight = 1
	// dbTimeout bounds each statement the relay runs.
	dbTimeout = 10 * time.Second
)

type config struct {
	batchSize      int
	sweepInterval  time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	publishTimeout time.Duration
	retention      time.Duration
	pruneInterval  time.Duration
	maxInFlight    int
	log            *slog.Logger
	now            func() time.Time
}

// Option configures a Relay. A zero or negative value keeps the default.
type Option func(*config)

// WithBatchSize sets how many rows a relay claims (and prunes) at once.
func WithBatchSize(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.batchSize = n
		}
	}
}

// WithSweepInterval sets how often an idle relay looks for rows nobody
// notified it of: left by a crashed replica, or by another replica's Enqueue.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.sweepInterval = d
		}
	}
}

// WithBackoff sets the first and the longest wait after a failure; the wait
// doubles from lo to hi, with jitter, and resets after a success.
func WithBackoff(lo, hi time.Duration) Option {
	return func(c *config) {
		if lo > 0 {
			c.backoffMin = lo
		}
		if hi > 0 {
			c.backoffMax = hi
		}
	}
}

// WithPublishTimeout bounds one publish.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.publishTimeout = d
		}
	}
}

// WithMaxInFlight lets the relay publish up to n events of a batch at once
// instead of one after the other: a batch then waits about one broker round
// trip (a JetStream stream's ack) instead of one per event. The price is
// order: events of one batch may be stored in any order, and one that fails
// can be overtaken by those published beside it (the relay starts no more
// publishes once one failed, and retries the failed ones after a backoff).
// Use it for topics whose consumers do not depend on order. Default 1: in
// order, and a failed event stops its batch.
func WithMaxInFlight(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxInFlight = n
		}
	}
}

// WithRetention sets how long published rows are kept before pruning.
func WithRetention(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.retention = d
		}
	}
}

// WithPruneInterval sets how often Run prunes.
func WithPruneInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.pruneInterval = d
		}
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithClock sets the clock that stamps published_at and leases and dates the
// retention. Relays sharing a table must share the wall clock.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// Relay publishes the outbox's pending rows. Its methods are safe for
// concurrent use; run one Run per process.
type Relay struct {
	db       *gorm.DB
	pub      Publisher
	cfg      config
	lockRows bool
	wake     chan struct{}
	// sleep waits out a backoff; tests replace it to observe the waits.
	sleep func(ctx context.Context, d time.Duration) error

	published atomic.Uint64
	failed    atomic.Uint64
	pruned    atomic.Uint64
}

// New returns a relay that publishes db's outbox rows with pub. Rows are
// claimed with FOR UPDATE SKIP LOCKED when db is PostgreSQL and with a lease
// otherwise (SQLite).
func New(db *gorm.DB, pub Publisher, opts ...Option) *Relay {
	cfg := config{
		batchSize:      DefaultBatchSize,
		sweepInterval:  DefaultSweepInterval,
		backoffMin:     DefaultBackoffMin,
		backoffMax:     DefaultBackoffMax,
		publishTimeout: DefaultPublishTimeout,
		retention:      DefaultRetention,
		pruneInterval:  DefaultPruneInterval,
		maxInFlight:    DefaultMaxInFlight,
		log:            slog.Default(),
		now:            time.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.backoffMax < cfg.backoffMin {
		cfg.backoffMax = cfg.backoffMin
	}
	return &Relay{
		db:       db,
		pub:      pub,
		cfg:      cfg,
		lockRows: db.Dialector.Name() == "postgres",
		wake:     make(chan struct{}, 1),
		sleep:    sleepCtx,
	}
}

// Notify wakes Run to publish at once; call it after committing a
// transaction that enqueued. It never blocks, and notifications arriving
// while the relay is busy coalesce into one more pass.
func (r *Relay) Notify() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters.
func (r *Relay) Stats() Stats {
	return Stats{Published: r.published.Load(), Failed: r.failed.Load(), Pruned: r.pruned.Load()}
}

// Pending counts the rows not yet published, by any relay.
func (r *Relay) Pending(ctx context.Context) (int64, error) {
	var n int64
	if err := r.db.WithContext(ctx).Model(&Event{}).Where("published_at IS NULL").Count(&n).Error; err != nil {
		return 0, fmt.Errorf("outbox: count pending events: %w", err)
	}
	return n, nil
}

// Run publishes pending rows until ctx is done, then returns nil. It drains
// the outbox in batches, then waits for Notify or the sweep interval, and
// prunes now and then. Broker and database errors do not stop it: they are
// logged and retried after a backoff. A publish in flight is cancelled with
// ctx; the rows published before it are still marked.
func (r *Relay) Run(ctx context.Context) error {
	sweep := time.NewTicker(r.cfg.sweepInterval)
	defer sweep.Stop()
	prune := time.NewTicker(r.cfg.pruneInterval)
	defer prune.Stop()

	var backoff time.Duration
	for {
		// Checked on every pass too, so that pruning goes on while the
		// broker fails and the relay never gets idle.
		select {
		case <-prune.C:
			r.prune(ctx)
		default:
		}
		err := r.drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			backoff = nextBackoff(backoff, r.cfg.backoffMin, r.cfg.backoffMax)
			wait := jitter(backoff)
			r.cfg.log.WarnContext(ctx, "outbox relay: retrying after error", "retry_in", wait, "err", err)
			// Notify is not heeded while backing off: new events would only
			// hammer a failing broker. They wait in the channel instead.
			if r.sleep(ctx, wait) != nil {
				return nil
			}
			continue
		}
		backoff = 0

		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-sweep.C:
		case <-prune.C:
			r.prune(ctx)
		}
	}
}

func (r *Relay) prune(ctx context.Context) {
	if _, err := r.Prune(ctx); err != nil && ctx.Err() == nil {
		r.cfg.log.WarnContext(ctx, "outbox relay: prune failed", "err", err)
	}
}

// Drain publishes the pending rows once, at once: it returns nil when none
// is left that this relay could claim (rows another relay holds are its
// own to publish), or the error of the first failed publish or statement,
// or ctx's error if ctx ended first. It neither waits nor retries. A
// graceful stop calls it after Run returned (Run ignores Notify while it
// backs off), bounded by ctx, so that what was committed goes out now.
func (r *Relay) Drain(ctx context.Context) error {
	if err := r.drain(ctx); err != nil {
		return fmt.Errorf("outbox: drain: %w", err)
	}
	return nil
}

// drain publishes batches until the outbox has no pending row left for this
// relay, or a publish or a database statement fails, or ctx is done.
func (r *Relay) drain(ctx context.Context) error {
	for ctx.Err() == nil {
		claimed, err := r.publishBatch(ctx)
		if err != nil {
			return err
		}
		// A short batch is the end of the outbox, unless ctx ended it.
		if claimed < r.cfg.batchSize && ctx.Err() == nil {
			return nil
		}
	}
	return ctx.Err()
}

// batchResult is what publishing a claimed batch did.
type batchResult struct {
	published []Event
	// failed are the rows whose publish failed, in id order; one at most
	// when publishing in order (the rows after it were not tried).
	failed []failure
}

type failure struct {
	ev  *Event
	err error
}

// publishBatch claims up to batchSize pending rows, publishes them in order
// and records the outcome. It returns how many rows it claimed, and the
// error of a failed publish or statement.
//
// Database statements run on a context detached from ctx, so that a relay
// being stopped still marks what it has published (and, on SQLite, releases
// what it has not) instead of leaving it to be published again.
func (r *Relay) publishBatch(ctx context.Context) (int, error) {
	lease := r.leaseDuration()
	dbCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lease+2*dbTimeout)
	defer cancel()
	deadline := r.cfg.now().Add(lease)
	if r.lockRows {
		return r.publishBatchLocked(ctx, dbCtx, deadline)
	}
	return r.publishBatchLeased(ctx, dbCtx, deadline)
}

// leaseDuration is how long a claim lasts: a few publish timeouts, so that a
// batch makes progress while a crashed relay's rows wait not much longer.
func (r *Relay) leaseDuration() time.Duration {
	return max(30*time.Second, 6*r.cfg.publishTimeout)
}

func (r *Relay) publishBatchLocked(ctx, dbCtx context.Context, deadline time.Time) (int, error) {
	var (
		claimed int
		res     batchResult
	)
	err := r.db.WithContext(dbCtx).Transaction(func(tx *gorm.DB) error {
		var rows []Event
		qctx, cancel := context.WithTimeout(dbCtx, dbTimeout)
		err := tx.WithContext(qctx).
			Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate, Options: clause.LockingOptionsSkipLocked}).
			Where("published_at IS NULL").Order("id").Limit(r.cfg.batchSize).
			Find(&rows).Error
		cancel()
		if err != nil {
			return fmt.Errorf("claim events: %w", err)
		}
		claimed = len(rows)
		r.logClaimed(ctx, rows)
		res = r.publishRows(ctx, rows, deadline)
		if claimed > 0 {
			// The commit only marks rows published: if a crash of
			// PostgreSQL loses it, the rows are published again, which
			// consumers drop by event id (at least once, as ever). Not
			// waiting for the WAL flush takes a disk sync (about 1 ms here)
			// off every batch; set after the publishes, it adds no wait
			// before them.
			sctx, cancel := context.WithTimeout(dbCtx, dbTimeout)
			err := tx.WithContext(sctx).Exec("SET LOCAL synchronous_commit = off").Error
			cancel()
			if err != nil {
				return fmt.Errorf("relax commit: %w", err)
			}
		}
		return r.record(dbCtx, tx, res, "")
	})
	return claimed, r.finish(ctx, res, err)
}

func (r *Relay) publishBatchLeased(ctx, dbCtx context.Context, deadline time.Time) (int, error) {
	owner, err := newLeaseOwner()
	if err != nil {
		return 0, err
	}
	qctx, cancel := context.WithTimeout(dbCtx, dbTimeout)
	defer cancel()
	// One UPDATE claims the rows: SQLite runs it under its write lock, so two
	// relays never lease the same row while the lease lasts.
	free := r.db.Model(&Event{}).Select("id").
		Where("published_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at < ?)", r.cfg.now().UTC()).
		Order("id").Limit(r.cfg.batchSize)
	err = r.db.WithContext(qctx).Model(&Event{}).Where("id IN (?)", free).
		Updates(map[string]any{"lease_owner": owner, "lease_expires_at": deadline.UTC()}).Error
	if err != nil {
		return 0, fmt.Errorf("lease events: %w", err)
	}
	var rows []Event
	err = r.db.WithContext(qctx).Where("lease_owner = ? AND published_at IS NULL", owner).Order("id").Find(&rows).Error
	if err != nil {
		// The lease expires by itself.
		return 0, fmt.Errorf("read leased events: %w", err)
	}
	r.logClaimed(ctx, rows)
	res := r.publishRows(ctx, rows, deadline)
	err = r.db.WithContext(dbCtx).Transaction(func(tx *gorm.DB) error {
		return r.record(dbCtx, tx, res, owner)
	})
	return len(rows), r.finish(ctx, res, err)
}

// logClaimed logs each claimed row at debug level: with the user-service's
// "user created" and the email-service's lines it times each hop of an
// event (bench's BenchmarkCreateToEmailStages reads them).
func (r *Relay) logClaimed(ctx context.Context, rows []Event) {
	if !r.cfg.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	for i := range rows {
		r.cfg.log.DebugContext(ctx, "outbox event claimed", append([]any{
			"event_id", rows[i].EventID, "topic", rows[i].Topic, "attempts", rows[i].Attempts}, rows[i].requestIDAttr()...)...)
	}
}

// publishRows publishes rows in order until one fails, ctx is done, or the
// next publish could outlast the claim's deadline; with WithMaxInFlight, up
// to that many at once (see publishRowsPipelined).
func (r *Relay) publishRows(ctx context.Context, rows []Event, deadline time.Time) batchResult {
	if r.cfg.maxInFlight > 1 && len(rows) > 1 {
		return r.publishRowsPipelined(ctx, rows, deadline)
	}
	var res batchResult
	for i := range rows {
		ev := &rows[i]
		if ctx.Err() != nil || r.cfg.now().Add(r.cfg.publishTimeout).After(deadline) {
			return res
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
		err := r.pub.Publish(pctx, ev.message())
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				// Stopping, not a broker failure: the row stays as it was.
				return res
			}
			r.failed.Add(1)
			res.failed = append(res.failed, failure{ev, err})
			return res
		}
		res.published = append(res.published, *ev)
	}
	return res
}

// publishRowsPipelined starts the rows' publishes in id order, up to
// maxInFlight at a time, and waits for all of them. It starts no more once
// one failed, ctx is done, or the claim's deadline is near.
func (r *Relay) publishRowsPipelined(ctx context.Context, rows []Event, deadline time.Time) batchResult {
	if bp, ok := r.pub.(BatchPublisher); ok {
		return r.publishRowsBatched(ctx, bp, rows, deadline)
	}
	errs := make([]error, len(rows))
	started := 0
	var (
		wg     sync.WaitGroup
		failed atomic.Bool
	)
	slots := make(chan struct{}, r.cfg.maxInFlight)
start:
	for i := range rows {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			break start
		}
		if ctx.Err() != nil || failed.Load() || r.cfg.now().Add(r.cfg.publishTimeout).After(deadline) {
			<-slots
			break
		}
		started = i + 1
		wg.Add(1)
		go func(ev *Event, i int) {
			defer func() { <-slots; wg.Done() }()
			pctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
			defer cancel()
			if errs[i] = r.pub.Publish(pctx, ev.message()); errs[i] != nil {
				failed.Store(true)
			}
		}(&rows[i], i)
	}
	wg.Wait()
	return r.results(ctx, rows[:started], errs)
}

// publishRowsBatched hands the rows to bp maxInFlight at a time, one call
// after the other, until a call had a failure, ctx is done or the claim's
// deadline is near.
func (r *Relay) publishRowsBatched(ctx context.Context, bp BatchPublisher, rows []Event, deadline time.Time) batchResult {
	errs := make([]error, 0, len(rows))
	for start := 0; start < len(rows); start += r.cfg.maxInFlight {
		if ctx.Err() != nil || r.cfg.now().Add(r.cfg.publishTimeout).After(deadline) {
			break
		}
		chunk := rows[start:min(start+r.cfg.maxInFlight, len(rows))]
		ms := make([]Message, len(chunk))
		for i := range chunk {
			ms[i] = chunk[i].message()
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
		got := bp.PublishBatch(pctx, ms)
		cancel()
		if len(got) != len(chunk) {
			err := fmt.Errorf("outbox: PublishBatch returned %d results for %d events", len(got), len(chunk))
			got = make([]error, len(chunk))
			for i := range got {
				got[i] = err
			}
		}
		errs = append(errs, got...)
		if slices.ContainsFunc(got, func(err error) bool { return err != nil }) {
			break
		}
	}
	return r.results(ctx, rows[:len(errs)], errs)
}

// results sorts the publishes tried into published and failed rows; those
// that failed because the relay is stopping are neither.
func (r *Relay) results(ctx context.Context, rows []Event, errs []error) batchResult {
	var res batchResult
	for i := range rows {
		switch {
		case errs[i] == nil:
			res.published = append(res.published, rows[i])
		case ctx.Err() != nil:
			// Stopping, not a broker failure: the row stays as it was.
		default:
			r.failed.Add(1)
			res.failed = append(res.failed, failure{&rows[i], errs[i]})
		}
	}
	return res
}

// record marks the published rows, counts the failed attempt and, for a
// lease owner, releases the rows it did not publish so they are retried at
// once and in order.
func (r *Relay) record(dbCtx context.Context, tx *gorm.DB, res batchResult, owner string) error {
	qctx, cancel := context.WithTimeout(dbCtx, dbTimeout)
	defer cancel()
	tx = tx.WithContext(qctx)
	if len(res.published) > 0 {
		ids := make([]int64, len(res.published))
		for i, ev := range res.published {
			ids[i] = ev.ID
		}
		err := tx.Model(&Event{}).Where("id IN ?", ids).Updates(map[string]any{
			"published_at":     r.cfg.now().UTC(),
			"attempts":         gorm.Expr("attempts + 1"),
			"lease_owner":      "",
			"lease_expires_at": nil,
		}).Error
		if err != nil {
			return fmt.Errorf("mark events published: %w", err)
		}
	}
	// One statement per distinct error: a broker that is down fails a
	// whole pipelined batch with the same error.
	byErr := map[string][]int64{}
	var texts []string
	for _, f := range res.failed {
		text := truncate(f.err.Error(), 1000)
		if _, ok := byErr[text]; !ok {
			texts = append(texts, text)
		}
		byErr[text] = append(byErr[text], f.ev.ID)
	}
	for _, text := range texts {
		err := tx.Model(&Event{}).Where("id IN ?", byErr[text]).Updates(map[string]any{
			"attempts":   gorm.Expr("attempts + 1"),
			"last_error": text,
		}).Error
		if err != nil {
			return fmt.Errorf("record %d failed publishes: %w", len(byErr[text]), err)
		}
	}
	if owner != "" {
		err := tx.Model(&Event{}).Where("lease_owner = ? AND published_at IS NULL", owner).
			Updates(map[string]any{"lease_owner": "", "lease_expires_at": nil}).Error
		if err != nil {
			return fmt.Errorf("release leased events: %w", err)
		}
	}
	return nil
}

// finish logs and counts a batch once its transaction ended with txErr, and
// returns the error that makes Run back off.
func (r *Relay) finish(ctx context.Context, res batchResult, txErr error) error {
	log := r.cfg.log
	if txErr != nil && len(res.published) > 0 {
		// Published but not marked: they go out again (at least once).
		ids := make([]string, len(res.published))
		for i, ev := range res.published {
			ids[i] = ev.EventID
		}
		log.ErrorContext(ctx, "outbox relay: published events not marked; they will be published again",
			"event_ids", ids, "err", txErr)
	}
	if txErr == nil {
		r.published.Add(uint64(len(res.published)))
		for _, ev := range res.published {
			log.InfoContext(ctx, "outbox event published", append([]any{
				"event_id", ev.EventID, "topic", ev.Topic, "attempts", ev.Attempts + 1}, ev.requestIDAttr()...)...)
		}
	}
	if len(res.failed) > 0 {
		// The first failure in full, with how many more failed beside it.
		first := res.failed[0]
		log.WarnContext(ctx, "outbox publish failed", append([]any{
			"event_id", first.ev.EventID, "topic", first.ev.Topic,
			"attempts", first.ev.Attempts + 1, "failed_in_batch", len(res.failed), "err", first.err}, first.ev.requestIDAttr()...)...)
		return errors.Join(fmt.Errorf("publish event %s: %w", first.ev.EventID, first.err), txErr)
	}
	return txErr
}

// Prune deletes published rows older than the retention, a batch at a time
// so that no statement holds many locks, and returns how many it deleted.
// Pending rows are never deleted, however old.
func (r *Relay) Prune(ctx context.Context) (int64, error) {
	cutoff := r.cfg.now().Add(-r.cfg.retention).UTC()
	var total int64
	for {
		old := r.db.Model(&Event{}).Select("id").
			Where("published_at IS NOT NULL AND published_at < ?", cutoff).
			Order("id").Limit(r.cfg.batchSize)
		qctx, cancel := context.WithTimeout(ctx, dbTimeout)
		res := r.db.WithContext(qctx).Where("id IN (?)", old).Delete(&Event{})
		cancel()
		if res.Error != nil {
			return total, fmt.Errorf("outbox: prune published events: %w", res.Error)
		}
		total += res.RowsAffected
		r.pruned.Add(uint64(res.RowsAffected))
		if res.RowsAffected < int64(r.cfg.batchSize) {
			if total > 0 {
				r.cfg.log.InfoContext(ctx, "outbox pruned", "deleted", total, "published_before", cutoff)
			}
			return total, nil
		}
	}
}

// nextBackoff doubles cur within [lo, hi].
func nextBackoff(cur, lo, hi time.Duration) time.Duration {
	if cur < lo {
		return lo
	}
	return min(cur*2, hi)
}

// jitter spreads d over [d/2, d] so that replicas retrying after the same
// outage do not hit the broker in step.
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + mathrand.N(d-half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func newLeaseOwner() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("lease owner id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// truncate shortens s to at most n bytes of valid UTF-8 without NULs, which
// PostgreSQL's text refuses.
func truncate(s string, n int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
