package e2e

// The fault tests' harness: the two services as processes on JetStream,
// PostgreSQL and an in-process NATS server, a go-micro client in the test
// process calling the user-service by address (so calls keep working while
// NATS, and with it the registry, is down), and the count of welcome emails
// per user read from the email-services' logs and checked against the users
// table.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

const (
	userServiceName  = "go.micro.srv.user"
	emailServiceName = "go.micro.srv.email"
	// emailQueue is the email-service's default EMAIL_QUEUE: its replicas
	// share the JetStream consumer named after it.
	emailQueue = "go.micro.srv.email"
	// settleTimeout bounds the wait for every committed user's email.
	settleTimeout = 90 * time.Second
	// exitDeadline is the stated bound on a service's graceful stop.
	exitDeadline = 10 * time.Second
)

// faultStack is one test's world: its own NATS server and database, and
// every service process it started (stopped ones included: their logs
// still count).
type faultStack struct {
	t *testing.T
	// broker is MICRO_BROKER: "jetstream", or "" for the built-in one.
	broker   string
	nats     *natstest.Server
	dbURL    string
	userEnv  map[string]string
	emailEnv map[string]string
	client   client.Client
	prefix   string // in every email address this test creates

	mu     sync.Mutex
	users  []*userProcess
	emails []*process
	next   atomic.Int64 // user number
}

type userProcess struct {
	*process
	addr string
}

// startFaultStack starts users user-services and emails email-services with
// docker-compose.yml's environment, switched to the JetStream broker.
func startFaultStack(t *testing.T, users, emails int) *faultStack {
	t.Helper()
	return startFaultStackOn(t, "jetstream", users, emails)
}

// startFaultStackOn is startFaultStack on MICRO_BROKER=broker: "jetstream",
// or "" for the built-in broker (the registry stays NATS).
func startFaultStackOn(t *testing.T, broker string, users, emails int) *faultStack {
	t.Helper()
	ns := natstest.Start(t)
	db := pgtest.NewDatabase(t)
	s := &faultStack{
		t:        t,
		broker:   broker,
		nats:     ns,
		dbURL:    db,
		userEnv:  composeenv.Localize(t, composeenv.Service(t, "user-service"), ns.URL(), db),
		emailEnv: composeenv.Localize(t, composeenv.Service(t, "email-service"), ns.URL(), db),
		prefix:   "fault-" + randomSuffix(t),
	}
	for _, env := range []map[string]string{s.userEnv, s.emailEnv} {
		if broker == "" {
			delete(env, "MICRO_BROKER")
			delete(env, "MICRO_BROKER_ADDRESS")
			continue
		}
		env["MICRO_BROKER"] = broker
		env["MICRO_BROKER_ADDRESS"] = ns.URL()
	}
	// bcrypt's cost is not under test; the default would make load CPU-bound.
	s.userEnv["BCRYPT_COST"] = "4"
	// The client has no registry: it calls a user-service by its address.
	s.client = client.NewClient(
		client.Registry(registry.NewMemoryRegistry()),
		client.ContentType("application/protobuf"),
		client.RequestTimeout(20*time.Second),
	)
	for range users {
		s.startUser()
	}
	for range emails {
		s.startEmail()
	}
	s.waitEmailReplicas(emails)
	return s
}

// listeningOn matches go-micro's log line naming the server's address.
var listeningOn = regexp.MustCompile(`Transport \[\w+\] Listening on ([0-9.]+:[0-9]+)`)

// startUser starts a user-service on a random port and waits until it
// listens; its address is read from its log, as no registry may be up.
func (s *faultStack) startUser() *userProcess {
	t := s.t
	t.Helper()
	env := maps.Clone(s.userEnv)
	env["MICRO_SERVER_ADDRESS"] = "127.0.0.1:0"
	u := &userProcess{process: startProcess(t, "shippy-user-service", composeenv.Environ(env))}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := listeningOn.FindStringSubmatch(u.stderr.String()); m != nil {
			u.addr = m[1]
			break
		}
		select {
		case <-u.exited:
			t.Fatalf("shippy-user-service exited before it listened:\n%s", u.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("shippy-user-service did not log its address within 30s:\n%s", u.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.users = append(s.users, u)
	s.mu.Unlock()
	return u
}

// startEmail starts an email-service replica; waitEmailReplicas waits for it.
func (s *faultStack) startEmail() *process {
	s.t.Helper()
	p := startProcess(s.t, "shippy-email-service", composeenv.Environ(s.emailEnv))
	s.mu.Lock()
	s.emails = append(s.emails, p)
	s.mu.Unlock()
	return p
}

// waitEmailReplicas waits until n email-service nodes are registered: a
// replica registers after its subscriber is set up.
func (s *faultStack) waitEmailReplicas(n int) {
	t := s.t
	t.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(s.nats.URL())}, natsregistry.AskGoMicro(true))
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := reg.GetService(emailServiceName)
		nodes := 0
		for _, svc := range svcs {
			nodes += len(svc.Nodes)
		}
		if err == nil && nodes >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d email-service replicas registered within 30s (last error %v)", nodes, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends sig and waits up to within for the process to exit; it
// returns how long the exit took and fails the test past the deadline.
func (p *process) stop(t *testing.T, sig os.Signal, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.name, err)
	}
	select {
	case <-p.exited:
		return time.Since(start)
	case <-time.After(within):
		t.Errorf("%s did not exit within %s of %v", p.name, within, sig)
		p.cmd.Process.Kill()
		<-p.exited
		return time.Since(start)
	}
}

// kill ends the process with SIGKILL: no shutdown code runs.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.stop(t, syscall.SIGKILL, 10*time.Second)
}

// create calls UserService.Create on the user-service at addr for user
// number i of this test.
func (s *faultStack) create(ctx context.Context, addr string, i int64) error {
	_, err := pb.NewUserService(userServiceName, s.client).Create(ctx, &pb.User{
		Name:     fmt.Sprintf("Fault User %d", i),
		Company:  "Shippy",
		Email:    fmt.Sprintf("%s-%d@example.com", s.prefix, i),
		Password: "correct horse battery staple",
	}, client.WithAddress(addr))
	return err
}

// loadResult counts the Create calls of a load run.
type loadResult struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErrs  []string
}

func (r *loadResult) fail(err error) {
	r.failed.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.firstErrs) < 5 {
		r.firstErrs = append(r.firstErrs, err.Error())
	}
}

func (r *loadResult) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("%d ok, %d failed %q", r.ok.Load(), r.failed.Load(), r.firstErrs)
}

// load creates up to n users (n < 0: until ctx is done) with callers
// concurrent callers; caller c calls addrs()[c % len]. It returns at once;
// wait blocks until every caller has returned.
func (s *faultStack) load(ctx context.Context, n int64, callers int, addrs func() []string) (res *loadResult, wait func()) {
	res = &loadResult{}
	var wg sync.WaitGroup
	var issued atomic.Int64
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if n >= 0 && issued.Add(1) > n {
					return
				}
				as := addrs()
				if err := s.create(ctx, as[c%len(as)], s.next.Add(1)); err != nil {
					if ctx.Err() != nil {
						return // cut short by the test, not a result
					}
					res.fail(err)
				} else {
					res.ok.Add(1)
				}
			}
		}()
	}
	return res, wg.Wait
}

// createAll creates n users with callers callers and fails the test on any
// error: for faults that Create must not notice.
func (s *faultStack) createAll(n int64, callers int, addrs ...string) {
	s.t.Helper()
	res, wait := s.load(context.Background(), n, callers, func() []string { return addrs })
	wait()
	if res.failed.Load() != 0 {
		s.t.Fatalf("Create: %s; want every call to succeed", res)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sent is one welcome email, as the email-service logged it.
type sent struct {
	EventID string `json:"event_id"`
	UserID  string `json:"user_id"`
	Email   string `json:"email"`
	replica int
}

// sends reads every "welcome email sent" line of every email-service
// process this test started.
func (s *faultStack) sends() []sent {
	s.mu.Lock()
	emails := append([]*process(nil), s.emails...)
	s.mu.Unlock()
	var out []sent
	for i, p := range emails {
		sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
		sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
		for sc.Scan() {
			var line struct {
				Msg string `json:"msg"`
				sent
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "welcome email sent" {
				continue
			}
			line.sent.replica = i
			out = append(out, line.sent)
		}
	}
	return out
}

// withDB runs fn on a new connection to the test's database: a pooled one
// may have been cut by the test itself.
func (s *faultStack) withDB(fn func(ctx context.Context, conn *pgx.Conn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return fn(ctx, conn)
}

// committedUsers maps the id of every row of the users table to its email.
func (s *faultStack) committedUsers() (map[string]string, error) {
	users := map[string]string{}
	err := s.withDB(func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT id, email FROM users")
		if err != nil {
			return err
		}
		for rows.Next() {
			var id, email string
			if err := rows.Scan(&id, &email); err != nil {
				return err
			}
			users[id] = email
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return users, nil
}

// outboxCounts returns the rows of the outbox and those still pending.
func (s *faultStack) outboxCounts() (total, pending int64, err error) {
	err = s.withDB(func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx,
			"SELECT count(*), count(*) FILTER (WHERE published_at IS NULL) FROM outbox_events WHERE topic = $1",
			pb.TopicUserCreated).Scan(&total, &pending)
	})
	if err != nil {
		err = fmt.Errorf("read outbox_events: %w", err)
	}
	return total, pending, err
}

// usersWithoutOneEvent returns the committed users that do not have
// exactly one user.created row in the outbox (the user-service stores the
// event as protobuf in the row's payload).
func (s *faultStack) usersWithoutOneEvent(users map[string]string) ([]string, error) {
	events := map[string]int{}
	err := s.withDB(func(ctx context.Context, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, "SELECT event_id, payload FROM outbox_events WHERE topic = $1", pb.TopicUserCreated)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			var payload []byte
			if err := rows.Scan(&id, &payload); err != nil {
				return err
			}
			var ev pb.UserCreated
			if err := proto.Unmarshal(payload, &ev); err != nil {
				return fmt.Errorf("outbox event %s: decode payload: %w", id, err)
			}
			events[ev.GetId()]++
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox_events: %w", err)
	}
	var bad []string
	for id := range users {
		if events[id] != 1 {
			bad = append(bad, fmt.Sprintf("%s (%d events)", id, events[id]))
		}
	}
	return bad, nil
}

// consumerIdle reports whether the email-services' JetStream consumer has
// nothing left to deliver and nothing delivered but not yet acked.
func (s *faultStack) consumerIdle() (bool, string, error) { return consumerIdleAt(s.nats.URL()) }

// tally is the final count: per committed user, how many emails it got.
type tally struct {
	users      int
	sends      int
	lost       int      // committed users without an email
	duplicated int      // emails beyond the first for a user
	ghosts     int      // emails to users that were never committed
	examples   []string // a few offenders
	perReplica []int
}

func (s *faultStack) count() (tally, error) {
	users, err := s.committedUsers()
	if err != nil {
		return tally{}, err
	}
	all := s.sends()
	var tl tally
	tl.users, tl.sends = len(users), len(all)
	s.mu.Lock()
	tl.perReplica = make([]int, len(s.emails))
	s.mu.Unlock()
	byUser := map[string][]sent{}
	for _, m := range all {
		byUser[m.UserID] = append(byUser[m.UserID], m)
		tl.perReplica[m.replica]++
	}
	note := func(format string, args ...any) {
		if len(tl.examples) < 5 {
			tl.examples = append(tl.examples, fmt.Sprintf(format, args...))
		}
	}
	for id, email := range users {
		got := byUser[id]
		switch {
		case len(got) == 0:
			tl.lost++
			note("user %s (%s) got no email", id, email)
		case len(got) > 1:
			tl.duplicated += len(got) - 1
			note("user %s (%s) got %d emails: %+v", id, email, len(got), got)
		}
		if len(got) > 0 && got[0].Email != email {
			note("user %s: email went to %s; want %s", id, got[0].Email, email)
			tl.ghosts++
		}
	}
	for id, got := range byUser {
		if _, ok := users[id]; !ok {
			tl.ghosts += len(got)
			note("email to user %s, who is not in the users table: %+v", id, got)
		}
	}
	return tl, nil
}

// settle waits until the pipeline is at rest, then counts: every committed
// user has an email (or settleTimeout passed), the outbox has no pending
// row, and (on JetStream) the email consumer has nothing pending or unacked,
// so no late duplicate can still arrive (the built-in broker keeps nothing:
// a publish returns after the delivery). It fails the test unless each
// committed user got exactly one email, and logs the count.
func (s *faultStack) settle() tally {
	t := s.t
	t.Helper()
	start := time.Now()
	deadline := start.Add(settleTimeout)
	var last string
	for {
		tl, err := s.count()
		total, pending, oerr := s.outboxCounts()
		idle, state, cerr := true, "(none: built-in broker)", error(nil)
		if s.broker == "jetstream" {
			idle, state, cerr = s.consumerIdle()
		}
		last = fmt.Sprintf("%d users, %d emails, %d lost; outbox %d rows, %d pending (%v); consumer %s (%v)",
			tl.users, tl.sends, tl.lost, total, pending, oerr, state, cerr)
		if err == nil && tl.lost == 0 && oerr == nil && pending == 0 && cerr == nil && idle {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("pipeline not at rest after %s: %s", settleTimeout, last)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tl, err := s.count()
	if err != nil {
		t.Fatalf("count: %v", err)
	}
	t.Logf("%d committed users, %d emails over replicas %v: lost=%d duplicated=%d ghosts=%d (settled in %s; %s)",
		tl.users, tl.sends, tl.perReplica, tl.lost, tl.duplicated, tl.ghosts, time.Since(start).Round(time.Millisecond), last)
	if tl.lost != 0 || tl.duplicated != 0 || tl.ghosts != 0 {
		t.Errorf("lost=%d duplicated=%d ghosts=%d; want 0 each: %s", tl.lost, tl.duplicated, tl.ghosts, strings.Join(tl.examples, "; "))
	}
	if tl.sends != tl.users {
		t.Errorf("%d emails for %d committed users; want one each", tl.sends, tl.users)
	}
	users, err := s.committedUsers()
	if err != nil {
		t.Fatal(err)
	}
	bad, err := s.usersWithoutOneEvent(users)
	switch {
	case err != nil:
		t.Error(err)
	case len(bad) > 0:
		t.Errorf("%d committed users do not have exactly one user.created event in the outbox: %s", len(bad), strings.Join(bad[:min(len(bad), 5)], ", "))
	}
	if total, _, err := s.outboxCounts(); err == nil && total != int64(len(users)) {
		t.Errorf("outbox holds %d user.created events for %d committed users; want one each", total, len(users))
	}
	return tl
}
