// Package poll waits in tests for a condition that other goroutines or
// processes will make true, with a deadline instead of a fixed sleep.
package poll

import (
	"testing"
	"time"
)

// interval is how long to wait between two calls of a condition: short
// enough not to slow tests down, long enough not to spin.
const interval = 10 * time.Millisecond

// For calls cond until it returns true, then returns true; once timeout has
// passed it returns false. cond is called at least once.
func For(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval) // the poll interval, not a wait for the condition
	}
}

// Until calls cond until it returns true, and fails the test with
// t.Fatalf if it does not within timeout. what says what was waited for,
// for the failure message.
func Until(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !For(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
