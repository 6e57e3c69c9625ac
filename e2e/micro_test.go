package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
)

var (
	microOnce sync.Once
	microBin  string
	microErr  error
)

// microBinary builds go-micro's own CLI, micro, from go-micro.dev/v6/cmd/micro
// at the version tools/micro/go.mod pins (its own module: micro links every
// plugin go-micro has, which shippy's go.mod leaves out), as `make micro`
// does: static, so the same binary runs in a distroless container.
func microBinary(t *testing.T) string {
	t.Helper()
	microOnce.Do(func() {
		microBin = filepath.Join(bin, "micro")
		cmd := exec.Command("go", "-C", filepath.Join("..", "tools", "micro"), "build", "-trimpath", "-o", microBin, "go-micro.dev/v6/cmd/micro")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=auto")
		if out, err := cmd.CombinedOutput(); err != nil {
			microErr = fmt.Errorf("build micro: %v\n%s", err, out)
		}
	})
	if microErr != nil {
		t.Fatal(microErr)
	}
	return microBin
}

// go-micro's own tools against the user-service, as the README's recipe
// runs them on docker-compose's NATS (deploy/nats/shippy.conf): the NATS
// registry, logged in as the CLI's NATS user through the URL, since go-micro's
// registry has no variable for credentials. `micro call` creates a user and
// reads it back with the token in metadata; `micro api`, the HTTP gateway,
// creates one and validates a token, and answers 401 for Get, as it
// forwards no HTTP header.
func TestGoMicroCallAndAPI(t *testing.T) {
	t.Parallel()
	micro := microBinary(t)
	pw := map[string]string{}
	vars := map[string]string{}
	for _, u := range []string{"user-service", "email-service", "cli", "ops"} {
		pw[u] = u + "-" + randomSuffix(t) + randomSuffix(t)
		vars["NATS_"+strings.ToUpper(strings.ReplaceAll(u, "-", "_"))+"_PASSWORD"] = pw[u]
	}
	ns := natstest.StartConfig(t, filepath.Join("..", "deploy", "nats", "shippy.conf"), vars)
	db := pgtest.NewDatabase(t)
	userEnv := composeenv.Localize(t, composeenv.Service(t, "user-service"), ns.URL(), db)
	userEnv["NATS_USER"], userEnv["NATS_PASSWORD"] = "user-service", pw["user-service"]
	userEnv["BCRYPT_COST"] = "4"
	startProcess(t, "shippy-user-service", composeenv.Environ(userEnv))
	reg := natsregistry.New([]registry.Option{registry.Addrs(ns.URL())},
		natsregistry.NatsOptions(nats.UserInfo("cli", pw["cli"]), nats.CustomInboxPrefix("_INBOX_cli")))
	t.Cleanup(reg.Close)
	waitUntil(t, "the user-service registered", 30*time.Second, func() bool { return len(nodes(reg, userServiceName)) > 0 })

	// micro's environment: nothing of the developer's shell (a MICRO_BROKER
	// of shippy's, jetstream, would stop it), the registry with the cli
	// user's credentials in the URL.
	env := append(composeenv.Environ(nil),
		"MICRO_REGISTRY=nats",
		"MICRO_REGISTRY_ADDRESS="+strings.Replace(ns.URL(), "nats://", "nats://cli:"+pw["cli"]+"@", 1),
		"HOME="+t.TempDir())
	run := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(micro, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				return stdout.String() + stderr.String(), err
			}
			return stdout.String(), nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("micro %q did not return within 30s", args)
			return "", nil
		}
	}
	suffix := randomSuffix(t)
	const password = "correct horse battery staple"

	// micro call: Create, then Get with the token it returned.
	addr := "micro-call-" + suffix + "@example.com"
	out, err := run("call", userServiceName, "UserService.Create",
		fmt.Sprintf(`{"name":"Micro Caller","email":%q,"password":%q}`, addr, password))
	if err != nil {
		t.Fatalf("micro call UserService.Create: %v\n%s", err, out)
	}
	var created struct {
		User  struct{ Id, Name, Email, Password string }
		Token struct{ Token string }
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.User.Id == "" || created.User.Email != addr || created.Token.Token == "" {
		t.Fatalf("micro call UserService.Create printed %q (%v); want the created user and a token", out, err)
	}
	if strings.Contains(out, password) || strings.Contains(out, "$2a$") {
		t.Errorf("micro call UserService.Create printed a password or hash: %s", out)
	}
	get := fmt.Sprintf(`{"id":%q}`, created.User.Id)
	out, err = run("call", "--metadata", "Authorization:Bearer "+created.Token.Token, userServiceName, "UserService.Get", get)
	if err != nil || !strings.Contains(out, addr) {
		t.Errorf("micro call --metadata 'Authorization:Bearer <token>' UserService.Get = %v, %q; want the user", err, out)
	}
	if out, err = run("call", userServiceName, "UserService.Get", get); err == nil || !strings.Contains(out, "401") {
		t.Errorf("micro call UserService.Get without a token = %v, %q; want an error with 401", err, out)
	}

	// micro api: the HTTP gateway on a free loopback port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := l.Addr().String()
	l.Close()
	api := exec.Command(micro, "api", "--address", apiAddr)
	api.Env = env
	var apiLog logbuf.Buffer
	api.Stdout, api.Stderr = &apiLog, &apiLog
	if err := api.Start(); err != nil {
		t.Fatal(err)
	}
	apiExited := make(chan struct{})
	go func() { _ = api.Wait(); close(apiExited) }()
	t.Cleanup(func() {
		_ = api.Process.Signal(os.Interrupt)
		select {
		case <-apiExited:
		case <-time.After(10 * time.Second):
			_ = api.Process.Kill()
			<-apiExited
		}
		if t.Failed() {
			t.Logf("micro api output:\n%s", &apiLog)
		}
	})
	base := "http://" + apiAddr
	waitUntil(t, "micro api answering /health", 30*time.Second, func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	post := func(endpoint, body string, header ...string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, base+"/"+userServiceName+"/"+endpoint, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", req.URL, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	apiAddrEmail := "micro-api-" + suffix + "@example.com"
	code, body := post("UserService.Create", fmt.Sprintf(`{"name":"Gateway Caller","email":%q,"password":%q}`, apiAddrEmail, password))
	var viaAPI struct {
		User  struct{ Id, Email string }
		Token struct{ Token string }
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &viaAPI) != nil || viaAPI.User.Email != apiAddrEmail || viaAPI.Token.Token == "" {
		t.Fatalf("POST /%s/UserService.Create = %d %s; want 200 with the user and a token", userServiceName, code, body)
	}
	code, body = post("UserService.ValidateToken", fmt.Sprintf(`{"token":%q}`, viaAPI.Token.Token))
	if code != http.StatusOK || !strings.Contains(body, `"valid":true`) {
		t.Errorf("POST /%s/UserService.ValidateToken = %d %s; want 200, valid", userServiceName, code, body)
	}
	// go-micro v6.3.10's gateway calls with the request's bare context: the
	// Authorization header does not reach the service.
	code, body = post("UserService.Get", fmt.Sprintf(`{"id":%q}`, viaAPI.User.Id), "Authorization", "Bearer "+viaAPI.Token.Token)
	if code == http.StatusOK || !strings.Contains(body, "401") {
		t.Errorf("POST /%s/UserService.Get with an Authorization header = %d %s; want the service's 401 (micro api forwards no header)", userServiceName, code, body)
	}
}
