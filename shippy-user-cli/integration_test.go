package main

// Integration: the built CLI binary against the built user-service binary,
// two processes meeting through a NATS registry, with PostgreSQL behind the
// service, as a person would run them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds the user-service and this CLI once per test binary.
func binaries(t *testing.T) (service, cli string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping the tests that build and run the user-service and CLI binaries")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shippy-user-cli-test-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{"../shippy-user-service", "."} {
			name := "shippy-user-cli"
			if pkg != "." {
				name = filepath.Base(pkg)
			}
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, name), pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return filepath.Join(binDir, "shippy-user-service"), filepath.Join(binDir, "shippy-user-cli")
}

// cleanEnv is this process's environment without anything that configures
// shippy or go-micro, so the developer's shell cannot leak into the test.
func cleanEnv(extra ...string) []string {
	return append(composeenv.Environ(nil), extra...)
}

// startService runs the user-service binary against natsURL and a fresh
// database and returns once it is in the registry. It is stopped with
// SIGINT when the test ends; its log is printed if the test failed.
func startService(t *testing.T, bin, natsURL string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = cleanEnv(
		"MICRO_REGISTRY=nats", "MICRO_REGISTRY_ADDRESS="+natsURL,
		"MICRO_BROKER=nats", "MICRO_BROKER_ADDRESS="+natsURL,
		"MICRO_SERVER_ADDRESS=127.0.0.1:0",
		"DATABASE_URL="+pgtest.NewDatabase(t),
		"JWT_SECRET=integration-test-secret-0123456789abcdef",
		"BCRYPT_COST=4",
		"ADMIN_EMAILS="+adminEmail,
	)
	var logs logbuf.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("user-service did not stop within 15s of SIGINT")
		}
		if t.Failed() {
			t.Logf("user-service log:\n%s", logs.String())
		}
	})
	waitRegistered(t, natsURL, exited, &logs)
}

// waitRegistered polls the registry directly, as the CLI's client would
// cache a miss for 5 s.
func waitRegistered(t *testing.T, natsURL string, exited <-chan error, logs *logbuf.Buffer) {
	t.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(natsURL)})
	deadline := time.Now().Add(60 * time.Second)
	for {
		svcs, err := reg.GetService(serviceName)
		if err == nil && len(svcs) > 0 && len(svcs[0].Nodes) > 0 {
			return
		}
		select {
		case werr := <-exited:
			t.Fatalf("user-service exited before registering (%v):\n%s", werr, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not registered within 60s (last error: %v):\n%s", serviceName, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not a stand-in for the condition
	}
}

// adminEmail is the user-service's ADMIN_EMAILS in these tests.
const adminEmail = "root@example.com"

// cliRunner runs the CLI binary against one registry, with a configuration
// folder (where auth saves the token) of the test's own.
type cliRunner struct {
	bin string
	env []string
}

func newCLI(t *testing.T, bin, natsURL string) cliRunner {
	return cliRunner{bin: bin, env: cleanEnv("MICRO_REGISTRY=nats", "MICRO_REGISTRY_ADDRESS="+natsURL, "XDG_CONFIG_HOME="+t.TempDir())}
}

func (c cliRunner) run(t *testing.T, extraEnv []string, args ...string) result {
	t.Helper()
	// A guard against a hung CLI, far above any --timeout used here.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(append([]string(nil), c.env...), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("shippy-user-cli %q did not exit: %v", args, ctx.Err())
	}
	code := 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("run shippy-user-cli %q: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// wantFailure checks a failed run: the exit code, nothing on stdout, and
// exactly one stderr line naming the command and containing want.
func wantFailure(t *testing.T, args []string, r result, code int, want string) {
	t.Helper()
	cmdName := ""
	for _, a := range args {
		for _, c := range commands {
			if cmdName == "" && a == c.name {
				cmdName = a
			}
		}
	}
	if r.code != code {
		t.Errorf("shippy-user-cli %q = exit %d; want %d (stderr %q)", args, r.code, code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("shippy-user-cli %q stdout = %q; want nothing", args, r.stdout)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "shippy-user-cli: "+cmdName+": ") ||
		!strings.Contains(r.stderr, want) {
		t.Errorf("shippy-user-cli %q stderr = %q; want one line 'shippy-user-cli: %s: ...' containing %q", args, r.stderr, cmdName, want)
	}
}

func TestCLIAgainstRunningService(t *testing.T) {
	serviceBin, cliBin := binaries(t)
	nats := natstest.Start(t)
	startService(t, serviceBin, nats.URL())
	cli := newCLI(t, cliBin, nats.URL())
	password := []string{"SHIPPY_PASSWORD=correct-horse-battery"}

	// The happy path, as the README tells a person to do it.
	args := []string{"create", "--name", "Ewan Valentine", "--email", "ewan@example.com", "--company", "BBC"}
	r := cli.run(t, password, args...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "Created: ") || r.stderr != "" {
		t.Fatalf("shippy-user-cli %q = exit %d, stdout %q, stderr %q; want exit 0, 'Created: <id>'", args, r.code, r.stdout, r.stderr)
	}
	id := strings.TrimSpace(strings.TrimPrefix(r.stdout, "Created: "))
	// An admin, signed in without saving; Ewan signed in and saved.
	if r := cli.run(t, password, "create", "--name", "Root", "--email", adminEmail); r.code != 0 {
		t.Fatalf("create the admin = exit %d, stderr %q", r.code, r.stderr)
	}
	r = cli.run(t, password, "auth", "--no-save", "--email", adminEmail)
	adminToken := strings.TrimSpace(r.stdout)
	if r.code != 0 || adminToken == "" {
		t.Fatalf("auth as the admin = exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	asAdmin := []string{"SHIPPY_TOKEN=" + adminToken}
	if r := cli.run(t, password, "auth", "--email", "ewan@example.com"); r.code != 0 {
		t.Fatalf("auth as Ewan = exit %d, stderr %q", r.code, r.stderr)
	}

	t.Run("list shows the users to an admin", func(t *testing.T) {
		args := []string{"--json", "list"}
		r := cli.run(t, asAdmin, args...)
		if r.code != 0 {
			t.Fatalf("shippy-user-cli %q = exit %d, stderr %q; want 0", args, r.code, r.stderr)
		}
		var got struct{ Users []userJSON }
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("shippy-user-cli %q stdout is not JSON: %v\n%s", args, err, r.stdout)
		}
		want := userJSON{ID: id, Name: "Ewan Valentine", Company: "BBC", Email: "ewan@example.com"}
		if len(got.Users) != 2 || got.Users[0] != want || got.Users[1].Email != adminEmail {
			t.Errorf("shippy-user-cli %q users = %+v; want [%+v] and the admin", args, got.Users, want)
		}
		if strings.Contains(r.stdout, "correct-horse") || strings.Contains(r.stdout, "$2a$") {
			t.Errorf("list printed a password or hash: %s", r.stdout)
		}
		r = cli.run(t, nil, "--token", adminToken, "list")
		if r.code != 0 || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "ewan@example.com") {
			t.Errorf("shippy-user-cli list = exit %d, stdout %q; want a line with %s", r.code, r.stdout, id)
		}
	})

	t.Run("get by id, with the token auth saved", func(t *testing.T) {
		r := cli.run(t, nil, "get", "--id", id)
		if r.code != 0 || !strings.Contains(r.stdout, "ewan@example.com") {
			t.Errorf("shippy-user-cli get --id %s = exit %d, stdout %q, stderr %q; want the user", id, r.code, r.stdout, r.stderr)
		}
	})

	t.Run("auth prints a token that validate accepts", func(t *testing.T) {
		args := []string{"auth", "--email", "ewan@example.com"}
		r := cli.run(t, password, args...)
		token := strings.TrimSpace(r.stdout)
		if r.code != 0 || token == "" || strings.Contains(token, "\n") || r.stderr != "" {
			t.Fatalf("shippy-user-cli %q = exit %d, stdout %q, stderr %q; want exit 0 and one token line", args, r.code, r.stdout, r.stderr)
		}
		r = cli.run(t, nil, "validate", "--token", token)
		if r.code != 0 || r.stdout != "valid\n" {
			t.Errorf("shippy-user-cli validate --token <auth's token> = exit %d, stdout %q, stderr %q; want exit 0, valid", r.code, r.stdout, r.stderr)
		}
		r = cli.run(t, nil, "validate", "--json", "--token", token)
		if r.code != 0 || !strings.Contains(r.stdout, `"valid": true`) {
			t.Errorf("shippy-user-cli validate --json = exit %d, stdout %q; want valid: true", r.code, r.stdout)
		}
	})

	t.Run("demo", func(t *testing.T) {
		r := cli.run(t, nil, "demo")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) < 5 || !strings.HasPrefix(lines[0], "Created: ") ||
			!strings.HasPrefix(lines[len(lines)-1], "Your access token is: ey") {
			t.Errorf("shippy-user-cli demo = exit %d, stdout %q, stderr %q; want Created, the users, a token", r.code, r.stdout, r.stderr)
		}
	})

	// Failures: each exits non-zero with one line on stderr.
	failures := []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"duplicate email", password, []string{"create", "--name", "Ewan", "--email", "EWAN@example.com"}, exitRejected, "(409)"},
		{"password too short", []string{"SHIPPY_PASSWORD=short"}, []string{"create", "--name", "Ann", "--email", "ann@example.com"}, exitRejected, "(400)"},
		{"wrong password", []string{"SHIPPY_PASSWORD=wrong-password-1"}, []string{"auth", "--email", "ewan@example.com"}, exitRejected, "(401)"},
		{"unknown email", password, []string{"auth", "--email", "nobody@example.com"}, exitRejected, "(401)"},
		{"unknown id", asAdmin, []string{"get", "--id", "00000000-0000-0000-0000-000000000000"}, exitRejected, "(404)"},
		{"another user's id", nil, []string{"get", "--id", "00000000-0000-0000-0000-000000000000"}, exitRejected, "you may read only your own user (403)"},
		{"list as a non-admin", nil, []string{"list"}, exitRejected, "UserService.GetAll is for admins only (403)"},
		{"list with a forged token", []string{"SHIPPY_TOKEN=" + adminToken[:len(adminToken)-2] + "xx"}, []string{"list"}, exitRejected,
			"invalid or expired token (401): sign in with `shippy-user-cli auth --email EMAIL`"},
		{"missing flag", nil, []string{"get"}, exitUsage, "--id is required"},
		{"missing password", nil, []string{"auth", "--email", "ewan@example.com"}, exitUsage, "a password is required"},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			wantFailure(t, tt.args, cli.run(t, tt.env, tt.args...), tt.code, tt.want)
		})
	}

	t.Run("validate rejects a garbage token", func(t *testing.T) {
		r := cli.run(t, nil, "validate", "--token", "not.a.token")
		if r.code != exitRejected || !strings.HasPrefix(r.stdout, "invalid: ") || r.stderr != "" {
			t.Errorf("shippy-user-cli validate --token garbage = exit %d, stdout %q, stderr %q; want exit 1, 'invalid: ...'", r.code, r.stdout, r.stderr)
		}
	})
}

func TestCLIWithoutService(t *testing.T) {
	_, cliBin := binaries(t)

	t.Run("registry up, service not registered", func(t *testing.T) {
		nats := natstest.Start(t)
		args := []string{"--timeout", "3s", "list"}
		r := newCLI(t, cliBin, nats.URL()).run(t, nil, args...)
		wantFailure(t, args, r, exitUnavailable, "go.micro.srv.user is not in the registry")
	})

	t.Run("registry unreachable", func(t *testing.T) {
		args := []string{"--timeout", "3s", "validate", "--token", "t"}
		r := newCLI(t, cliBin, "nats://"+closedAddr(t)).run(t, nil, args...)
		wantFailure(t, args, r, exitUnavailable, "cannot reach go.micro.srv.user")
	})

	t.Run("bad MICRO_REGISTRY", func(t *testing.T) {
		args := []string{"list"}
		c := cliRunner{bin: cliBin, env: cleanEnv("MICRO_REGISTRY=bogus")}
		wantFailure(t, args, c.run(t, nil, args...), exitUsage, `MICRO_REGISTRY="bogus"`)
	})
}

// closedAddr returns a local address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return addr
}
