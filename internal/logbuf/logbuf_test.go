package logbuf_test

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/shippy/shippy/internal/logbuf"
)

var _ io.Writer = (*logbuf.Buffer)(nil)

// Lines written at once from many goroutines all arrive whole; run with
// -race to check the locking.
func TestConcurrentWriters(t *testing.T) {
	const writers, lines = 8, 100
	var buf logbuf.Buffer
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(&buf, "writer %d line %d\n", w, i)
				_ = buf.String() // a reader while others write
			}
		}()
	}
	wg.Wait()

	got := buf.String()
	if n := strings.Count(got, "\n"); n != writers*lines {
		t.Errorf("lines in String() = %v; want %v", n, writers*lines)
	}
	for w := range writers {
		for i := range lines {
			if line := fmt.Sprintf("writer %d line %d\n", w, i); !strings.Contains(got, line) {
				t.Errorf("strings.Contains(String(), %q) = false; want true", line)
			}
		}
	}
}

func TestZeroValueIsEmpty(t *testing.T) {
	var buf logbuf.Buffer
	if got := buf.String(); got != "" {
		t.Errorf("String() = %q; want %q", got, "")
	}
}
