package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
)

// shippy-user-cli's events commands against the services as processes, on
// NATS as deploy/nats/shippy.conf runs it, the email-service sending through
// an SMTP server: events tail prints a created user as it happens; a user
// whose email the server refuses for good (550) is dead-lettered with that
// reason; events dead-letters lists it, and --replay, once the server takes
// it, sends exactly one email.
func TestEventsTailAndDeadLetterReplay(t *testing.T) {
	t.Parallel()
	pw := map[string]string{}
	vars := map[string]string{}
	for _, u := range []string{"user-service", "email-service", "cli", "ops"} {
		pw[u] = u + "-" + randomSuffix(t) + randomSuffix(t)
		vars["NATS_"+strings.ToUpper(strings.ReplaceAll(u, "-", "_"))+"_PASSWORD"] = pw[u]
	}
	ns := natstest.StartConfig(t, filepath.Join("..", "deploy", "nats", "shippy.conf"), vars)
	db := pgtest.NewDatabase(t)
	sink := startRefusingSink(t)
	env := func(service, user string) map[string]string {
		e := composeenv.Localize(t, composeenv.Service(t, service), ns.URL(), db)
		e["NATS_USER"], e["NATS_PASSWORD"] = user, pw[user]
		return e
	}
	emailEnv := env("email-service", "email-service")
	emailEnv["SMTP_URL"] = "smtp://" + sink.addr + "?starttls=none"
	emailEnv["MAIL_FROM"] = "Shippy <welcome@shippy.example>"
	startProcess(t, "shippy-user-service", composeenv.Environ(env("user-service", "user-service")))
	email := startProcess(t, "shippy-email-service", composeenv.Environ(emailEnv))
	cliReg := natsregistry.New([]registry.Option{registry.Addrs(ns.URL())},
		natsregistry.NatsOptions(nats.UserInfo("cli", pw["cli"]), nats.CustomInboxPrefix("_INBOX_cli")))
	t.Cleanup(cliReg.Close)
	waitUntil(t, "both services registered", 30*time.Second, func() bool {
		return len(nodes(cliReg, userServiceName)) > 0 && len(nodes(cliReg, emailServiceName)) > 0
	})

	cliEnv := composeenv.Environ(env("user-cli", "cli"))
	// The operator's CLI: the same compose environment, as NATS user ops.
	opsEnv := composeenv.Environ(env("user-cli", "ops"))
	cli := func(env []string, want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "shippy-user-cli"), args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if cmd.ProcessState == nil {
			t.Fatalf("shippy-user-cli %q: %v", args, err)
		}
		if code := cmd.ProcessState.ExitCode(); code != want {
			t.Fatalf("shippy-user-cli %q: exit %d (%v); want %d\nstdout %s\nstderr %s", args, code, err, want, &stdout, &stderr)
		}
		return stdout.String()
	}
	create := func(name, addr string) {
		t.Helper()
		cli(cliEnv, 0, "create", "--name", name, "--email", addr, "--password", "correct horse battery staple")
	}
	suffix := randomSuffix(t)

	// events tail, started before the user is created.
	tail := startCLIProcess(t, opsEnv, "--json", "events", "tail")
	tail.waitStderr(t, "waiting for user.created", 15*time.Second)
	tailed := "Tail Tester " + suffix
	create(tailed, "tail-"+suffix+"@example.com")
	line := tail.waitStdoutLine(t, tailed, 30*time.Second)
	var ev map[string]any
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("events tail --json printed %q: %v", line, err)
	}
	for _, k := range []string{"event_id", "user_id", "time"} {
		if s, _ := ev[k].(string); s == "" {
			t.Errorf("events tail --json line %s: no %s", line, k)
		}
	}
	if ev["email"] != "tail-"+suffix+"@example.com" || strings.Contains(strings.ToLower(line), "password") {
		t.Errorf("events tail --json line %s: want the user's email and no password", line)
	}
	email.waitFor(t, "Sending email to: "+tailed, 30*time.Second)

	// A permanent refusal: dead-lettered at once, with the server's reply.
	bounced := "Bounce Tester " + suffix
	bouncedAddr := "bounce-" + suffix + "@example.com"
	sink.refuse(bouncedAddr, true)
	create(bounced, bouncedAddr)
	var dl struct {
		ID         uint64 `json:"id"`
		Reason     string `json:"reason"`
		Deliveries int    `json:"deliveries"`
		Event      struct {
			EventID string `json:"event_id"`
			Name    string `json:"name"`
			Email   string `json:"email"`
		} `json:"event"`
	}
	waitUntil(t, "the refused email's event in events dead-letters", 45*time.Second, func() bool {
		var dls []json.RawMessage
		if err := json.Unmarshal([]byte(cli(opsEnv, 0, "--json", "events", "dead-letters")), &dls); err != nil {
			t.Fatalf("events dead-letters --json: %v", err)
		}
		for _, raw := range dls {
			if json.Unmarshal(raw, &dl) == nil && dl.Event.Email == bouncedAddr {
				return true
			}
		}
		return false
	})
	if dl.Event.Name != bounced || !strings.Contains(dl.Reason, "550") || dl.Deliveries != 1 || dl.Event.EventID == "" {
		t.Errorf("dead letter = %+v; want %s's event, reason 550, 1 delivery", dl, bounced)
	}
	if n := strings.Count(email.stdout.String(), "Sending email to: "+bounced+"\n"); n != 0 {
		t.Fatalf("the email-service printed Sending email to: %s %d times before the replay; want 0", bounced, n)
	}

	// The server takes it now: the replay sends it, once.
	sink.refuse(bouncedAddr, false)
	out := cli(opsEnv, 0, "events", "dead-letters", "--replay", fmt.Sprint(dl.ID))
	if !strings.Contains(out, "Replayed dead letter") {
		t.Errorf("events dead-letters --replay printed %q", out)
	}
	email.waitFor(t, "Sending email to: "+bounced, 30*time.Second)
	sentinel := "Sentinel " + suffix
	create(sentinel, "sentinel-"+suffix+"@example.com")
	email.waitFor(t, "Sending email to: "+sentinel, 30*time.Second)
	if n := strings.Count(email.stdout.String(), "Sending email to: "+bounced+"\n"); n != 1 {
		t.Errorf("after the replay the email-service printed Sending email to: %s %d times; want 1", bounced, n)
	}
	if got := sink.delivered(bouncedAddr); len(got) != 1 || got[0] != dl.Event.EventID {
		t.Errorf("the SMTP server received %d emails to %s (event ids %v); want 1, of event %s", len(got), bouncedAddr, got, dl.Event.EventID)
	}
	if out := cli(opsEnv, 0, "events", "dead-letters"); strings.Contains(out, bouncedAddr) {
		t.Errorf("after the replay events dead-letters still lists %s:\n%s", bouncedAddr, out)
	}
	cli(opsEnv, 1, "events", "dead-letters", "--replay", fmt.Sprint(dl.ID))
	// The CLI's own NATS user may not read events.
	cli(cliEnv, 1, "events", "dead-letters")
}

// cliProcess is a long-running shippy-user-cli (events tail).
type cliProcess struct {
	cmd            *exec.Cmd
	stdout, stderr *logbuf.Buffer
}

func startCLIProcess(t *testing.T, env []string, args ...string) *cliProcess {
	t.Helper()
	p := &cliProcess{stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}}
	p.cmd = exec.Command(filepath.Join(bin, "shippy-user-cli"), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
			if code := p.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("shippy-user-cli %q exited %d on SIGINT; want 0 (stderr %s)", args, code, p.stderr)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("shippy-user-cli %q did not stop within 10s of SIGINT", args)
			_ = p.cmd.Process.Kill()
		}
	})
	return p
}

func (p *cliProcess) waitStderr(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%q on shippy-user-cli's stderr (so far %q)", want, p.stderr), timeout, func() bool {
		return strings.Contains(p.stderr.String(), want)
	})
}

// waitStdoutLine returns the first whole line of stdout holding want.
func (p *cliProcess) waitStdoutLine(t *testing.T, want string, timeout time.Duration) string {
	t.Helper()
	var found string
	waitUntil(t, fmt.Sprintf("a line with %q on shippy-user-cli's stdout", want), timeout, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				found = sc.Text()
				return true
			}
		}
		return false
	})
	return found
}

// refusingSink is an SMTP server that accepts every email, but answers RCPT
// TO with 550 for the addresses it is told to refuse, and records the event
// id (X-Shippy-Event-Id) of each email per recipient.
type refusingSink struct {
	addr    string
	mu      sync.Mutex
	refused map[string]bool
	got     map[string][]string
}

func startRefusingSink(t *testing.T) *refusingSink {
	t.Helper()
	s := &refusingSink{refused: map[string]bool{}, got: map[string][]string{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

func (s *refusingSink) refuse(addr string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refused[addr] = on
}

// delivered returns the event ids of the emails received for addr.
func (s *refusingSink) delivered(addr string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[addr]...)
}

type sinkSession struct {
	sink *refusingSink
	to   []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error { return nil }

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	if ss.sink.refused[to] {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "mailbox unavailable"}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, m.Body)
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	for _, to := range ss.to {
		ss.sink.got[to] = append(ss.sink.got[to], m.Header.Get("X-Shippy-Event-Id"))
	}
	return nil
}

func (ss *sinkSession) Reset()        { ss.to = nil }
func (ss *sinkSession) Logout() error { return nil }
