// Package e2e runs shippy as a user does: the three binaries as processes,
// the services configured with exactly the environment in docker-compose.yml
// (hosts swapped for a local PostgreSQL and an in-process NATS server).
package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// bin is the folder the binaries are built into once per test run.
var bin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shippy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./shippy-user-service", "./shippy-email-service", "./shippy-user-cli")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build the binaries:", err)
		return 1
	}
	bin = dir
	return m.Run()
}

// The pipeline in each mode a user can pick: docker-compose.yml's durable
// JetStream broker, go-micro's core NATS broker with the protobuf and the
// JSON codec, and go-micro's built-in (http) broker.
func TestCreateUserSendsOneWelcomeEmail(t *testing.T) {
	modes := []struct {
		name    string
		broker  string // MICRO_BROKER; brokerCompose keeps docker-compose.yml's
		codec   string // EVENTS_CODEC
		subject string // where the event crosses NATS; "" when it does not
	}{
		{"compose (jetstream broker), protobuf events", brokerCompose, "", jsbroker.DefaultSubjectPrefix + "." + pb.TopicUserCreated},
		{"nats broker, protobuf events", "nats", "", pb.TopicUserCreated},
		{"nats broker, json events", "nats", "json", pb.TopicUserCreated},
		{"built-in broker", "", "", ""},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			st := startStack(t, mode.broker, mode.codec)

			var wire *wireTap
			if mode.subject != "" {
				wire = tapTopic(t, st.natsURL, mode.subject)
			}

			name := "Ada Lovelace " + randomSuffix(t)
			email := strings.ToLower(strings.ReplaceAll(name, " ", ".")) + "@example.com"
			const password = "correct horse battery staple"
			out := st.cli(t, 0, "create", "--name", name, "--email", email, "--company", "Analytical Engines", "--password", password)
			if !strings.HasPrefix(out, "Created: ") {
				t.Fatalf("create printed %q; want \"Created: <id>\"", out)
			}
			id := strings.TrimSpace(strings.TrimPrefix(out, "Created: "))

			// Use every RPC once so their logs are searched for secrets too.
			// Reads need a token: auth saves Ada's, which reads her own user
			// but may not list; the admin's may.
			token := strings.TrimSpace(st.cli(t, 0, "auth", "--email", email, "--password", password))
			st.cli(t, 0, "get", "--id", id)
			st.cli(t, 1, "list")
			st.cli(t, 0, "create", "--name", "Root", "--email", stackAdmin, "--password", password)
			admin := strings.TrimSpace(st.cli(t, 0, "auth", "--no-save", "--email", stackAdmin, "--password", password))
			if list := st.cli(t, 0, "--token", admin, "list"); !strings.Contains(list, email) {
				t.Errorf("list printed %q; want it to contain %s", list, email)
			}
			st.cli(t, 0, "validate", "--token", token)
			st.cli(t, 1, "auth", "--email", email, "--password", "wrong password!")

			line := "Sending email to: " + name
			st.email.waitFor(t, line, 30*time.Second)

			// A second user is a sentinel: once its email is out, a duplicate
			// of the first would have been sent already.
			sentinel := "Sentinel " + randomSuffix(t)
			st.cli(t, 0, "create", "--name", sentinel, "--email", strings.ReplaceAll(strings.ToLower(sentinel), " ", ".")+"@example.com", "--password", password)
			st.email.waitFor(t, "Sending email to: "+sentinel, 30*time.Second)
			if n := strings.Count(st.email.stdout.String(), line+"\n"); n != 1 {
				t.Errorf("email-service printed %q %d times; want exactly 1", line, n)
			}

			secrets := []string{password, "$2a$", "$2b$", "$2y$"}
			for _, p := range []*process{st.user, st.email} {
				for _, s := range secrets {
					if strings.Contains(p.stdout.String(), s) || strings.Contains(p.stderr.String(), s) {
						t.Errorf("%s logged %q", p.name, s)
					}
				}
			}
			if claims := jwtPayload(t, token); strings.Contains(claims, "$2") || strings.Contains(claims, password) {
				t.Errorf("token claims %s hold a password or hash", claims)
			}
			if wire != nil {
				bodies := wire.waitBodies(t, 2, 10*time.Second)
				for _, b := range bodies {
					for _, s := range secrets {
						if strings.Contains(string(b), s) {
							t.Errorf("event on the wire %q holds %q", b, s)
						}
					}
				}
				if !strings.Contains(string(bodies[0]), email) && !strings.Contains(string(bodies[1]), email) {
					t.Errorf("no event on the wire names %s: %q", email, bodies)
				}
			}
		})
	}
}

type stack struct {
	natsURL string
	cliEnv  []string
	user    *process
	email   *process
}

// stackAdmin is the ADMIN_EMAILS the stacks' user-service gets (the compose
// file names none).
const stackAdmin = "root@example.com"

// brokerCompose asks startStack for docker-compose.yml's broker as written.
const brokerCompose = "compose"

// startStack starts both services with docker-compose.yml's environment,
// with MICRO_BROKER replaced by broker unless it is brokerCompose; "" means
// go-micro's built-in broker.
func startStack(t *testing.T, broker, codec string) *stack {
	t.Helper()
	ns := natstest.Start(t)
	db := pgtest.NewDatabase(t)

	local := func(env map[string]string) map[string]string {
		out := composeenv.Localize(t, env, ns.URL(), db)
		switch broker {
		case brokerCompose:
		case "":
			delete(out, "MICRO_BROKER")
			delete(out, "MICRO_BROKER_ADDRESS")
		default:
			out["MICRO_BROKER"] = broker
		}
		return out
	}
	userEnv := local(composeenv.Service(t, "user-service"))
	if codec != "" {
		userEnv["EVENTS_CODEC"] = codec
	}
	userEnv["ADMIN_EMAILS"] = stackAdmin
	cliEnv := local(composeenv.Service(t, "user-cli"))
	// auth saves the token here, not in the developer's ~/.config.
	cliEnv["XDG_CONFIG_HOME"] = t.TempDir()
	st := &stack{natsURL: ns.URL(), cliEnv: composeenv.Environ(cliEnv)}
	st.user = startProcess(t, "shippy-user-service", composeenv.Environ(userEnv))
	st.email = startProcess(t, "shippy-email-service", composeenv.Environ(local(composeenv.Service(t, "email-service"))))
	waitRegistered(t, ns.URL(), "go.micro.srv.user", st.user)
	waitRegistered(t, ns.URL(), "go.micro.srv.email", st.email)
	return st
}

// cli runs the CLI and checks its exit code; it returns stdout.
func (st *stack) cli(t *testing.T, wantCode int, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "shippy-user-cli"), args...)
	cmd.Env = st.cliEnv
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("shippy-user-cli %q: %v", args, err)
	}
	if (wantCode == 0) != (code == 0) {
		t.Fatalf("shippy-user-cli %q exited %d (stdout %q, stderr %q); want exit %d",
			args, code, stdout.String(), stderr.String(), wantCode)
	}
	return stdout.String()
}

type process struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *logbuf.Buffer
	exited         chan struct{}
}

func startProcess(t *testing.T, name string, env []string) *process {
	t.Helper()
	p := &process{name: name, stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(bin, name))
	p.cmd.Env = env
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10s of SIGINT", name)
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout, name, p.stderr)
		}
	})
	return p
}

// waitFor polls the process's stdout until it holds line.
func (p *process) waitFor(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.stdout.String(), line) {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %s", p.name, line, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRegistered polls the NATS registry until service has a node; a lookup
// through a go-micro client would cache a miss for 5 s.
func waitRegistered(t *testing.T, natsURL, service string, p *process) {
	t.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(natsURL)}, natsregistry.AskGoMicro(true))
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := reg.GetService(service)
		if err == nil && len(svcs) > 0 && len(svcs[0].Nodes) > 0 {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it registered:\n%s", p.name, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not register within 30s (last error %v):\n%s", service, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wireTap records what crosses NATS on a topic, as any client on the bus
// would see it.
type wireTap struct {
	mu     sync.Mutex
	bodies [][]byte
}

func tapTopic(t *testing.T, natsURL, topic string) *wireTap {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	w := &wireTap{}
	if _, err := nc.Subscribe(topic, func(m *nats.Msg) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.bodies = append(w.bodies, payload(m.Data))
	}); err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return w
}

// payload returns the event bytes: go-micro's NATS broker wraps each message
// in a JSON envelope whose body is base64, which would hide a secret from a
// plain search.
func payload(data []byte) []byte {
	var env struct {
		Header map[string]string
		Body   []byte
	}
	if err := json.Unmarshal(data, &env); err == nil && env.Body != nil {
		hdr, _ := json.Marshal(env.Header)
		return append(hdr, env.Body...)
	}
	return data
}

func (w *wireTap) waitBodies(t *testing.T, n int, timeout time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		got := append([][]byte(nil), w.bodies...)
		w.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("saw %d events on the wire within %s; want %d", len(got), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jwtPayload(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("auth printed %q; want a JWT", token)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("decode JWT payload: %v", err)
	}
	return string(b)
}

func randomSuffix(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
