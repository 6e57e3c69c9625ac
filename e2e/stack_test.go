package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
)

// The default path as a user runs it: `make up` with nothing exported (SQLite,
// mdns, and the JetStream nats-server make up starts), the CLI with no
// exports, a burst of creates from parallel CLIs, and the email-service
// stopped with SIGTERM in the middle and started again by `make up`. Every
// created user gets exactly one welcome email; a token saved before the
// user-service restarts still works after; `make down` stops everything.
func TestMakeUpLosesNoEventAcrossEmailServiceRestart(t *testing.T) {
	const (
		users      = 600
		callers    = 8
		stopAt     = 200 // created users when the email-service is stopped
		restartAt  = 350 // created users when it is started again
		settleWait = 2 * time.Minute
	)
	requireNoMDNSStack(t)
	st := newMakeStack(t)
	st.make("up")
	st.signInAdmin(t)

	var (
		created  atomic.Int64
		mu       sync.Mutex
		names    []string
		issued   atomic.Int64
		wg       sync.WaitGroup
		failures []string
		suffix   = randomSuffix(t)
	)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := issued.Add(1)
				if i > users {
					return
				}
				name := fmt.Sprintf("Stack User %s %d", suffix, i)
				out, err := st.cli("create", "--name", name, "--email", fmt.Sprintf("stack-%s-%d@example.com", suffix, i))
				mu.Lock()
				if err != nil {
					failures = append(failures, fmt.Sprintf("create %d: %v: %s", i, err, out))
				} else {
					names = append(names, name)
				}
				mu.Unlock()
				if err == nil {
					created.Add(1)
				}
			}
		}()
	}

	// Stop the email-service in the middle of the burst, let events pile up
	// while it is down, then start it again the way a user would.
	waitUntil(t, fmt.Sprintf("%d users created", stopAt), settleWait, func() bool { return created.Load() >= stopAt })
	st.stop("shippy-email-service", syscall.SIGTERM)
	downAt := created.Load()
	waitUntil(t, fmt.Sprintf("%d users created", restartAt), settleWait, func() bool { return created.Load() >= restartAt })
	st.make("up")
	upAt := created.Load()
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of %d creates failed; first: %q", len(failures), users, failures[:min(5, len(failures))])
	}
	t.Logf("email-service stopped at %d created users and started again at %d: %d users created while it was down", downAt, upAt, upAt-downAt)
	if upAt <= downAt {
		t.Fatalf("no user was created while the email-service was down (%d, %d); the test proved nothing", downAt, upAt)
	}

	// Every user the store holds, not only the creates that reported success.
	listed := st.listNames(t)
	if len(listed) != users+1 {
		t.Errorf("list shows %d users; want %d and the admin", len(listed), users)
	}
	emails := filepath.Join(st.dir, "shippy-email-service.log")
	waitUntil(t, "a welcome email for every user", settleWait, func() bool {
		sent := sendCounts(t, emails)
		for _, n := range listed {
			if sent[n] == 0 {
				return false
			}
		}
		return true
	})
	// A sentinel created last: once its email is out, a duplicate of any
	// earlier event would have been sent already.
	sentinel := "Stack Sentinel " + suffix
	if out, err := st.cli("create", "--name", sentinel, "--email", "stack-sentinel-"+suffix+"@example.com"); err != nil {
		t.Fatalf("create the sentinel: %v: %s", err, out)
	}
	waitUntil(t, "the sentinel's email", settleWait, func() bool { return sendCounts(t, emails)[sentinel] == 1 })
	sent := sendCounts(t, emails)
	var dup []string
	for _, n := range listed {
		if sent[n] != 1 {
			dup = append(dup, fmt.Sprintf("%s: %d", n, sent[n]))
		}
	}
	if len(dup) > 0 {
		t.Errorf("%d users did not get exactly one email: %q", len(dup), dup[:min(10, len(dup))])
	}

	// The restarted email-service appended to its log: both starts are in it.
	log, err := os.ReadFile(emails)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(log), `"msg":"serving"`); n != 2 {
		t.Errorf("%s holds %d starts; want 2 (make up must append, not truncate)", emails, n)
	}

	// A restarted user-service keeps its signing key: the token the admin
	// saved before still lists the users.
	st.stop("shippy-user-service", syscall.SIGTERM)
	st.make("up")
	if got := len(st.listNames(t)); got != users+2 {
		t.Errorf("after the user-service restarted, list shows %d users; want %d", got, users+2)
	}

	st.make("down")
	for _, name := range []string{"nats-server", "shippy-user-service", "shippy-email-service"} {
		if pid, ok := st.pids[name]; ok && alive(pid) {
			t.Errorf("%s (pid %d) still runs after make down", name, pid)
		}
	}
}

// makeStack is `make up` with a stack folder of the test's own, run with none
// of the developer's shippy variables.
type makeStack struct {
	t    *testing.T
	root string
	dir  string
	env  []string
	pids map[string]int // every process make up started, by name (the last one)
}

func newMakeStack(t *testing.T) *makeStack {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st := &makeStack{
		t: t, root: root, dir: dir, pids: map[string]int{},
		// bcrypt's cost is not under test; the default would make the burst
		// CPU-bound. The user-service gets an admin, and the CLI saves its
		// token in the stack's folder.
		env: composeenv.Environ(map[string]string{"STACK_DIR": dir, "BCRYPT_COST": "4",
			"ADMIN_EMAILS": stackAdmin, "XDG_CONFIG_HOME": filepath.Join(dir, "config"),
			// Free ports for the ops servers, beside a developer's stack.
			"USER_METRICS_ADDRESS": "127.0.0.1:0", "EMAIL_METRICS_ADDRESS": "127.0.0.1:0"}),
	}
	t.Cleanup(func() {
		out, err := st.run("make", "-C", st.root, "down")
		if err != nil {
			t.Errorf("make down: %v\n%s", err, out)
		}
		if t.Failed() {
			for _, f := range []string{"nats-server.log", "shippy-user-service.log", "shippy-email-service.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s (last 4 KiB):\n%s", f, b[max(0, len(b)-4096):])
			}
		}
	})
	return st
}

func (st *makeStack) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = st.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// make runs a make target in the repository and records the pids it started.
func (st *makeStack) make(target string) {
	st.t.Helper()
	out, err := st.run("make", "-C", st.root, target)
	if err != nil {
		st.t.Fatalf("make %s: %v\n%s", target, err, out)
	}
	for _, name := range []string{"nats-server", "shippy-user-service", "shippy-email-service"} {
		if b, err := os.ReadFile(filepath.Join(st.dir, name+".pid")); err == nil {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				st.t.Fatalf("%s.pid: %v", name, err)
			}
			st.pids[name] = pid
		}
	}
}

// cli runs bin/shippy-user-cli as a user would after make up: no exports.
func (st *makeStack) cli(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(st.root, "bin", "shippy-user-cli"), append([]string{"--timeout", "30s"}, args...)...)
	cmd.Env = append(st.env, "SHIPPY_PASSWORD=correct horse battery staple")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// signInAdmin creates the admin's account and signs in as the admin: the
// CLI saves the token that listNames sends.
func (st *makeStack) signInAdmin(t *testing.T) {
	t.Helper()
	if out, err := st.cli("create", "--name", "Stack Admin", "--email", stackAdmin); err != nil {
		t.Fatalf("create the admin: %v: %s", err, out)
	}
	if out, err := st.cli("auth", "--email", stackAdmin); err != nil {
		t.Fatalf("auth as the admin: %v: %s", err, out)
	}
}

func (st *makeStack) listNames(t *testing.T) []string {
	t.Helper()
	out, err := st.cli("--json", "list")
	if err != nil {
		t.Fatalf("list: %v: %s", err, out)
	}
	var list struct {
		Users []struct {
			Name string `json:"name"`
		} `json:"users"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("list --json printed %q: %v", out, err)
	}
	names := make([]string, len(list.Users))
	for i, u := range list.Users {
		names[i] = u.Name
	}
	return names
}

// stop signals a service make up started and waits until it has exited.
func (st *makeStack) stop(name string, sig syscall.Signal) {
	st.t.Helper()
	pid, ok := st.pids[name]
	if !ok {
		st.t.Fatalf("make up started no %s", name)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		st.t.Fatalf("signal %s: %v", name, err)
	}
	waitUntil(st.t, name+" to exit", 30*time.Second, func() bool { return !alive(pid) })
}

// alive reports whether pid names a process that has not been reaped or
// exited; make's children are not ours to wait for.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited; only its parent's wait is missing.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) == 0 || fields[0] != "Z"
}

// sendCounts counts the email-service's `Sending email to: <name>` lines.
func sendCounts(t *testing.T, log string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(line, "Sending email to: "); ok {
			counts[name]++
		}
	}
	return counts
}

// requireNoMDNSStack fails when shippy services are registered in mdns on
// this host already (a developer's `make up`): the test's CLI could reach
// them instead of the stack it starts.
func requireNoMDNSStack(t *testing.T) {
	t.Helper()
	reg := registry.NewMDNSRegistry(registry.Timeout(time.Second))
	for _, name := range []string{userServiceName, emailServiceName} {
		if svcs, err := reg.GetService(name); err == nil && len(svcs) > 0 {
			t.Fatalf("%s is registered in mdns on this host already (a stack from `make up`? run `make down`): this test needs mdns to itself", name)
		}
	}
}
