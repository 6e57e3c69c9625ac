package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"gorm.io/gorm"
)

// The login throttle slows password guessing without locking the owner out.
//
// It counts failed logins in the auth_attempts table of the users' database,
// so every replica sees the same counts (two replicas allow no more guesses
// than one), under two keys per attempt:
//
//   - (caller, email): after AuthMaxFailures failures, each further attempt
//     must wait AuthBackoffBase, then twice that, and so on up to
//     AuthBackoffMax. The owner logging in from another address is not
//     affected, and a success clears the key;
//   - caller, across all emails: the same back-off after
//     AuthCallerMaxFailures failures, so that one address cannot spray
//     guesses over many accounts.
//
// A caller is the address the request came from (callerOf). Failures older
// than AuthFailureWindow are forgotten.
//
// An attempt is counted as failed before the password is checked, in one
// atomic statement per key that also refuses it while the key waits:
// counting after bcrypt would let a burst of parallel guesses all pass the
// check before the first is counted. A success then takes its count back.

// authAttempt is a row of auth_attempts. Times are Unix milliseconds, so
// the same arithmetic runs on PostgreSQL and SQLite.
type authAttempt struct {
	Scope          string `gorm:"primaryKey;size:16"`
	AttemptKey     string `gorm:"primaryKey;size:400"`
	Failures       int64  `gorm:"not null"`
	BackoffMs      int64  `gorm:"not null"`
	LastAttemptMs  int64  `gorm:"not null;index:idx_auth_attempts_last"`
	BlockedUntilMs int64  `gorm:"not null"`
}

func (authAttempt) TableName() string { return "auth_attempts" }

// Scopes of auth_attempts rows.
const (
	scopeCaller      = "caller"
	scopeEmailCaller = "email_caller"
)

func migrateAuthAttempts(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&authAttempt{}); err != nil {
		return fmt.Errorf("migrate auth_attempts table: %w", err)
	}
	return nil
}

// throttleConfig is the throttle's part of Config.
type throttleConfig struct {
	perEmail, perCaller int64
	base, max, window   time.Duration
}

func throttleFromConfig(cfg Config) throttleConfig {
	return throttleConfig{
		perEmail: int64(cfg.AuthMaxFailures), perCaller: int64(cfg.AuthCallerMaxFailures),
		base: cfg.AuthBackoffBase, max: cfg.AuthBackoffMax, window: cfg.AuthFailureWindow,
	}
}

// authLimiter is the login throttle on a gorm database.
type authLimiter struct {
	db  *gorm.DB
	cfg throttleConfig
	now func() time.Time
	// nextPruneMs is when this replica next deletes forgotten rows.
	nextPruneMs atomic.Int64
}

func newAuthLimiter(db *gorm.DB, cfg throttleConfig, now func() time.Time) *authLimiter {
	return &authLimiter{db: db, cfg: cfg, now: now}
}

// Begin counts an attempt to log in as email from caller. wait > 0 refuses
// it: the caller, or the caller for this email, must wait that long.
// Otherwise the attempt counts as failed until Succeeded says otherwise.
func (l *authLimiter) Begin(ctx context.Context, email, caller string) (time.Duration, error) {
	now := l.now()
	defer l.maybePrune(ctx, now)
	// The caller first: a caller refused across emails adds nothing to
	// the email's count.
	if wait, err := l.take(ctx, scopeCaller, caller, l.cfg.perCaller, now); err != nil || wait > 0 {
		return wait, err
	}
	wait, err := l.take(ctx, scopeEmailCaller, emailCallerKey(email, caller), l.cfg.perEmail, now)
	if err != nil || wait == 0 {
		return wait, err
	}
	// Refused for this email, so no password was checked: the caller's
	// count across emails must not grow by it, or a user retrying their own
	// throttled account would slow everybody behind the same address.
	return wait, l.uncountCaller(ctx, caller)
}

// Succeeded takes back the count Begin added: the (caller, email) key is
// cleared, and the caller's count across emails loses this attempt.
func (l *authLimiter) Succeeded(ctx context.Context, email, caller string) error {
	if err := l.db.WithContext(ctx).Where("scope = ? AND attempt_key = ?", scopeEmailCaller, emailCallerKey(email, caller)).
		Delete(&authAttempt{}).Error; err != nil {
		return fmt.Errorf("clear login attempts: %w", err)
	}
	return l.uncountCaller(ctx, caller)
}

// uncountSQL takes one attempt back from a caller's row: its failure and
// the back-off step it caused (the wait shrinks to the step before, counted
// from the same time), so a success or a refused attempt leaves the row as
// if it had not been made, and successes never lengthen the wait.
const uncountSQL = `
UPDATE auth_attempts SET
	failures = failures - 1,
	backoff_ms = ` + prevBackoffSQL + `,
	blocked_until_ms = blocked_until_ms - backoff_ms + ` + prevBackoffSQL + `
WHERE scope = @scope AND attempt_key = @key AND failures > 0`

const prevBackoffSQL = `(CASE
		WHEN failures - 1 < @max THEN 0
		WHEN backoff_ms / 2 < @base THEN CAST(@base AS BIGINT)
		ELSE backoff_ms / 2
	END)`

func (l *authLimiter) uncountCaller(ctx context.Context, caller string) error {
	err := l.db.WithContext(ctx).Exec(uncountSQL, map[string]any{
		"scope": scopeCaller, "key": caller, "max": l.cfg.perCaller, "base": l.cfg.base.Milliseconds(),
	}).Error
	if err != nil {
		return fmt.Errorf("uncount login attempt: %w", err)
	}
	return nil
}

// emailCallerKey joins the two; a caller (an IP address or "unknown")
// holds no "|", so keys cannot collide.
func emailCallerKey(email, caller string) string { return caller + "|" + email }

// takeSQL counts one attempt under (scope, key) unless the key is waiting,
// and sets the wait the next attempt faces. It returns a row when the
// attempt is counted and none when the key is waiting (the update's WHERE
// fails). A key without back-off never waits: its blocked_until_ms is the
// last attempt's time, which an attempt timed a moment earlier (another
// goroutine, a replica whose clock is behind) would otherwise take for a
// wait. The new back-off is
//   - @first when the old failures are forgotten (older than the window);
//   - 0 while the failures stay under @max;
//   - @base at the @max-th failure;
//   - twice the last one after that, at most @cap.
//
// The same expression appears twice because SET sees the old row.
const takeSQL = `
INSERT INTO auth_attempts (scope, attempt_key, failures, backoff_ms, last_attempt_ms, blocked_until_ms)
VALUES (@scope, @key, 1, CAST(@first AS BIGINT), CAST(@now AS BIGINT), CAST(@first_until AS BIGINT))
ON CONFLICT (scope, attempt_key) DO UPDATE SET
	failures = CASE WHEN auth_attempts.last_attempt_ms <= @stale THEN 1 ELSE auth_attempts.failures + 1 END,
	backoff_ms = ` + backoffSQL + `,
	last_attempt_ms = CAST(@now AS BIGINT),
	blocked_until_ms = CAST(@now AS BIGINT) + ` + backoffSQL + `
WHERE auth_attempts.blocked_until_ms <= @now OR auth_attempts.backoff_ms = 0
RETURNING failures`

const backoffSQL = `(CASE
		WHEN auth_attempts.last_attempt_ms <= @stale THEN CAST(@first AS BIGINT)
		WHEN auth_attempts.failures + 1 < @max THEN 0
		WHEN auth_attempts.failures + 1 = @max OR auth_attempts.backoff_ms < @base THEN CAST(@base AS BIGINT)
		WHEN auth_attempts.backoff_ms * 2 > @cap THEN CAST(@cap AS BIGINT)
		ELSE auth_attempts.backoff_ms * 2
	END)`

// take counts an attempt under (scope, key), or returns how long the key
// still waits.
func (l *authLimiter) take(ctx context.Context, scope, key string, maxFailures int64, now time.Time) (time.Duration, error) {
	nowMs := now.UnixMilli()
	first := int64(0)
	if maxFailures <= 1 {
		first = l.cfg.base.Milliseconds()
	}
	var counted []struct{ Failures int64 }
	err := l.db.WithContext(ctx).Raw(takeSQL, map[string]any{
		"scope": scope, "key": key, "now": nowMs, "first": first, "first_until": nowMs + first,
		"stale": nowMs - l.cfg.window.Milliseconds(), "max": maxFailures,
		"base": l.cfg.base.Milliseconds(), "cap": l.cfg.max.Milliseconds(),
	}).Scan(&counted).Error
	if err != nil {
		return 0, fmt.Errorf("count login attempt: %w", err)
	}
	if len(counted) > 0 {
		return 0, nil
	}
	var row authAttempt
	if err := l.db.WithContext(ctx).Where("scope = ? AND attempt_key = ?", scope, key).Take(&row).Error; err != nil {
		return 0, fmt.Errorf("read login attempts: %w", err)
	}
	// The wait may have ended between the two statements: the caller is
	// told to try again at once rather than let through uncounted.
	return max(time.Duration(row.BlockedUntilMs-nowMs)*time.Millisecond, time.Millisecond), nil
}

// pruneEvery is how often a replica deletes rows whose failures are
// forgotten and that wait no longer.
const pruneEvery = 10 * time.Minute

func (l *authLimiter) maybePrune(ctx context.Context, now time.Time) {
	next := l.nextPruneMs.Load()
	nowMs := now.UnixMilli()
	if nowMs < next || !l.nextPruneMs.CompareAndSwap(next, nowMs+pruneEvery.Milliseconds()) {
		return
	}
	// Best effort: a failed prune leaves rows for the next one.
	_ = l.db.WithContext(ctx).
		Where("last_attempt_ms <= ? AND blocked_until_ms <= ?", nowMs-l.cfg.window.Milliseconds(), nowMs).
		Delete(&authAttempt{}).Error
}
