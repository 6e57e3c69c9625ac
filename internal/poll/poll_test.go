package poll_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/poll"
)

// countTo returns a condition that holds from its n-th call on, and the
// number of calls so far.
func countTo(n int) (cond func() bool, calls *int) {
	calls = new(int)
	return func() bool { *calls++; return *calls >= n }, calls
}

func TestFor(t *testing.T) {
	for _, n := range []int{1, 3} {
		cond, calls := countTo(n)
		if got := poll.For(10*time.Second, cond); !got {
			t.Errorf("For(10s, true from call %d) = %v; want true", n, got)
		}
		if *calls != n {
			t.Errorf("For(10s, true from call %d): %v calls; want %v", n, *calls, n)
		}
	}
}

func TestForTimesOut(t *testing.T) {
	calls := 0
	if got := poll.For(30*time.Millisecond, func() bool { calls++; return false }); got {
		t.Errorf("For(30ms, never true) = %v; want false", got)
	}
	if calls < 1 {
		t.Errorf("For(30ms, never true): %v calls; want at least 1", calls)
	}
}

// fakeTB records Fatalf and, like testing.T, stops its caller's goroutine.
type fakeTB struct {
	testing.TB
	fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// until runs poll.Until on a fake in its own goroutine, as Fatalf ends it,
// and returns what Fatalf was given ("" if it was not called).
func until(timeout time.Duration, cond func() bool) string {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		poll.Until(f, "the thing", timeout, cond)
	}()
	<-done
	return f.fatal
}

func TestUntil(t *testing.T) {
	for _, n := range []int{1, 3} {
		cond, calls := countTo(n)
		if got := until(10*time.Second, cond); got != "" {
			t.Errorf("Until(10s, true from call %d) failed with %q; want no failure", n, got)
		}
		if *calls != n {
			t.Errorf("Until(10s, true from call %d): %v calls; want %v", n, *calls, n)
		}
	}
}

func TestUntilTimesOut(t *testing.T) {
	got := until(30*time.Millisecond, func() bool { return false })
	want := "timed out after 30ms waiting for the thing"
	if got != want {
		t.Errorf("Until(30ms, never true) failed with %q; want %q", got, want)
	}
}
