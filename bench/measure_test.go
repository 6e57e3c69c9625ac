// Package bench measures every shippy path against its physical baseline
// (bcrypt, NATS, JetStream) in the same process run, so that the figures that
// matter are ratios and hold on a noisy, shared 2-core machine.
//
// Each benchmark runs a fixed workload (scaled by b.N; run with -benchtime=1x),
// alternating baseline and subject in halves, reports both figures and their
// ratio with b.ReportMetric, and prints a line `ratio: <pair> = <value>`
// where higher is better. bench/run.sh runs them all (make bench).
package bench

import (
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// result is one measured workload.
type result struct {
	ops  int
	errs int
	dur  time.Duration
	lat  []time.Duration // sorted
	// slowAt are the start times of the calls slower than slowCall (runFor
	// only), to tell a pause of every caller at once from calls slow alone.
	slowAt []time.Time
}

func (r result) perSec() float64 { return float64(r.ops) / r.dur.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(r.lat)))) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

// worst is the slowest call: a stall hides behind p99 (one 5 s call in
// 10,000 leaves p99 untouched), so it is reported next to it.
func (r result) worst() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[len(r.lat)-1]
}

// over counts the calls slower than d.
func (r result) over(d time.Duration) int {
	i, _ := slices.BinarySearch(r.lat, d+1)
	return len(r.lat) - i
}

func (r result) merge(o result) result {
	lat := append(append([]time.Duration(nil), r.lat...), o.lat...)
	slices.Sort(lat)
	slowAt := append(append([]time.Time(nil), r.slowAt...), o.slowAt...)
	return result{ops: r.ops + o.ops, errs: r.errs + o.errs, dur: r.dur + o.dur, lat: lat, slowAt: slowAt}
}

// run calls op n times from conc goroutines and records each call's latency.
func run(n, conc int, op func(i int) error) result {
	var next, errs atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					errs.Add(1)
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	r := result{ops: n, errs: int(errs.Load()), dur: time.Since(start), lat: lat}
	slices.Sort(r.lat)
	return r
}

// runFor calls op from conc goroutines until d has passed and records each
// call's latency; errs counts failed calls, and the first error is kept.
func runFor(d time.Duration, conc int, op func() error) (result, error) {
	var mu sync.Mutex
	var all []time.Duration
	var slowAt []time.Time
	var errs int
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var slow []time.Time
			var n int
			var ferr error
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := op(); err != nil {
					n++
					if ferr == nil {
						ferr = err
					}
				}
				d := time.Since(t0)
				lat = append(lat, d)
				if d > slowCall {
					slow = append(slow, t0)
				}
			}
			mu.Lock()
			all = append(all, lat...)
			slowAt = append(slowAt, slow...)
			errs += n
			if first == nil {
				first = ferr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(all)
	return result{ops: len(all), errs: errs, dur: time.Since(start), lat: all, slowAt: slowAt}, first
}

// alternate measures base and subj in two interleaved halves each
// (base, subj, subj, base), so that a burst of load from elsewhere on the
// machine hits both about equally.
func alternate(half int, base, subj func(n int) result) (result, result) {
	b1 := base(half)
	s1 := subj(half)
	s2 := subj(half)
	b2 := base(half)
	return b1.merge(b2), s1.merge(s2)
}

// checkErrs fails the benchmark when a measured call failed: a figure with
// failed calls in it would flatter the subject.
func checkErrs(b *testing.B, what string, r result) {
	b.Helper()
	if r.errs > 0 {
		b.Fatalf("%s: %d of %d calls failed", what, r.errs, r.ops)
	}
}

// ratio prints the pair's line for run.sh and reports it as a metric.
// Higher is better: subject/baseline for throughput, baseline/subject for
// latency and memory.
func ratio(b *testing.B, pair string, v float64) {
	b.Helper()
	b.ReportMetric(v, pair+"-ratio")
	fmt.Printf("ratio: %s = %.3f\n", pair, v)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// burst is slow calls that began within a short gap of each other.
type burst struct {
	at   time.Time // the first one's start
	size int
}

// bursts groups the slow calls' start times into bursts: calls that began
// within gap of the one before. A burst as large as the number of callers
// is a pause of the whole path (a process or the machine stopped), not one
// slow call; bursts at a fixed period point at a timer.
func bursts(at []time.Time, gap time.Duration) []burst {
	at = slices.Clone(at)
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	var bs []burst
	for i := range at {
		if i == 0 || at[i].Sub(at[i-1]) > gap {
			bs = append(bs, burst{at: at[i]})
		}
		bs[len(bs)-1].size++
	}
	return bs
}
