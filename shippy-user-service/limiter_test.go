package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The throttle's SQL on both databases: the waits, their doubling and cap,
// the keys, forgetting, pruning, and parallel attempts.

func newTestLimiter(t *testing.T, store *Store, cfg throttleConfig) (*authLimiter, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return newAuthLimiter(store.db, cfg, clock.Now), clock
}

// begin calls l.Begin and fails the test on a database error.
func begin(t *testing.T, l *authLimiter, email, caller string) time.Duration {
	t.Helper()
	wait, err := l.Begin(context.Background(), email, caller)
	if err != nil {
		t.Fatalf("Begin(%q, %q) = %v", email, caller, err)
	}
	return wait
}

func TestLimiterBacksOffExponentially(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := throttleConfig{perEmail: 3, perCaller: 1000, base: time.Second, max: 10 * time.Second, window: time.Hour}
			l, clock := newTestLimiter(t, b.open(t), cfg)
			const email, attacker = "ada@example.com", "203.0.113.7"
			for i := 1; i <= 3; i++ {
				if wait := begin(t, l, email, attacker); wait != 0 {
					t.Fatalf("attempt %d = wait %s; want let through", i, wait)
				}
			}
			// After each let-through attempt the wait doubles, capped at 10s.
			for _, want := range []time.Duration{1, 2, 4, 8, 10, 10} {
				want *= time.Second
				if wait := begin(t, l, email, attacker); wait != want {
					t.Fatalf("attempt while waiting = wait %s; want %s", wait, want)
				}
				clock.Advance(want - 500*time.Millisecond)
				if wait := begin(t, l, email, attacker); wait != 500*time.Millisecond {
					t.Fatalf("attempt %s before the end of the wait = wait %s; want 500ms", 500*time.Millisecond, wait)
				}
				clock.Advance(500 * time.Millisecond)
				if wait := begin(t, l, email, attacker); wait != 0 {
					t.Fatalf("attempt after waiting %s = wait %s; want let through", want, wait)
				}
			}
			// Another caller for the same email, and the same caller for
			// another email, are not waiting.
			if wait := begin(t, l, email, "198.51.100.2"); wait != 0 {
				t.Errorf("another caller = wait %s; want let through", wait)
			}
			if wait := begin(t, l, "bob@example.com", attacker); wait != 0 {
				t.Errorf("another email = wait %s; want let through", wait)
			}
		})
	}
}

func TestLimiterSuccessClearsTheEmailKey(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := throttleConfig{perEmail: 3, perCaller: 5, base: time.Second, max: time.Minute, window: time.Hour}
			l, _ := newTestLimiter(t, b.open(t), cfg)
			const email, caller = "ada@example.com", "192.0.2.1"
			// Two failures, then a success.
			for range 3 {
				if wait := begin(t, l, email, caller); wait != 0 {
					t.Fatalf("wait %s; want let through", wait)
				}
			}
			if err := l.Succeeded(context.Background(), email, caller); err != nil {
				t.Fatalf("Succeeded = %v", err)
			}
			// The email key starts again: three more attempts. The caller's
			// count across emails holds the 2 failures, not the success, so
			// these three reach its limit of 5 only at the last one.
			for i := 1; i <= 3; i++ {
				if wait := begin(t, l, email, caller); wait != 0 {
					t.Fatalf("attempt %d after the success = wait %s; want let through", i, wait)
				}
			}
			if wait := begin(t, l, "bob@example.com", caller); wait != time.Second {
				t.Errorf("attempt on another email after 5 failures from the caller = wait %s; want 1s", wait)
			}
		})
	}
}

// Successful logins from an address that reached its limit across emails
// must not lengthen its wait: each success leaves the caller's row as it
// found it, so the next user behind that address waits no longer than the
// failures alone earned.
func TestLimiterSuccessesDoNotLengthenTheCallersWait(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := throttleConfig{perEmail: 100, perCaller: 3, base: time.Second, max: 15 * time.Minute, window: time.Hour}
			l, clock := newTestLimiter(t, b.open(t), cfg)
			const caller = "192.0.2.9"
			for _, e := range []string{"a@example.com", "b@example.com", "c@example.com"} {
				begin(t, l, e, caller) // three failures: the caller now waits 1s
			}
			for i := range 5 {
				clock.Advance(time.Second)
				if wait := begin(t, l, "owner@example.com", caller); wait != 0 {
					t.Fatalf("login %d after waiting = wait %s; want let through", i, wait)
				}
				if err := l.Succeeded(context.Background(), "owner@example.com", caller); err != nil {
					t.Fatal(err)
				}
				if wait := begin(t, l, "other@example.com", caller); wait > time.Second {
					t.Fatalf("after %d successful logins, another login = wait %s; want at most 1s", i+1, wait)
				}
				if err := l.Succeeded(context.Background(), "other@example.com", caller); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// An attempt refused for its email checks no password, so it must not count
// against the caller across emails: a user retrying their own throttled
// account does not slow the others behind the same address.
func TestLimiterRefusedAttemptsDoNotCountForTheCaller(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := throttleConfig{perEmail: 2, perCaller: 10, base: time.Minute, max: 15 * time.Minute, window: time.Hour}
			l, _ := newTestLimiter(t, b.open(t), cfg)
			const caller = "192.0.2.1"
			refused := 0
			for range 12 {
				if begin(t, l, "ada@example.com", caller) > 0 {
					refused++
				}
			}
			if refused != 10 {
				t.Fatalf("12 attempts for one email: %d refused; want 10", refused)
			}
			if wait := begin(t, l, "bob@example.com", caller); wait != 0 {
				t.Errorf("another email after the refused attempts = wait %s; want let through", wait)
			}
		})
	}
}

func TestLimiterForgetsOldFailures(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			cfg := throttleConfig{perEmail: 2, perCaller: 1000, base: time.Minute, max: time.Hour, window: 2 * time.Hour}
			store := b.open(t)
			l, clock := newTestLimiter(t, store, cfg)
			const email, caller = "ada@example.com", "192.0.2.1"
			begin(t, l, email, caller)
			begin(t, l, email, caller)
			if wait := begin(t, l, email, caller); wait != time.Minute {
				t.Fatalf("third attempt = wait %s; want 1m", wait)
			}
			clock.Advance(2 * time.Hour)
			// Forgotten: two attempts before a wait again, not a doubled one.
			for i := 1; i <= 2; i++ {
				if wait := begin(t, l, email, caller); wait != 0 {
					t.Fatalf("attempt %d after the window = wait %s; want let through", i, wait)
				}
			}
			if wait := begin(t, l, email, caller); wait != time.Minute {
				t.Errorf("third attempt after the window = wait %s; want 1m (counting from the start)", wait)
			}

			// Rows forgotten and no longer waiting are pruned, at most every
			// pruneEvery; the first Begin pruned nothing yet.
			var n int64
			store.db.Model(&authAttempt{}).Count(&n)
			if n != 2 {
				t.Fatalf("auth_attempts holds %d rows; want 2 (the caller and the email key)", n)
			}
			clock.Advance(3 * time.Hour)
			begin(t, l, "bob@example.com", "192.0.2.9")
			var keys []string
			store.db.Model(&authAttempt{}).Order("attempt_key").Pluck("attempt_key", &keys)
			if fmt.Sprint(keys) != "[192.0.2.9 192.0.2.9|bob@example.com]" {
				t.Errorf("auth_attempts keys after a prune = %q; want only bob's new attempt", keys)
			}
		})
	}
}

// Parallel attempts, through separate connections on PostgreSQL, are
// counted one at a time: exactly perEmail get through, whichever replica
// or connection they use.
func TestLimiterHoldsUnderParallelAttempts(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			cfg := throttleConfig{perEmail: 5, perCaller: 1000, base: time.Minute, max: time.Hour, window: 2 * time.Hour}
			// Two limiters on one database stand for two replicas.
			a, _ := newTestLimiter(t, store, cfg)
			c, _ := newTestLimiter(t, store, cfg)
			const callers = 40
			var wg sync.WaitGroup
			var mu sync.Mutex
			through := 0
			start := make(chan struct{})
			for i := range callers {
				l := a
				if i%2 == 1 {
					l = c
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					wait, err := l.Begin(context.Background(), "ada@example.com", "203.0.113.7")
					if err != nil {
						t.Errorf("Begin = %v", err)
						return
					}
					if wait == 0 {
						mu.Lock()
						through++
						mu.Unlock()
					}
				}()
			}
			close(start)
			wg.Wait()
			if through != 5 {
				t.Errorf("%d parallel attempts over two limiters let %d through; want 5", callers, through)
			}
		})
	}
}

// Replicas' clocks differ, and one replica's attempts are timed before they
// reach the database: an attempt timed a moment before the last one must
// not be taken for one that waits when nothing waits. (Before this was
// fixed, a third of the correct logins of 8 parallel callers were refused
// with 429 "try again in 0s".)
func TestLimiterIgnoresAnEarlierClockWhenNothingWaits(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			cfg := throttleConfig{perEmail: 5, perCaller: 50, base: time.Second, max: 15 * time.Minute, window: time.Hour}
			ahead, clock := newTestLimiter(t, store, cfg)
			behind := &fakeClock{t: clock.Now().Add(-5 * time.Millisecond)}
			late := newAuthLimiter(store.db, cfg, behind.Now)
			const caller = "198.51.100.4"
			tests := []struct {
				name          string
				first, second string
			}{
				{"same caller, other emails", "ada@example.com", "bob@example.com"},
				{"same caller, same email", "cy@example.com", "cy@example.com"},
			}
			for _, tt := range tests {
				if wait := begin(t, ahead, tt.first, caller); wait != 0 {
					t.Fatalf("%s: Begin(%q) = wait %s; want let through", tt.name, tt.first, wait)
				}
				if wait := begin(t, late, tt.second, caller); wait != 0 {
					t.Errorf("%s: Begin(%q) on a replica 5ms behind = wait %s; want let through", tt.name, tt.second, wait)
				}
			}
		})
	}
}

// Correct logins of many callers behind one address, on two replicas at
// once, are all let through.
func TestLimiterLetsParallelCorrectLoginsThrough(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			cfg := throttleConfig{perEmail: 5, perCaller: 50, base: time.Second, max: 15 * time.Minute, window: time.Hour}
			replicas := []*authLimiter{newAuthLimiter(store.db, cfg, time.Now), newAuthLimiter(store.db, cfg, time.Now)}
			const workers, logins = 8, 40
			var refused atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := replicas[w%2]
					for i := range logins {
						email := fmt.Sprintf("user%d.%d@example.com", w, i)
						wait, err := l.Begin(context.Background(), email, "127.0.0.1")
						if err != nil {
							t.Errorf("Begin(%q) = %v", email, err)
							return
						}
						if wait > 0 {
							refused.Add(1)
							continue
						}
						if err := l.Succeeded(context.Background(), email, "127.0.0.1"); err != nil {
							t.Errorf("Succeeded(%q) = %v", email, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if n := refused.Load(); n != 0 {
				t.Errorf("%d of %d correct logins refused; want 0", n, workers*logins)
			}
		})
	}
}
