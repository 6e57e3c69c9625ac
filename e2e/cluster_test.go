package e2e

// Issue 13: shippy on a cluster. Three nats-server processes routed as one
// JetStream cluster (streams and the email dedup bucket with 3 replicas), two
// user-services and three email-services on one PostgreSQL database. Under a
// load of 1,000 creates the stream's leader is SIGKILLed and started again,
// and one replica of each service is SIGKILLed and replaced: every committed
// user gets exactly one email, the restarted server holds the stream up to
// the same last sequence as the others, the replicas that ran throughout
// still deliver once the replacement is stopped, and the test logs the
// load each replica took.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

const (
	clusterUsers = 1000
	// sentBucketStream is the stream behind the email-service's dedup bucket
	// (shippy_email_sent).
	sentBucketStream = "KV_shippy_email_sent"
)

func TestClusterFailover(t *testing.T) {
	t.Parallel()
	logRuntime(t)
	c := startNATSCluster(t, 3)
	s := startClusterStack(t, c, 2, 3)

	for _, name := range []string{jsbroker.DefaultStream, jsbroker.DefaultStream + "_DLQ", sentBucketStream} {
		info := c.streamInfo(t, name)
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas, cluster %+v; want 3 (a leader and 2 followers)", name, info.Config.Replicas, info.Cluster)
		}
	}

	// The load: callers spread over the user-services that are up, paced
	// so that the faults fall within the 1,000 creates (unpaced, they take
	// a few seconds; a failover takes about ten).
	const callers, perSecond = 16, 40
	pace := time.NewTicker(time.Second / perSecond)
	defer pace.Stop()
	var liveMu sync.Mutex
	live := []string{s.users[0].addr, s.users[1].addr}
	addrs := func() []string {
		<-pace.C
		liveMu.Lock()
		defer liveMu.Unlock()
		return slices.Clone(live)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, wait := s.load(ctx, -1, callers, addrs)
	loadStart := time.Now()
	reach := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(120 * time.Second)
		for res.ok.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d users created within 120s; want %d: %s", res.ok.Load(), n, res)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// 1. SIGKILL the NATS server leading the event stream.
	reach(100)
	before := c.streamInfo(t, jsbroker.DefaultStream)
	leader, seqAtKill := before.Cluster.Leader, before.State.LastSeq
	down := c.node(t, leader)
	leaders, _ := c.leaders()
	down.proc.kill(t)
	killedAt := time.Now()
	t.Logf("SIGKILLed NATS server %s, the stream's leader, at stream sequence %d (%d creates); leaders were %v", leader, seqAtKill, res.ok.Load(), leaders)
	// The services are killed once JetStream has failed over: a service
	// that starts while the cluster or a stream has no leader waits for it
	// (jsbroker.RetryStart), which this test does not set out to measure.
	c.waitFailover(t, leader)
	t.Logf("JetStream failed over %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	atFailover, err := s.count()
	if err != nil {
		t.Fatal(err)
	}

	// 2. SIGKILL a user-service replica, start a new one.
	reach(clusterUsers / 2)
	victim := s.users[0]
	liveMu.Lock()
	live = slices.DeleteFunc(live, func(a string) bool { return a == victim.addr })
	liveMu.Unlock()
	victim.kill(t)
	u := s.startUser()
	waitServing(t, u.process)
	liveMu.Lock()
	live = append(live, u.addr)
	liveMu.Unlock()
	t.Logf("SIGKILLed user-service %s and started %s (%d creates)", victim.addr, u.addr, res.ok.Load())

	// 3. SIGKILL an email-service replica, start a new one.
	reach(clusterUsers * 13 / 20)
	s.emails[0].kill(t)
	s.startEmail()
	waitEmailNodes(t, c.urls(), 3)
	t.Logf("SIGKILLed email-service replica 0 and started replica %d (%d creates)", len(s.emails)-1, res.ok.Load())

	// 4. The NATS server comes back on its store (and its ports, unless
	// another test took one meanwhile).
	reach(clusterUsers * 8 / 10)
	seqAtRestart := c.streamInfo(t, jsbroker.DefaultStream).State.LastSeq
	down.start(t)
	t.Logf("restarted NATS server %s at stream sequence %d (%d events stored while it was down)", leader, seqAtRestart, seqAtRestart-seqAtKill)
	if seqAtRestart <= seqAtKill {
		t.Errorf("no event was stored while %s was down (sequence %d at the kill, %d at the restart); the catch-up proves nothing", leader, seqAtKill, seqAtRestart)
	}

	reach(clusterUsers)
	cancel()
	wait()
	took := time.Since(loadStart)
	// A call in flight to the killed user-service fails; nothing else may.
	if res.failed.Load() > callers {
		t.Errorf("Create: %s; want at most %d failures (the calls in flight to the killed replica)", res, callers)
	}
	t.Logf("load: %s in %s (%.0f creates/s)", res, took.Round(time.Millisecond), float64(res.ok.Load())/took.Seconds())

	tl := s.settleCluster(c.urls())
	if tl.users < clusterUsers {
		t.Errorf("%d users committed; want at least %d", tl.users, clusterUsers)
	}

	// The restarted server holds both replicated streams up to the leader's
	// last sequence.
	for _, name := range []string{jsbroker.DefaultStream, sentBucketStream} {
		want := c.streamInfo(t, name).State.LastSeq
		var got uint64
		waitUntil(t, fmt.Sprintf("%s to hold %s up to sequence %d", down.name, name, want), 60*time.Second, func() bool {
			got = down.localLastSeq(name)
			return got == want
		})
		t.Logf("restarted %s holds %s up to sequence %d, as the leader", down.name, name, got)
	}

	// The replicas that ran throughout still consume: with the one started
	// later stopped, they alone must deliver another 20 users' emails.
	// Those whose pull was waiting at a consumer leader that died get
	// nothing until nats.go misses two heartbeats and pulls again, about
	// 5 s after the kill with jsbroker's pull expiry (their "jetstream
	// consume" warnings are logged below).
	last := s.emails[len(s.emails)-1]
	last.stop(t, syscall.SIGTERM, exitDeadline)
	extraStart := time.Now()
	s.createAll(20, 4, addrs()...)
	tl = s.settleCluster(c.urls())
	t.Logf("20 more users with the replacement email-service stopped: emails in %s; sent after the failover per replica: %v",
		time.Since(extraStart).Round(time.Millisecond), sub(tl.perReplica, atFailover.perReplica))

	// The load each replica took.
	for i, p := range s.users {
		t.Logf("user-service replica %d: %d creates, %d events published by its relay%s",
			i, countLogLines(p.stderr.String(), "user created"), countLogLines(p.stderr.String(), "outbox event published"), endNote(p.process))
	}
	for i, n := range tl.perReplica {
		t.Logf("email-service replica %d: %d emails%s", i, n, endNote(s.emails[i]))
		for _, l := range strings.Split(s.emails[i].stderr.String(), "\n") {
			if strings.Contains(l, `"msg":"jetstream consume"`) || strings.Contains(l, "consumer gone") {
				t.Logf("  %s", l)
			}
		}
	}
}

// startClusterStack is startFaultStack on the cluster c: every service gets
// all three URLs and JETSTREAM_REPLICAS=3.
func startClusterStack(t *testing.T, c *natsCluster, users, emails int) *faultStack {
	t.Helper()
	db := pgtest.NewDatabase(t)
	urls := c.urls()
	s := &faultStack{
		t:        t,
		broker:   "jetstream",
		dbURL:    db,
		userEnv:  composeenv.Localize(t, composeenv.Service(t, "user-service"), urls, db),
		emailEnv: composeenv.Localize(t, composeenv.Service(t, "email-service"), urls, db),
		prefix:   "cluster-" + randomSuffix(t),
	}
	for _, env := range []map[string]string{s.userEnv, s.emailEnv} {
		if env["MICRO_BROKER_ADDRESS"] != urls || env["MICRO_REGISTRY_ADDRESS"] != urls {
			t.Fatalf("MICRO_BROKER_ADDRESS=%q MICRO_REGISTRY_ADDRESS=%q; want %q", env["MICRO_BROKER_ADDRESS"], env["MICRO_REGISTRY_ADDRESS"], urls)
		}
		env["JETSTREAM_REPLICAS"] = "3"
	}
	// bcrypt's cost is not under test; the default would make load CPU-bound.
	s.userEnv["BCRYPT_COST"] = "4"
	s.client = client.NewClient(
		client.Registry(registry.NewMemoryRegistry()),
		client.ContentType("application/protobuf"),
		client.RequestTimeout(20*time.Second),
	)
	// The first replica of each service creates the replicated streams
	// (user-service) or bucket (email-service) before the others start:
	// with nats-server 2.15.2, two or three clients creating the same
	// 3-replica stream at once all time out after 5 s (the stream is
	// created; a retry succeeds), and the services exit on that error.
	first := s.startUser()
	waitServing(t, first.process)
	for range users - 1 {
		s.startUser()
	}
	s.startEmail()
	waitEmailNodes(t, urls, 1)
	for range emails - 1 {
		s.startEmail()
	}
	waitEmailNodes(t, urls, emails)
	return s
}

// settleCluster is faultStack.settle with the consumer read through the
// cluster's URLs.
func (s *faultStack) settleCluster(urls string) tally {
	t := s.t
	t.Helper()
	start := time.Now()
	deadline := start.Add(settleTimeout)
	var last string
	for {
		tl, err := s.count()
		total, pending, oerr := s.outboxCounts()
		idle, state, cerr := consumerIdleAt(urls)
		last = fmt.Sprintf("%d users, %d emails, %d lost; outbox %d rows, %d pending (%v); consumer %s (%v)",
			tl.users, tl.sends, tl.lost, total, pending, oerr, state, cerr)
		if err == nil && tl.lost == 0 && oerr == nil && pending == 0 && cerr == nil && idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pipeline not at rest after %s: %s", settleTimeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tl, err := s.count()
	if err != nil {
		t.Fatalf("count: %v", err)
	}
	t.Logf("%d committed users, %d emails: lost=%d duplicated=%d ghosts=%d (settled in %s; %s)",
		tl.users, tl.sends, tl.lost, tl.duplicated, tl.ghosts, time.Since(start).Round(time.Millisecond), last)
	if tl.lost != 0 || tl.duplicated != 0 || tl.ghosts != 0 {
		t.Errorf("lost=%d duplicated=%d ghosts=%d; want 0 each: %s", tl.lost, tl.duplicated, tl.ghosts, strings.Join(tl.examples, "; "))
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
	return tl
}

// consumerIdleAt reports whether the email-services' JetStream consumer,
// reached through any of urls, has nothing left to deliver or to be acked.
func consumerIdleAt(urls string) (bool, string, error) {
	nc, err := nats.Connect(urls, nats.Timeout(2*time.Second))
	if err != nil {
		return false, "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, jsbroker.DefaultStream, jsbroker.ConsumerName(emailQueue, pb.TopicUserCreated))
	if err != nil {
		return false, "", err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false, "", err
	}
	state := fmt.Sprintf("pending %d, ack pending %d, redelivered %d", info.NumPending, info.NumAckPending, info.NumRedelivered)
	return info.NumPending == 0 && info.NumAckPending == 0, state, nil
}

// waitEmailNodes waits until n email-service nodes answer in the registry
// (a killed replica does not answer).
func waitEmailNodes(t *testing.T, urls string, n int) {
	t.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(strings.Split(urls, ",")...)}, natsregistry.AskGoMicro(true))
	var nodes int
	var err error
	waitUntil(t, fmt.Sprintf("%d email-service replicas registered", n), 60*time.Second, func() bool {
		var svcs []*registry.Service
		svcs, err = reg.GetService(emailServiceName)
		nodes = 0
		for _, svc := range svcs {
			nodes += len(svc.Nodes)
		}
		return err == nil && nodes >= n
	})
}

// waitServing waits until the service p logs "serving", and fails the test
// if it exits first.
func waitServing(t *testing.T, p *process) {
	t.Helper()
	waitUntil(t, p.name+" serving", 60*time.Second, func() bool {
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it served:\n%s", p.name, tail(p.stderr.String(), 10))
		default:
		}
		return countLogLines(p.stderr.String(), "serving") > 0
	})
}

// sub is a - b, element by element, over b's length.
func sub(a, b []int) []int {
	out := slices.Clone(a)
	for i := range b {
		out[i] -= b[i]
	}
	return out
}

func countLogLines(log, msg string) int {
	return strings.Count(log, `"msg":"`+msg+`"`)
}

// endNote says how a replica ended, if it did: the test SIGKILLs, and
// stops the last email-service with SIGTERM.
func endNote(p *process) string {
	select {
	case <-p.exited:
		if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return " (SIGKILLed)"
		}
		return " (stopped)"
	default:
		return ""
	}
}

// natsCluster is n nats-server processes routed to each other, each on
// loopback ports of its own with a store directory that outlives a kill.
type natsCluster struct {
	nodes []*natsNode
}

type natsNode struct {
	name                      string
	conf, store               string
	port, httpPort, routePort int
	routes                    string // every node's route URL, quoted
	cluster                   string // unique per test: routes never join another test's
	proc                      *process
}

// writeConf writes the node's configuration file for its current ports.
func (nd *natsNode) writeConf(t *testing.T) {
	t.Helper()
	conf := fmt.Sprintf(`server_name: %q
listen: "127.0.0.1:%d"
http: "127.0.0.1:%d"
jetstream { store_dir: %q }
cluster { name: %q, listen: "127.0.0.1:%d", routes: [%s] }
`, nd.name, nd.port, nd.httpPort, nd.store, nd.cluster, nd.routePort, nd.routes)
	if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
}

var (
	natsServerOnce sync.Once
	natsServerErr  error
)

// natsServerBinary builds nats-server from the module the tests use (as
// make build does) into the e2e binaries' folder, once per run.
func natsServerBinary(t *testing.T) string {
	t.Helper()
	natsServerOnce.Do(func() {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, "nats-server"), "github.com/nats-io/nats-server/v2")
		build.Dir = ".."
		if out, err := build.CombinedOutput(); err != nil {
			natsServerErr = fmt.Errorf("build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return filepath.Join(bin, "nats-server")
}

// freePorts returns n distinct free loopback ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	natsServerBinary(t)
	ports := freePorts(t, 3*n)
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats://127.0.0.1:%d", ports[3*i+2])))
	}
	c := &natsCluster{}
	dir := t.TempDir()
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("nats-%d", i), port: ports[3*i], httpPort: ports[3*i+1], routePort: ports[3*i+2],
			routes: strings.Join(routes, ", "), cluster: fmt.Sprintf("shippy-e2e-%d", ports[0])}
		nd.conf, nd.store = filepath.Join(dir, nd.name+".conf"), filepath.Join(dir, nd.name)
		nd.writeConf(t)
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		nd.start(t)
	}
	// JetStream answers once the cluster has elected a meta leader.
	nc, err := nats.Connect(c.urls())
	if err != nil {
		t.Fatalf("connect to the NATS cluster: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var last error
	waitUntil(t, "a JetStream meta leader", 60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, last = js.AccountInfo(ctx)
		return last == nil
	})
	return c
}

// start runs the node's nats-server and waits until it accepts clients. A
// port can be taken by another test before the server binds it (one
// freePorts picked, or the node's own while it was down): then the node
// gets new ports and starts again, on the same store (the others' routes
// to its old route port fail, but its own routes to them join it to the
// cluster).
func (nd *natsNode) start(t *testing.T) {
	t.Helper()
	for range 5 {
		if nd.tryStart(t) {
			return
		}
		if !strings.Contains(nd.proc.stderr.String(), "address already in use") {
			t.Fatalf("%s exited at start:\n%s", nd.name, nd.proc.stderr)
		}
		ports := freePorts(t, 3)
		nd.port, nd.httpPort, nd.routePort = ports[0], ports[1], ports[2]
		nd.writeConf(t)
	}
	t.Fatalf("%s: its ports were taken at each of 5 starts", nd.name)
}

// tryStart runs the node's nats-server and waits until it accepts clients
// (true) or exits (false).
func (nd *natsNode) tryStart(t *testing.T) bool {
	t.Helper()
	p := &process{name: nd.name, stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(natsServerBinary(t), "-c", nd.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", nd.name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			// Without the retries to a killed peer's route, which fill it.
			var lines []string
			for _, l := range strings.Split(p.stderr.String(), "\n") {
				if !strings.Contains(l, "Error trying to connect to route") {
					lines = append(lines, l)
				}
			}
			t.Logf("%s log:\n%s", nd.name, tail(strings.Join(lines, "\n"), 60))
		}
	})
	nd.proc = p
	accepting := false
	waitUntil(t, nd.name+" accepting clients or exiting", 30*time.Second, func() bool {
		select {
		case <-p.exited:
			return true
		default:
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", nd.port), time.Second)
		if err == nil {
			conn.Close()
			accepting = true
		}
		return accepting
	})
	return accepting
}

func (c *natsCluster) urls() string {
	var urls []string
	for _, nd := range c.nodes {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", nd.port))
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) node(t *testing.T, name string) *natsNode {
	t.Helper()
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	t.Fatalf("no NATS server named %q", name)
	return nil
}

// streamInfo asks the cluster (its stream leader answers) about a stream,
// retrying while a leader is being elected.
func (c *natsCluster) streamInfo(t *testing.T, name string) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	var last error
	waitUntil(t, "stream info of "+name, 60*time.Second, func() bool {
		info, last = c.tryStreamInfo(name)
		return last == nil && info.Cluster != nil && info.Cluster.Leader != ""
	})
	return info
}

func (c *natsCluster) tryStreamInfo(name string) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(c.urls(), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

// waitFailover waits until the JetStream meta group, shippy's streams and
// the email-services' consumer each have a leader other than the server
// down.
func (c *natsCluster) waitFailover(t *testing.T, down string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var state string
	for {
		leaders, err := c.leaders()
		state = fmt.Sprintf("%v (%v)", leaders, err)
		done := err == nil && len(leaders) == 5
		for _, l := range leaders {
			done = done && l != "" && l != down
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream leaders 60s after %s went down: %s; want all elsewhere", down, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("leaders after %s went down: %s", down, state)
}

// leaders names the leader of the meta group, of each of shippy's streams
// and of the email consumer.
func (c *natsCluster) leaders() (map[string]string, error) {
	nc, err := nats.Connect(c.urls(), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]string{}
	// Every server knows the meta leader; a killed one does not answer.
	for _, nd := range c.nodes {
		if l := nd.metaLeader(); l != "" {
			out["meta"] = l
			break
		}
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return out, fmt.Errorf("account info: %w", err)
	}
	for _, name := range []string{jsbroker.DefaultStream, jsbroker.DefaultStream + "_DLQ", sentBucketStream} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		if cl := st.CachedInfo().Cluster; cl != nil {
			out[name] = cl.Leader
		}
	}
	cons, err := js.Consumer(ctx, jsbroker.DefaultStream, jsbroker.ConsumerName(emailQueue, pb.TopicUserCreated))
	if err != nil {
		return out, fmt.Errorf("consumer: %w", err)
	}
	if cl := cons.CachedInfo().Cluster; cl != nil {
		out["consumer"] = cl.Leader
	}
	return out, nil
}

// metaLeader is the JetStream meta leader this server knows of ("" when it
// cannot tell).
func (nd *natsNode) metaLeader() string {
	var jsz struct {
		Meta struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if nd.jsz("", &jsz) != nil {
		return ""
	}
	return jsz.Meta.Leader
}

// jsz reads the server's monitoring endpoint /jsz?query into v.
func (nd *natsNode) jsz(query string, v any) error {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?%s", nd.httpPort, query))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// localLastSeq is the last sequence of stream in this server's own store,
// from its monitoring endpoint (0 when it cannot tell).
func (nd *natsNode) localLastSeq(stream string) uint64 {
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					LastSeq uint64 `json:"last_seq"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if nd.jsz("accounts=true&streams=true", &jsz) != nil {
		return 0
	}
	for _, a := range jsz.Accounts {
		for _, s := range a.Streams {
			if s.Name == stream {
				return s.State.LastSeq
			}
		}
	}
	return 0
}
