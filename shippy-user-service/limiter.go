package main

import (
	"sync"
	"time"
)

// authLimiter counts failed logins per email in a sliding window. After max
// failures within window further attempts for that email are refused until
// the oldest failure leaves the window. State is in memory, per replica:
// with N replicas an attacker gets at most N*max guesses per window.
type authLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	failures map[string][]time.Time
}

// sweepAbove bounds memory: when more emails than this have recent failures,
// entries whose failures have all expired are dropped.
const sweepAbove = 10000

func newAuthLimiter(max int, window time.Duration, now func() time.Time) *authLimiter {
	return &authLimiter{max: max, window: window, now: now, failures: make(map[string][]time.Time)}
}

// Allow reports whether an attempt for key may proceed and, if not, how long
// until it may.
func (l *authLimiter) Allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	recent := l.prune(key, now)
	if len(recent) < l.max {
		return true, 0
	}
	return false, recent[len(recent)-l.max].Add(l.window).Sub(now)
}

// Fail records a failed attempt for key.
func (l *authLimiter) Fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.failures[key] = append(l.prune(key, now), now)
	if len(l.failures) > sweepAbove {
		for k := range l.failures {
			l.prune(k, now)
		}
	}
}

// Reset forgets key's failures after a successful login.
func (l *authLimiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, key)
}

// prune drops failures older than the window and returns the rest.
// l.mu must be held.
func (l *authLimiter) prune(key string, now time.Time) []time.Time {
	ts := l.failures[key]
	i := 0
	for i < len(ts) && !ts[i].Add(l.window).After(now) {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.failures, key)
		return nil
	}
	l.failures[key] = ts
	return ts
}
