package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// pipeline is both services as processes with docker-compose.yml's
// environment, on this run's NATS and a fresh database.
type pipeline struct {
	natsURL string
	users   pb.UserService
	user    *process
	email   *process
}

func startPipeline(b *testing.B, bcryptCost int) *pipeline {
	b.Helper()
	ns := natstest.Start(b)
	db := pgtest.NewDatabase(b)
	userEnv := localEnv(b, "user-service", ns.URL(), db)
	userEnv["BCRYPT_COST"] = fmt.Sprint(bcryptCost)
	p := &pipeline{natsURL: ns.URL()}
	p.user = startProcess(b, "shippy-user-service", userEnv)
	p.email = startProcess(b, "shippy-email-service", localEnv(b, "email-service", ns.URL(), db))
	waitRegistered(b, ns.URL(), "go.micro.srv.user", p.user)
	waitRegistered(b, ns.URL(), "go.micro.srv.email", p.email)
	p.users = userClient(b, ns.URL())
	return p
}

// emailSent waits for the email-service's `Sending email to: <name>` line
// and returns the time this process received it through the stdout pipe.
func (p *pipeline) emailSent(b *testing.B, name string, timeout time.Duration) time.Time {
	b.Helper()
	want := "Sending email to: " + name
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.email.lines:
			if l.text == want {
				return l.at
			}
		case <-deadline:
			b.Fatalf("email-service did not print %q within %s", want, timeout)
		case <-p.email.exited:
			b.Fatalf("email-service exited:\n%s", p.email.stderr)
		}
	}
}

// BenchmarkCreateToEmail is pair 5: from Create returning to the
// email-service's mailer writing its line, one user at a time, against the
// raw NATS request/reply round trip. The mailer's line is timed when it
// arrives here through the pipe, which adds a pipe write and read to the
// path: the figure is an upper bound.
func BenchmarkCreateToEmail(b *testing.B) {
	p := startPipeline(b, 4) // the hash is before Create returns: its cost is not on this path
	ctx := context.Background()
	payload, _ := proto.Marshal(sampleEvent(0))
	raw := rawNATS(b, p.natsURL, payload)
	var seq int
	var early int
	pipeline := func(n int) result {
		r := result{ops: n}
		t0 := time.Now()
		for range n {
			seq++
			name := fmt.Sprintf("Latency User %d", seq)
			_, err := p.users.Create(ctx, &pb.User{Name: name, Email: fmt.Sprintf("latency%d@example.com", seq), Password: benchPassword})
			returned := time.Now()
			if err != nil {
				r.errs++
				continue
			}
			lat := p.emailSent(b, name, 30*time.Second).Sub(returned)
			if lat < 0 { // the email was out before the reply reached the caller
				early++
				lat = 0
			}
			r.lat = append(r.lat, lat)
		}
		r.dur = time.Since(t0)
		slices.Sort(r.lat)
		return r
	}
	pipeline(3) // warm up
	half := b.N * 40
	rawR, subj := alternate(half, func(n int) result { return run(n, 1, raw) }, pipeline)
	checkErrs(b, "Create", subj)
	b.ReportMetric(us(rawR.pct(50)), "rawnats-rtt-p50-us")
	b.ReportMetric(us(rawR.pct(99)), "rawnats-rtt-p99-us")
	b.ReportMetric(us(rawR.worst()), "rawnats-rtt-max-us")
	b.ReportMetric(us(subj.pct(50)), "create-to-email-p50-us")
	b.ReportMetric(us(subj.pct(99)), "create-to-email-p99-us")
	b.ReportMetric(us(subj.worst()), "create-to-email-max-us")
	b.ReportMetric(float64(early), "emails-before-reply")
	fmt.Printf("create-to-email: p50 %.0fus p99 %.0fus max %.0fus (%d of %d emails out before Create's reply arrived); raw NATS RTT p50 %.0fus p99 %.0fus max %.0fus\n",
		us(subj.pct(50)), us(subj.pct(99)), us(subj.worst()), early, len(subj.lat), us(rawR.pct(50)), us(rawR.pct(99)), us(rawR.worst()))
	ratio(b, "5-create-to-email-p50-vs-rawnats-rtt", float64(rawR.pct(50))/float64(max(subj.pct(50), time.Microsecond)))
}

// BenchmarkMemory is pair 6: each service's resident memory (VmRSS from
// /proc/<pid>/status) idle after start-up, and after 10,000 users were
// created, published and emailed.
func BenchmarkMemory(b *testing.B) {
	p := startPipeline(b, 4) // 10,000 hashes at cost 10 would take minutes
	time.Sleep(time.Second)  // idle means settled after start-up, not mid-registration
	userIdle, emailIdle := p.user.rssKiB(b), p.email.rssKiB(b)

	const events = 10000
	n := events * b.N
	ctx := context.Background()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := 0; i < n; {
			select {
			case l := <-p.email.lines:
				if strings.HasPrefix(l.text, "Sending email to: Memory User ") {
					i++
				}
			case <-time.After(60 * time.Second):
				return
			}
		}
	}()
	r := run(n, 16, func(i int) error {
		_, err := p.users.Create(ctx, &pb.User{Name: fmt.Sprintf("Memory User %d", i), Email: fmt.Sprintf("memory%d@example.com", i), Password: benchPassword})
		return err
	})
	checkErrs(b, "Create", r)
	<-sent
	userAfter, emailAfter := p.user.rssKiB(b), p.email.rssKiB(b)
	mib := func(kib float64) float64 { return kib / 1024 }
	b.ReportMetric(mib(userIdle), "user-idle-MiB")
	b.ReportMetric(mib(userAfter), "user-after-MiB")
	b.ReportMetric(mib(emailIdle), "email-idle-MiB")
	b.ReportMetric(mib(emailAfter), "email-after-MiB")
	b.ReportMetric(r.perSec(), "creates/s")
	fmt.Printf("rss: user-service idle %.1f MiB, after %d events %.1f MiB; email-service idle %.1f MiB, after %.1f MiB (%.0f creates/s at cost 4)\n",
		mib(userIdle), n, mib(userAfter), mib(emailIdle), mib(emailAfter), r.perSec())
	// Against the 40 MiB idle target: at least 1 meets it.
	ratio(b, "6-user-idle-rss-vs-40MiB", 40/mib(userIdle))
	ratio(b, "6-email-idle-rss-vs-40MiB", 40/mib(emailIdle))
}
