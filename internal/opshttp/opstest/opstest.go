// Package opstest reads an ops server (internal/opshttp) the way a probe or
// Prometheus does, for tests.
package opstest

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Get fetches path from the ops server at addr and returns the status code
// and body.
func Get(t testing.TB, addr, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: read body: %v", addr, path, err)
	}
	return resp.StatusCode, string(b)
}

// Value returns the value of series (a metric name with its labels as
// Prometheus writes them, e.g. `shippy_emails_failed_total{kind="permanent"}`)
// in a /metrics body, and whether it is there.
func Value(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		return v, err == nil
	}
	return 0, false
}

// Scrape fetches /metrics and fails the test unless it answers 200.
func Scrape(t testing.TB, addr string) string {
	t.Helper()
	code, body := Get(t, addr, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d; want 200:\n%s", code, body)
	}
	return body
}

// WaitStatus polls path until it answers want, for up to a minute, and
// returns the last body: a readiness check may time out once on a loaded
// machine, which a probe retries too.
func WaitStatus(t testing.TB, addr, path string, want int) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		code, body := Get(t, addr, path)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s%s = %d %s for a minute; want %d", addr, path, code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
