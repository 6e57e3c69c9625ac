package bench

// BenchmarkCapacity measures what one replica of each service handles, the
// figures README's capacity section is computed from. Throughput on a
// shared 2-core machine depends on what else runs, so each figure comes
// with the replica's own CPU time per operation (from /proc), which does
// not: creates or emails per core-second is 1000 / cpu-ms.
//
//	capacity: user-service ... create/s, cpu-ms/create, bcrypt cpu-ms/hash
//	capacity: email-service <mailer> <nats> ... email/s, cpu-ms/email

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

func BenchmarkCapacity(b *testing.B) {
	b.Run("user-service", benchCapacityCreates)
	for _, nats := range []string{"nats", "cluster3"} {
		for _, mailer := range []string{"log", "smtp"} {
			b.Run(fmt.Sprintf("email-service/%s/%s", mailer, nats), func(b *testing.B) {
				benchCapacityEmails(b, mailer, 0, nats == "cluster3")
			})
		}
	}
	// An SMTP server that takes 100 ms to accept an email, as a remote
	// provider may: the replica's rate is then bound by the events it
	// handles at once, not by its CPU.
	b.Run("email-service/smtp-100ms/nats", func(b *testing.B) {
		benchCapacityEmails(b, "smtp", 100*time.Millisecond, false)
	})
}

// benchCapacityCreates: one user-service with docker-compose.yml's
// BCRYPT_COST (10) under 4 callers, against bcrypt alone in this process.
func benchCapacityCreates(b *testing.B) {
	users, p, _ := userStack(b, nil)
	ctx := context.Background()
	var seq atomic.Int64
	create := func(int) error {
		i := seq.Add(1)
		_, err := users.Create(ctx, &pb.User{
			Name: fmt.Sprintf("Capacity User %d", i), Company: "Bench",
			Email: fmt.Sprintf("capacity%d@example.com", i), Password: benchPassword,
		})
		return err
	}
	run(4, 4, create) // warm connections and the database pool

	// bcrypt's CPU per hash, on one goroutine of this process.
	hashes := 10 * b.N
	before := selfCPU(b)
	for range hashes {
		if _, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcryptCost); err != nil {
			b.Fatal(err)
		}
	}
	bcryptCPU := (selfCPU(b) - before) / time.Duration(hashes)

	n := 100 * b.N
	cpu0 := procCPU(b, p)
	r := run(n, 4, create)
	cpu := (procCPU(b, p) - cpu0) / time.Duration(n)
	checkErrs(b, "Create", r)
	b.ReportMetric(r.perSec(), "create/s")
	b.ReportMetric(ms(cpu), "cpu-ms/create")
	b.ReportMetric(ms(bcryptCPU), "bcrypt-cpu-ms/hash")
	fmt.Printf("capacity: user-service BCRYPT_COST=%d: %d creates, 4 callers: %.1f create/s, %.1f cpu-ms/create (%.1f creates per core-second); bcrypt alone %.1f cpu-ms/hash; p50 %.0f ms\n",
		bcryptCost, n, r.perSec(), ms(cpu), 1000/ms(cpu), ms(bcryptCPU), ms(r.pct(50)))
}

// benchCapacityEmails: a backlog of events, made with the email-service
// stopped, drained by one email-service replica: the logging mailer or SMTP
// to a sink in this process; one NATS server (replicas 1) or a 3-server
// cluster (JETSTREAM_REPLICAS=3, so every claim in the dedup bucket is a
// replicated write).
func benchCapacityEmails(b *testing.B, mailer string, smtpDelay time.Duration, cluster bool) {
	var natsURL string
	replicas := "1"
	if cluster {
		natsURL, replicas = natstest.StartCluster(b, 3).URLs(), "3"
	} else {
		natsURL = natstest.Start(b).URL()
	}
	db := pgtest.NewDatabase(b)
	userEnv := localEnv(b, "user-service", natsURL, db)
	userEnv["BCRYPT_COST"] = "4" // the backlog is not what is measured
	userEnv["JETSTREAM_REPLICAS"] = replicas
	up := startProcess(b, "shippy-user-service", userEnv)
	waitRegistered(b, natsURL, "go.micro.srv.user", up)
	users := userClient(b, natsURL)

	n := 500 * b.N
	if smtpDelay > 0 {
		n = 50 * b.N
	}
	ctx := context.Background()
	r := run(n, 8, func(i int) error {
		_, err := users.Create(ctx, &pb.User{
			Name: fmt.Sprintf("Mail User %d", i), Company: "Bench",
			Email: fmt.Sprintf("mail%d@example.com", i), Password: benchPassword,
		})
		return err
	})
	checkErrs(b, "Create (backlog)", r)

	emailEnv := localEnv(b, "email-service", natsURL, "")
	emailEnv["JETSTREAM_REPLICAS"] = replicas
	var sink *countingSink
	if mailer == "smtp" {
		sink = startCountingSink(b, smtpDelay)
		emailEnv["SMTP_URL"] = "smtp://" + sink.addr + "?starttls=none"
		emailEnv["MAIL_FROM"] = "Shippy <welcome@shippy.example>"
	}
	ep := startProcess(b, "shippy-email-service", emailEnv)

	// From the first "Sending email to:" line to the n-th: the replica's
	// start is not part of the rate.
	var t0 time.Time
	var cpu0 time.Duration
	seen := 0
	deadline := time.After(5 * time.Minute)
	for seen < n {
		select {
		case l := <-ep.lines:
			if !strings.HasPrefix(l.text, "Sending email to:") {
				continue
			}
			seen++
			if seen == 1 {
				t0, cpu0 = l.at, procCPU(b, ep)
			}
		case <-ep.exited:
			b.Fatalf("email-service exited after %d of %d emails:\n%s", seen, n, ep.stderr)
		case <-deadline:
			b.Fatalf("%d of %d emails within 5 minutes", seen, n)
		}
	}
	wall := time.Since(t0)
	cpu := (procCPU(b, ep) - cpu0) / time.Duration(n-1)
	if sink != nil && sink.n.Load() < int64(n) {
		b.Errorf("the SMTP sink received %d emails; want %d", sink.n.Load(), n)
	}
	perSec := float64(n-1) / wall.Seconds()
	b.ReportMetric(perSec, "email/s")
	b.ReportMetric(ms(cpu), "cpu-ms/email")
	fmt.Printf("capacity: email-service mailer=%s (SMTP delay %s) JETSTREAM_REPLICAS=%s: %d emails: %.0f email/s, %.2f cpu-ms/email (%.0f emails per core-second)\n",
		mailer, smtpDelay, replicas, n, perSec, ms(cpu), 1000/ms(cpu))
}

// procCPU is the user and system CPU time the process p has used so far.
func procCPU(b *testing.B, p *process) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Fatalf("read %s stat: %v", p.name, err)
	}
	// The fields after the command name, which is in parentheses: state is
	// the first, utime and stime (clock ticks) the 12th and 13th.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("parse %s stat %q: %v", p.name, s, err)
		}
		ticks += v
	}
	// Linux reports them in USER_HZ, 100 per second on every architecture Go
	// supports there.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// selfCPU is this process's user and system CPU time.
func selfCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingSink is an SMTP server that accepts and counts every email,
// delay after it has read one.
type countingSink struct {
	addr  string
	delay time.Duration
	n     atomic.Int64
}

func startCountingSink(b *testing.B, delay time.Duration) *countingSink {
	b.Helper()
	s := &countingSink{delay: delay}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return countingSession{s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() { _ = srv.Close() })
	return s
}

type countingSession struct{ sink *countingSink }

func (countingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (countingSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s countingSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	time.Sleep(s.sink.delay) // the server's latency, simulated
	s.sink.n.Add(1)
	return nil
}
func (countingSession) Reset()        {}
func (countingSession) Logout() error { return nil }
