package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	"github.com/shippy/shippy/internal/poll"
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
	return startPipelineLogging(b, bcryptCost, nil, nil)
}

// startPipelineLogging is startPipeline with each service's JSON log at
// debug level written to userLog and emailLog, when they are not nil.
func startPipelineLogging(b *testing.B, bcryptCost int, userLog, emailLog io.Writer) *pipeline {
	b.Helper()
	ns := natstest.Start(b)
	db := pgtest.NewDatabase(b)
	userEnv := localEnv(b, "user-service", ns.URL(), db)
	userEnv["BCRYPT_COST"] = fmt.Sprint(bcryptCost)
	emailEnv := localEnv(b, "email-service", ns.URL(), db)
	if userLog != nil {
		userEnv["LOG_LEVEL"], userEnv["LOG_FORMAT"] = "debug", "json"
	}
	if emailLog != nil {
		emailEnv["LOG_LEVEL"], emailEnv["LOG_FORMAT"] = "debug", "json"
	}
	p := &pipeline{natsURL: ns.URL()}
	p.user = startProcessLogging(b, "shippy-user-service", userEnv, userLog)
	p.email = startProcessLogging(b, "shippy-email-service", emailEnv, emailLog)
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

	// The same round trip at the pipeline's pace from a process of its own
	// (see floor_test.go): the floor of a path whose processes idle between
	// events, which the back-to-back RTT above is not on this machine.
	pace := subj.dur / time.Duration(subj.ops)
	paced := pacedFloor(b, floorRTT, p.natsURL, subj.ops, pace)
	b.ReportMetric(us(paced.pct(50)), "paced-rtt-p50-us")
	fmt.Printf("create-to-email: NATS RTT paced like the pipeline (one every %v, another process) p50 %.0fus p99 %.0fus: create-to-email p50 is %.1f of them\n",
		pace.Round(time.Microsecond), us(paced.pct(50)), us(paced.pct(99)), float64(subj.pct(50))/float64(paced.pct(50)))
	ratio(b, "5-create-to-email-p50-vs-paced-rtt", float64(paced.pct(50))/float64(max(subj.pct(50), time.Microsecond)))
}

// hop is one step of an event's way from Create to the mailer: from the log
// line from.msg (in from.log) to the line to.msg, matched by event_id.
type hop struct {
	name     string
	from, to logLine
}

type logLine struct {
	log *logbuf.Buffer
	msg string
}

// BenchmarkCreateToEmailStages splits pair 5's path into its hops, timed by
// the services' own log lines at debug level (JSON, nanosecond times, one
// clock): the user-service's commit ("user created"), its relay's claim of
// the outbox row, the email-service's receipt from JetStream (the publish,
// the stream's store and ack, and the delivery), its claim in the sent log
// (a KV write), and the mailer. Debug logging adds its own microseconds to
// each hop; the total is next to pair 5's figure for that reason.
//
//	go test -run '^$' -bench CreateToEmailStages -benchtime 1x ./bench/
func BenchmarkCreateToEmailStages(b *testing.B) {
	var userLog, emailLog logbuf.Buffer
	p := startPipelineLogging(b, 4, &userLog, &emailLog)
	ctx := context.Background()
	n := 3 + 80*b.N // the first 3 warm up
	var warm []string
	t0 := time.Now()
	for i := range n {
		name := fmt.Sprintf("Stages User %d", i)
		rsp, err := p.users.Create(ctx, &pb.User{Name: name, Email: fmt.Sprintf("stages%d@example.com", i), Password: benchPassword})
		if err != nil {
			b.Fatalf("Create(%q): %v", name, err)
		}
		if i < 3 {
			warm = append(warm, rsp.User.Id)
		}
		p.emailSent(b, name, 30*time.Second)
	}
	pace := time.Since(t0) / time.Duration(n) // one event every pace
	// The last line (the mailer's log line) can trail the stdout line.
	poll.Until(b, "every welcome email logged", 10*time.Second, func() bool {
		return strings.Count(emailLog.String(), `"msg":"welcome email sent"`) >= n
	})
	var (
		commit   = logLine{&userLog, "user created"}
		claim    = logLine{&userLog, "outbox event claimed"}
		received = logLine{&emailLog, "message received"}
		kvClaim  = logLine{&emailLog, "event claimed for sending"}
		mailer   = logLine{&emailLog, "welcome email sent"}
	)
	hops := []hop{
		{"commit to relay claim (wake-up, BEGIN, SELECT FOR UPDATE)", commit, claim},
		{"relay claim to email-service receipt (publish, store, ack, delivery)", claim, received},
		{"receipt to sent-log claim (decode, KV create)", received, kvClaim},
		{"sent-log claim to mailer", kvClaim, mailer},
		{"total, commit to mailer", commit, mailer},
	}
	times := map[*logbuf.Buffer]map[string]map[string]time.Time{} // log → msg → event id → time
	for _, buf := range []*logbuf.Buffer{&userLog, &emailLog} {
		times[buf] = logTimes(b, buf.String(), warm)
	}
	for _, h := range hops {
		from, to := times[h.from.log][h.from.msg], times[h.to.log][h.to.msg]
		var lat []time.Duration
		for id, t0 := range from {
			if t1, ok := to[id]; ok {
				lat = append(lat, t1.Sub(t0))
			}
		}
		if len(lat) < n-len(warm) {
			b.Fatalf("%s: %d events have both lines %q and %q; want %d", h.name, len(lat), h.from.msg, h.to.msg, n-len(warm))
		}
		slices.Sort(lat)
		r := result{ops: len(lat), lat: lat}
		fmt.Printf("stages: %-70s p50 %5.0fus p90 %5.0fus\n", h.name, us(r.pct(50)), us(r.pct(90)))
	}
	// The floors of the two JetStream hops, one event at a time on the same
	// server: what a durable path pays with no framework at all, back to
	// back in this process, then from another process at the pipeline's pace.
	floors := []struct {
		name string
		r    result
	}{
		{"floor, back to back here: publish to a file stream, to a pull consumer", backToBackFloor(b, floorDeliver, p.natsURL, n-len(warm))},
		{"floor, back to back here: KV Create in a file bucket", backToBackFloor(b, floorKV, p.natsURL, n-len(warm))},
		{"floor, paced: NATS request/reply", pacedFloor(b, floorRTT, p.natsURL, n-len(warm), pace)},
		{"floor, paced: publish to a file stream, to a pull consumer", pacedFloor(b, floorDeliver, p.natsURL, n-len(warm), pace)},
		{"floor, paced: KV Create in a file bucket", pacedFloor(b, floorKV, p.natsURL, n-len(warm), pace)},
	}
	for _, f := range floors {
		fmt.Printf("stages: %-70s p50 %5.0fus p90 %5.0fus\n", f.name, us(f.r.pct(50)), us(f.r.pct(90)))
	}
	fmt.Printf("stages: paced floors: one operation every %v (the pipeline's pace), from a process of their own\n", pace.Round(time.Microsecond))
}

// logTimes reads a service's JSON log: for each message, the time of its
// first line for each event_id, leaving out the warm-up users' events.
func logTimes(b *testing.B, log string, skipUsers []string) map[string]map[string]time.Time {
	b.Helper()
	out := map[string]map[string]time.Time{}
	skipEvents := map[string]bool{}
	for _, line := range strings.Split(log, "\n") {
		var l struct {
			Time    time.Time `json:"time"`
			Msg     string    `json:"msg"`
			EventID string    `json:"event_id"`
			UserID  string    `json:"user_id"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.EventID == "" {
			continue
		}
		if slices.Contains(skipUsers, l.UserID) {
			skipEvents[l.EventID] = true
		}
		if out[l.Msg] == nil {
			out[l.Msg] = map[string]time.Time{}
		}
		if _, ok := out[l.Msg][l.EventID]; !ok {
			out[l.Msg][l.EventID] = l.Time
		}
	}
	for _, m := range out {
		for id := range skipEvents {
			delete(m, id)
		}
	}
	return out
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
