package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/opshttp/opstest"
	"github.com/shippy/shippy/internal/pgtest"
)

// opsAddress waits for the process's "ops server listening" line and
// returns the address (METRICS_ADDRESS=127.0.0.1:0 picks a free port).
func opsAddress(t *testing.T, p *process) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			var v struct{ Msg, Address string }
			if json.Unmarshal([]byte(line), &v) == nil && v.Msg == "ops server listening" {
				return v.Address
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s logged no `ops server listening` line within 30s:\n%s", p.name, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Both services as docker-compose.yml runs them: /readyz follows NATS going
// away and coming back, /metrics counts the user and its email, and every
// line either writes on stderr, the NATS reconnects included, is JSON (no
// LOG_FORMAT: stderr is not a terminal).
func TestOpsEndpointsAndJSONLogsAcrossANATSRestart(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	db := pgtest.NewDatabase(t)
	userEnv := composeenv.Localize(t, composeenv.Service(t, "user-service"), ns.URL(), db)
	userEnv["ADMIN_EMAILS"] = stackAdmin
	emailEnv := composeenv.Localize(t, composeenv.Service(t, "email-service"), ns.URL(), "")
	cliEnv := composeenv.Localize(t, composeenv.Service(t, "user-cli"), ns.URL(), db)
	cliEnv["XDG_CONFIG_HOME"] = t.TempDir()
	for _, env := range []map[string]string{userEnv, emailEnv} {
		if _, ok := env["LOG_FORMAT"]; ok {
			t.Fatalf("docker-compose.yml sets LOG_FORMAT; this test checks the default off a terminal")
		}
	}
	st := &stack{natsURL: ns.URL(), cliEnv: composeenv.Environ(cliEnv)}
	st.user = startProcess(t, "shippy-user-service", composeenv.Environ(userEnv))
	st.email = startProcess(t, "shippy-email-service", composeenv.Environ(emailEnv))
	waitRegistered(t, ns.URL(), "go.micro.srv.user", st.user)
	waitRegistered(t, ns.URL(), "go.micro.srv.email", st.email)
	procs := []*process{st.user, st.email}
	addrs := []string{opsAddress(t, st.user), opsAddress(t, st.email)}
	ready := func(i int) (int, string) { return opstest.Get(t, addrs[i], "/readyz") }
	for i, p := range procs {
		waitUntil(t, p.name+" ready", 30*time.Second, func() bool { code, _ := ready(i); return code == http.StatusOK })
	}

	st.cli(t, 0, "create", "--name", "Ops Tester", "--email", "ops@example.com", "--password", "a long password")
	st.email.waitFor(t, "Sending email to: Ops Tester", 30*time.Second)
	for _, m := range []struct {
		p      int
		series string
	}{
		{0, "shippy_users_created_total"},
		{0, `shippy_rpc_duration_seconds_count{method="UserService.Create"}`},
		{0, "shippy_events_published_total"},
		{1, "shippy_emails_sent_total"},
	} {
		waitUntil(t, m.series+" = 1", 10*time.Second, func() bool {
			v, ok := opstest.Value(opstest.Scrape(t, addrs[m.p]), m.series)
			return ok && v == 1
		})
	}

	// NATS goes away: both unready (the broker), both alive.
	ns.Stop()
	for i, p := range procs {
		waitUntil(t, p.name+" unready", 30*time.Second, func() bool {
			code, body := ready(i)
			return code == http.StatusServiceUnavailable && strings.Contains(body, `"broker"`)
		})
		if code, _ := opstest.Get(t, addrs[i], "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz with NATS down = %d; want 200", p.name, code)
		}
	}
	ns.Restart()
	for i, p := range procs {
		waitUntil(t, p.name+" reconnected and ready", 60*time.Second, func() bool {
			code, _ := ready(i)
			return code == http.StatusOK && strings.Contains(p.stderr.String(), "nats reconnected")
		})
	}
	for _, p := range procs {
		p.stop(t, syscall.SIGTERM, 30*time.Second)
	}

	for _, p := range procs {
		stderr := p.stderr.String()
		for _, want := range []string{"nats disconnected; reconnecting", "nats reconnected"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s did not log %q", p.name, want)
			}
		}
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		for _, line := range lines {
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Errorf("%s wrote a line on stderr that is not JSON: %q", p.name, line)
			}
		}
		t.Logf("%s: %d stderr lines, all checked", p.name, len(lines))
	}
}
