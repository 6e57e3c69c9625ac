package main

import (
	"sync"
	"time"
)

// authLimiter counts login attempts per email in a sliding window. After max
// attempts that did not succeed within window, further attempts for that
// email are refused until the oldest leaves the window. State is in memory,
// per replica: with N replicas an attacker gets at most N*max guesses per
// window.
type authLimiter struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu       sync.Mutex
	attempts map[string][]time.Time
	// lastSweep is when the whole map was last scanned for expired entries.
	lastSweep time.Time
}

// sweepAbove bounds memory: when more emails than this have recent attempts,
// entries whose attempts have all expired are dropped, at most once per
// window so that a flood of emails does not scan the map on every attempt.
const sweepAbove = 10000

func newAuthLimiter(max int, window time.Duration, now func() time.Time) *authLimiter {
	return &authLimiter{max: max, window: window, now: now, attempts: make(map[string][]time.Time)}
}

// Allow reports whether an attempt for key may proceed and, if not, how long
// until it may. An allowed attempt is recorded at once, as a failure until
// Reset says it succeeded: recording it only after the password check would
// let parallel attempts all pass the check before any of them is counted.
func (l *authLimiter) Allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	recent := l.prune(key, now)
	if len(recent) >= l.max {
		return false, recent[len(recent)-l.max].Add(l.window).Sub(now)
	}
	l.attempts[key] = append(recent, now)
	if len(l.attempts) > sweepAbove && now.Sub(l.lastSweep) >= l.window {
		l.lastSweep = now
		for k := range l.attempts {
			l.prune(k, now)
		}
	}
	return true, 0
}

// Reset forgets key's attempts after a successful login.
func (l *authLimiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.attempts, key)
}

// prune drops attempts older than the window and returns the rest.
// l.mu must be held.
func (l *authLimiter) prune(key string, now time.Time) []time.Time {
	ts := l.attempts[key]
	i := 0
	for i < len(ts) && !ts[i].Add(l.window).After(now) {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(l.attempts, key)
		return nil
	}
	l.attempts[key] = ts
	return ts
}
