package e2e

// Fault tests (issue 4): whatever fails between Create and the mailer, every
// committed user gets exactly one welcome email. Each test counts the emails
// per user at the email-services (their "welcome email sent" log lines)
// against the users table, once the outbox and the JetStream consumer are
// at rest, and logs "lost=0 duplicated=0". The failing-mailer test lives in
// shippy-email-service (TestFaultFailingMailer): it needs a mailer that
// fails, which the binary does not have.

import (
	"context"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shippy/shippy/internal/pgtest"
)

func logRuntime(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() { t.Logf("runtime %s", time.Since(start).Round(time.Millisecond)) })
}

// 1. The broker is down while users are created: Create does not notice,
// and the events go out once NATS is back on the same port and store.
func TestFaultBrokerDown(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStack(t, 1, 1)
	s.nats.Stop()
	s.createAll(100, 4, s.users[0].addr)
	// Every event must be held back by the outage, or the test proves nothing.
	if _, pending, err := s.outboxCounts(); err != nil || pending != 100 {
		t.Fatalf("outboxCounts() with NATS down = %d pending, %v; want 100, nil", pending, err)
	}
	s.nats.Restart()
	if tl := s.settle(); tl.users != 100 {
		t.Errorf("%d users committed; want 100", tl.users)
	}
}

// 2. The email-service is down while users are created: the durable
// consumer keeps the events until it is back.
func TestFaultEmailServiceDown(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStack(t, 1, 1)
	s.emails[0].stop(t, syscall.SIGTERM, exitDeadline)
	s.createAll(100, 4, s.users[0].addr)
	s.startEmail()
	if tl := s.settle(); tl.users != 100 {
		t.Errorf("%d users committed; want 100", tl.users)
	}
}

// 3. The user-service is killed (SIGKILL) while it creates users: events
// committed but not yet published go out after the restart, and a user
// whose transaction did not commit gets nothing.
func TestFaultCrashBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStack(t, 1, 1)
	u := s.users[0]
	ctx, cancel := context.WithCancel(context.Background())
	res, wait := s.load(ctx, -1, 8, func() []string { return []string{u.addr} })
	waitUntil(t, "100 users created", 60*time.Second, func() bool { return res.ok.Load() >= 100 })
	u.kill(t)
	cancel()
	wait()
	if _, pending, err := s.outboxCounts(); err == nil {
		t.Logf("after SIGKILL under load (%s): %d events committed and not yet published", res, pending)
	}
	s.startUser()
	if tl := s.settle(); int64(tl.users) < res.ok.Load() {
		t.Errorf("%d users committed; want at least the %d Creates that succeeded", tl.users, res.ok.Load())
	}
}

// 5. Two user-services and three email-services share one database and one
// NATS: 1,000 users, 1,000 emails, every email replica doing its share.
func TestFaultScaleOut(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStack(t, 2, 3)
	s.createAll(1000, 16, s.users[0].addr, s.users[1].addr)
	tl := s.settle()
	if tl.users != 1000 {
		t.Errorf("%d users committed; want 1000", tl.users)
	}
	for i, n := range tl.perReplica {
		if n == 0 {
			t.Errorf("email-service replica %d sent no email; want the work spread over all %d (%v)", i, len(tl.perReplica), tl.perReplica)
		}
	}
}

// 6. SIGTERM to either service under load: it exits within 10 seconds and
// nothing is lost or sent twice; the user-service publishes every event it
// committed before it exits.
func TestFaultGracefulStop(t *testing.T) {
	t.Parallel()
	t.Run("user-service", func(t *testing.T) {
		t.Parallel()
		logRuntime(t)
		s := startFaultStack(t, 1, 1)
		u := s.users[0]
		ctx, cancel := context.WithCancel(context.Background())
		res, wait := s.load(ctx, -1, 8, func() []string { return []string{u.addr} })
		waitUntil(t, "50 users created", 60*time.Second, func() bool { return res.ok.Load() >= 50 })
		took := u.stop(t, syscall.SIGTERM, exitDeadline)
		cancel()
		wait()
		t.Logf("user-service exited %s after SIGTERM under load (%s), exit code %d", took.Round(time.Millisecond), res, u.cmd.ProcessState.ExitCode())
		if code := u.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("user-service exited with code %d after SIGTERM; want 0:\n%s", code, tail(u.stderr.String(), 20))
		}
		_, pending, err := s.outboxCounts()
		if err != nil {
			t.Fatal(err)
		}
		if pending != 0 {
			// Not lost (the next start would publish them), but a graceful
			// stop publishes what its requests committed before the broker
			// disconnects.
			t.Errorf("the stopped user-service left %d events unpublished in the outbox; want 0 after a graceful stop", pending)
			s.startUser()
		}
		if tl := s.settle(); int64(tl.users) > res.ok.Load() {
			t.Logf("%d users were committed although their Create failed or was cut short at the stop", int64(tl.users)-res.ok.Load())
		}
	})
	t.Run("email-service", func(t *testing.T) {
		t.Parallel()
		logRuntime(t)
		s := startFaultStack(t, 1, 1)
		e := s.emails[0]
		ctx, cancel := context.WithCancel(context.Background())
		res, wait := s.load(ctx, -1, 8, func() []string { return []string{s.users[0].addr} })
		waitUntil(t, "30 emails sent", 60*time.Second, func() bool { return len(s.sends()) >= 30 })
		took := e.stop(t, syscall.SIGTERM, exitDeadline)
		t.Logf("email-service exited %s after SIGTERM under load, exit code %d", took.Round(time.Millisecond), e.cmd.ProcessState.ExitCode())
		if code := e.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("email-service exited with code %d after SIGTERM; want 0:\n%s", code, tail(e.stderr.String(), 20))
		}
		before := res.ok.Load()
		s.startEmail()
		// Keep the load on until the new replica has sent some emails.
		waitUntil(t, "the new email-service sending", 60*time.Second, func() bool {
			tl, err := s.count()
			return err == nil && tl.perReplica[len(tl.perReplica)-1] >= 20
		})
		cancel()
		wait()
		if res.failed.Load() != 0 {
			t.Errorf("Create: %s; stopping the email-service must not fail any", res)
		}
		t.Logf("%d users created before the stop, %s in all", before, res)
		s.settle()
	})
}

// 7. PostgreSQL cuts the service's connections again and again under load:
// callers get errors, no user is committed without its event, and the
// service serves again afterwards without a restart.
func TestFaultPostgresConnectionsCut(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	s := startFaultStack(t, 1, 1)
	addr := s.users[0].addr
	u, err := url.Parse(s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, wait := s.load(ctx, 300, 8, func() []string { return []string{addr} })

	// The cutter works from the admin database so that it does not cut itself.
	admin, err := pgx.Connect(ctx, os.Getenv(pgtest.EnvVar))
	if err != nil {
		t.Fatalf("connect to %s: %v", pgtest.EnvVar, err)
	}
	defer admin.Close(context.Background())
	loadDone := make(chan struct{})
	go func() { wait(); close(loadDone) }()
	var cut atomic.Int64
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
cutting:
	for {
		select {
		case <-loadDone:
			break cutting
		case <-tick.C:
		}
		var n int64
		err := admin.QueryRow(ctx,
			`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
			dbName).Scan(&n)
		if err != nil {
			t.Fatalf("terminate backends: %v", err)
		}
		cut.Add(n)
	}
	t.Logf("cut %d connections while creating 300 users: %s", cut.Load(), res)
	if cut.Load() == 0 {
		t.Errorf("no connection was cut; the test proved nothing")
	}

	// Recovery without a restart: the first Create may still meet a dead
	// pooled connection, then they succeed.
	waitUntil(t, "a Create to succeed after the cuts", 30*time.Second, func() bool {
		return s.create(ctx, addr, s.next.Add(1)) == nil
	})
	for range 20 {
		if err := s.create(ctx, addr, s.next.Add(1)); err != nil {
			t.Fatalf("Create after the cuts = %v; want success without restarting the service", err)
		}
	}
	select {
	case <-s.users[0].exited:
		t.Fatalf("user-service exited:\n%s", tail(s.users[0].stderr.String(), 20))
	default:
	}
	s.settle()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
