package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// goMemStats reads Go's memory gauges from a service's /metrics.
func goMemStats(b *testing.B, addr string) map[string]float64 {
	b.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("metrics %s: %v", addr, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "go_") {
			continue
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[name] = f
		}
	}
	return out
}

// BenchmarkMemoryGrowth (issue 14.2): the user-service's RSS, Go heap in
// use and GC goal idle and after every 20,000 creates (published and
// emailed), up to 100,000 (-benchtime=1x; BCRYPT_COST=4). Growth is what
// the heap in use keeps after a GC; RSS above it is the runtime's headroom
// (up to the GC goal, GOGC=100) and memory not yet returned to the OS.
func BenchmarkMemoryGrowth(b *testing.B) {
	ns := natstest.Start(b)
	db := pgtest.NewDatabase(b)
	userEnv := localEnv(b, "user-service", ns.URL(), db)
	userEnv["BCRYPT_COST"] = "4"
	metrics := freeAddr(b)
	userEnv["METRICS_ADDRESS"] = metrics
	// One line per GC on stderr: "A->B->C MB" ends with the heap live after
	// that GC, which is what grows if anything leaks.
	userEnv["GODEBUG"] = "gctrace=1"
	user := startProcess(b, "shippy-user-service", userEnv)
	startProcess(b, "shippy-email-service", localEnv(b, "email-service", ns.URL(), db))
	waitRegistered(b, ns.URL(), "go.micro.srv.user", user)
	waitRegistered(b, ns.URL(), "go.micro.srv.email", nil)
	users := userClient(b, ns.URL())
	ctx := context.Background()
	report := func(label string) {
		m := goMemStats(b, metrics)
		gc := "no GC yet"
		lines := strings.Split(strings.TrimSpace(user.stderr.String()), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.HasPrefix(lines[i], "gc ") {
				gc = lines[i]
				break
			}
		}
		fmt.Printf("memgrowth: %s: rss %.1f MiB, heap in use %.1f MiB, heap objects %.0f, next GC %.1f MiB, heap released %.1f MiB, goroutines %.0f\n",
			label, user.rssKiB(b)/1024, m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_heap_objects"],
			m["go_memstats_next_gc_bytes"]/(1<<20), m["go_memstats_heap_released_bytes"]/(1<<20), m["go_goroutines"])
		fmt.Printf("memgrowth: %s: last GC: %s\n", label, gc)
	}
	time.Sleep(time.Second) // settled after start-up
	report("idle")
	const step = 20000
	done := 0
	for range 5 * b.N {
		base := done
		r := run(step, 16, func(i int) error {
			_, err := users.Create(ctx, &pb.User{Name: fmt.Sprintf("Growth User %d", base+i),
				Email: fmt.Sprintf("growth%d@example.com", base+i), Password: benchPassword})
			return err
		})
		checkErrs(b, "Create", r)
		done += step
		report(fmt.Sprintf("after %d creates (%.0f/s)", done, r.perSec()))
	}
}
