package e2e

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/mail"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
)

// One user followed by one request id, as an operator follows a user's
// report: the CLI creates the user with --request-id; grep for the id in the
// user-service's and the email-service's logs finds the lines about that
// user (created, event published, welcome email sent), the outbox row holds
// it, and the email the SMTP server received carries it in X-Request-Id. A
// command the token check refuses, run without --request-id, names the id it
// made in its error, and the user-service's refusal line carries that id.
func TestRequestIDFollowsOneUser(t *testing.T) {
	modes := []struct {
		name   string
		broker string // MICRO_BROKER; brokerCompose keeps docker-compose.yml's, "" is the built-in one
		codec  string // EVENTS_CODEC
	}{
		{"compose (jetstream broker), protobuf events", brokerCompose, ""},
		{"nats broker, json events", "nats", "json"},
		{"built-in broker", "", ""},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			db := pgtest.NewDatabase(t)
			sink := startHeaderSink(t)
			local := func(service string) map[string]string {
				env := composeenv.Localize(t, composeenv.Service(t, service), ns.URL(), db)
				switch mode.broker {
				case brokerCompose:
				case "":
					delete(env, "MICRO_BROKER")
					delete(env, "MICRO_BROKER_ADDRESS")
				default:
					env["MICRO_BROKER"] = mode.broker
				}
				return env
			}
			userEnv := local("user-service")
			if mode.codec != "" {
				userEnv["EVENTS_CODEC"] = mode.codec
			}
			emailEnv := local("email-service")
			emailEnv["SMTP_URL"] = "smtp://" + sink.addr + "?starttls=none"
			emailEnv["MAIL_FROM"] = "Shippy <welcome@shippy.example>"
			cliEnv := local("user-cli")
			cliEnv["XDG_CONFIG_HOME"] = t.TempDir() // no saved token
			user := startProcess(t, "shippy-user-service", composeenv.Environ(userEnv))
			email := startProcess(t, "shippy-email-service", composeenv.Environ(emailEnv))
			waitRegistered(t, ns.URL(), userServiceName, user)
			waitRegistered(t, ns.URL(), emailServiceName, email)
			cli := func(want int, args ...string) (stdout, stderr string) {
				t.Helper()
				cmd := exec.Command(filepath.Join(bin, "shippy-user-cli"), args...)
				cmd.Env = composeenv.Environ(cliEnv)
				var out, errOut strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &errOut
				err := cmd.Run()
				if cmd.ProcessState == nil {
					t.Fatalf("shippy-user-cli %q: %v", args, err)
				}
				if code := cmd.ProcessState.ExitCode(); code != want {
					t.Fatalf("shippy-user-cli %q: exit %d; want %d\nstdout %s\nstderr %s", args, code, want, &out, &errOut)
				}
				return out.String(), errOut.String()
			}

			rid := "e2e-" + randomSuffix(t) + randomSuffix(t)
			name := "Grace Hopper " + randomSuffix(t)
			addr := strings.ToLower(strings.ReplaceAll(name, " ", ".")) + "@example.com"
			out, _ := cli(0, "--request-id", rid, "create", "--name", name, "--email", addr, "--password", "correct horse battery staple")
			id := strings.TrimSpace(strings.TrimPrefix(out, "Created: "))
			if !strings.HasPrefix(out, "Created: ") || id == "" {
				t.Fatalf("create printed %q; want \"Created: <id>\"", out)
			}
			email.waitFor(t, "Sending email to: "+name, 30*time.Second)

			// The email's header.
			var got []mail.Header
			pollUntil(t, "the welcome email at the SMTP server", 30*time.Second, func() bool {
				got = sink.received(addr)
				return len(got) > 0
			})
			if len(got) != 1 || got[0].Get("X-Request-Id") != rid || got[0].Get("X-Shippy-Event-Id") == "" {
				t.Errorf("emails to %s: %v; want one with X-Request-Id %s and an event id", addr, got, rid)
			}

			// grep rid: the services' lines about this user.
			wantLines := []struct {
				p   *process
				msg string
			}{
				{user, "user created"},
				{user, "outbox event published"},
				{email, "welcome email sent"},
			}
			for _, w := range wantLines {
				var line map[string]any
				pollUntil(t, w.p.name+"'s "+w.msg+" line with the request id", 15*time.Second, func() bool {
					line = grepRequestID(t, w.p, rid)[w.msg]
					return line != nil
				})
				if uid, ok := line["user_id"]; ok && uid != id {
					t.Errorf("%s: %q line with request id %s is about user %v; want %s", w.p.name, w.msg, rid, uid, id)
				}
			}

			// The outbox row.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, db)
			if err != nil {
				t.Fatalf("connect to the database: %v", err)
			}
			defer conn.Close(context.Background())
			var rows int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM outbox_events WHERE request_id = $1", rid).Scan(&rows); err != nil || rows != 1 {
				t.Errorf("outbox rows with request_id %s: %d (%v); want 1", rid, rows, err)
			}

			// A refusal: the CLI made the id and names it in its error.
			_, errLine := cli(1, "list")
			m := cliRequestID.FindStringSubmatch(errLine)
			if m == nil {
				t.Fatalf("list without a token printed %q on stderr; want it to end with the request id", errLine)
			}
			pollUntil(t, "the user-service's refusal line with the CLI's request id", 15*time.Second, func() bool {
				return grepRequestID(t, user, m[1])["request refused"] != nil
			})
		})
	}
}

// cliRequestID is the end of the CLI's error line, with the id it made.
var cliRequestID = regexp.MustCompile(`; request id: ([0-9a-f]{16})\n$`)

// grepRequestID is `grep <id>` over p's stderr: each line holding the id
// must be a JSON log line whose request_id is the id. It returns the lines
// by message.
func grepRequestID(t *testing.T, p *process, id string) map[string]map[string]any {
	t.Helper()
	lines := map[string]map[string]any{}
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if !strings.Contains(l, id) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%s wrote a line holding %s that is not JSON: %v\n%s", p.name, id, err, l)
		}
		if m["request_id"] != id {
			t.Fatalf("%s wrote %s outside request_id: %s", p.name, id, l)
		}
		msg, _ := m["msg"].(string)
		lines[msg] = m
	}
	return lines
}

// pollUntil fails the test unless cond holds within timeout.
func pollUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// headerSink is an SMTP server keeping the header of every email, by
// recipient.
type headerSink struct {
	addr string
	mu   sync.Mutex
	got  map[string][]mail.Header
}

func startHeaderSink(t *testing.T) *headerSink {
	t.Helper()
	s := &headerSink{got: map[string][]mail.Header{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &headerSession{sink: s}, nil }))
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

func (s *headerSink) received(to string) []mail.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]mail.Header(nil), s.got[to]...)
}

type headerSession struct {
	sink *headerSink
	to   []string
}

func (ss *headerSession) Mail(string, *smtp.MailOptions) error { return nil }

func (ss *headerSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *headerSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, m.Body)
	ss.sink.mu.Lock()
	defer ss.sink.mu.Unlock()
	for _, to := range ss.to {
		ss.sink.got[to] = append(ss.sink.got[to], m.Header)
	}
	return nil
}

func (ss *headerSession) Reset()        { ss.to = nil }
func (ss *headerSession) Logout() error { return nil }
