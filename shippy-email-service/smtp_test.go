package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/shippy/shippy/internal/poll"
	pb "github.com/shippy/shippy/proto/user"
)

const (
	testFrom     = "Shippy <welcome@shippy.test>"
	testUser     = "shippy"
	testPassword = "pw4SMTPtestZq8"
	// evilName is a user's name that must be escaped in the HTML part and
	// left as it is in the plain-text part.
	evilName = "<script>alert(1)</script> & Co"
)

// smtpConfigFor is the SMTP configuration LoadConfig makes of SMTP_URL=smtpURL,
// MAIL_FROM=testFrom and env, as main does.
func smtpConfigFor(t *testing.T, smtpURL string, env map[string]string) SMTPConfig {
	t.Helper()
	all := map[string]string{"SMTP_URL": smtpURL, "MAIL_FROM": testFrom}
	maps.Copy(all, env)
	cfg, err := LoadConfig(func(k string) string { return all[k] })
	if err != nil {
		t.Fatalf("LoadConfig(%v) = %v; want nil", all, err)
	}
	if cfg.SMTP == nil {
		t.Fatalf("LoadConfig(%v) has no SMTP configuration", all)
	}
	return *cfg.SMTP
}

func newTestSMTPMailer(t *testing.T, cfg SMTPConfig, out io.Writer, log *slog.Logger) *SMTPMailer {
	t.Helper()
	m, err := NewSMTPMailer(cfg, out, log)
	if err != nil {
		t.Fatalf("NewSMTPMailer(%v) = %v; want nil", cfg, err)
	}
	return m
}

func passwordFile(t *testing.T, password string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "smtp-password")
	if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// parsedMail is a received message, its parts decoded.
type parsedMail struct {
	header  mail.Header
	subject string
	parts   map[string]string // body by media type
}

func parseMail(t *testing.T, data []byte) parsedMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("received message does not parse: %v\n%s", err, data)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("Subject %q: %v", msg.Header.Get("Subject"), err)
	}
	p := parsedMail{header: msg.Header, subject: subject, parts: map[string]string{}}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/alternative" {
		t.Fatalf("Content-Type = %q (%v); want multipart/alternative", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart() // decodes quoted-printable
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		partType, partParams, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part Content-Type %q: %v", part.Header.Get("Content-Type"), err)
		}
		if cs := strings.ToLower(partParams["charset"]); cs != "utf-8" {
			t.Errorf("part %s charset = %q; want utf-8", partType, cs)
		}
		b, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		p.parts[partType] = string(b)
	}
	return p
}

// logLines decodes JSON log output, one object a line.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestSMTPMailerSends(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sink     sinkOptions
		url      func(s *smtpSink) string
		env      func(s *smtpSink) map[string]string
		wantTLS  bool
		wantAuth string
	}{
		{"STARTTLS required (the default)", sinkOptions{startTLS: true},
			func(s *smtpSink) string { return "smtp://" + s.addr() },
			func(s *smtpSink) map[string]string { return map[string]string{"SMTP_CA_FILE": s.caFile} },
			true, ""},
		{"STARTTLS and AUTH, password in the URL", sinkOptions{startTLS: true, user: testUser, pass: testPassword},
			func(s *smtpSink) string { return "smtp://" + testUser + ":" + testPassword + "@" + s.addr() },
			func(s *smtpSink) map[string]string { return map[string]string{"SMTP_CA_FILE": s.caFile} },
			true, testUser},
		{"implicit TLS and AUTH, password from a file", sinkOptions{implicitTLS: true, user: testUser, pass: testPassword},
			func(s *smtpSink) string { return "smtps://" + testUser + "@" + s.addr() },
			func(s *smtpSink) map[string]string {
				return map[string]string{"SMTP_CA_FILE": s.caFile, "SMTP_PASSWORD_FILE": passwordFile(t, testPassword)}
			},
			true, testUser},
		{"opportunistic, STARTTLS offered", sinkOptions{startTLS: true},
			func(s *smtpSink) string { return "smtp://" + s.addr() + "?starttls=opportunistic" },
			func(s *smtpSink) map[string]string { return map[string]string{"SMTP_CA_FILE": s.caFile} },
			true, ""},
		{"opportunistic, no STARTTLS", sinkOptions{},
			func(s *smtpSink) string { return "smtp://" + s.addr() + "?starttls=opportunistic" },
			func(*smtpSink) map[string]string { return nil },
			false, ""},
		{"starttls=none, a local sink", sinkOptions{},
			func(s *smtpSink) string { return "smtp://" + s.addr() + "?starttls=none" },
			func(*smtpSink) map[string]string { return nil },
			false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := startSMTPSink(t, tt.sink)
			var out, logs bytes.Buffer
			m := newTestSMTPMailer(t, smtpConfigFor(t, tt.url(sink), tt.env(sink)), &out, slog.New(slog.NewJSONHandler(&logs, nil)))
			e := WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: evilName, Email: "ewan@example.com", Company: "Acme & Sons"}
			if err := m.Send(context.Background(), e); err != nil {
				t.Fatalf("Send(%+v) = %v; want nil", e, err)
			}

			got := sink.received()
			if len(got) != 1 {
				t.Fatalf("sink received %d messages; want 1", len(got))
			}
			r := got[0]
			if r.From != "welcome@shippy.test" || len(r.To) != 1 || r.To[0] != "ewan@example.com" {
				t.Errorf("envelope MAIL FROM %q RCPT TO %q; want welcome@shippy.test and [ewan@example.com]", r.From, r.To)
			}
			if r.TLS != tt.wantTLS {
				t.Errorf("message came over TLS = %v; want %v", r.TLS, tt.wantTLS)
			}
			if r.AuthUser != tt.wantAuth {
				t.Errorf("authenticated as %q; want %q", r.AuthUser, tt.wantAuth)
			}

			p := parseMail(t, r.Data)
			if want := "Welcome to Shippy, " + evilName; p.subject != want {
				t.Errorf("Subject = %q; want %q", p.subject, want)
			}
			for h, want := range map[string]string{
				"Message-Id":        "<welcome.ev-1@shippy.test>",
				"X-Shippy-Event-Id": "ev-1",
			} {
				if got := p.header.Get(h); got != want {
					t.Errorf("header %s = %q; want %q", h, got, want)
				}
			}
			if from, err := p.header.AddressList("From"); err != nil || len(from) != 1 || from[0].Address != "welcome@shippy.test" || from[0].Name != "Shippy" {
				t.Errorf("From = %v (%v); want Shippy <welcome@shippy.test>", from, err)
			}
			if to, err := p.header.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != "ewan@example.com" || to[0].Name != evilName {
				t.Errorf("To = %v (%v); want %q <ewan@example.com>", to, err, evilName)
			}
			text, html := p.parts["text/plain"], p.parts["text/html"]
			if len(p.parts) != 2 || text == "" || html == "" {
				t.Fatalf("parts %v; want text/plain and text/html", slices.Sorted(maps.Keys(p.parts)))
			}
			if !strings.Contains(text, "Hello "+evilName+",") || !strings.Contains(text, "for Acme & Sons") || !strings.Contains(text, "ewan@example.com") {
				t.Errorf("text part does not greet %q literally, with the company and email:\n%s", evilName, text)
			}
			if !strings.Contains(html, "Hello &lt;script&gt;alert(1)&lt;/script&gt; &amp; Co,") || !strings.Contains(html, "Acme &amp; Sons") {
				t.Errorf("HTML part does not greet %q escaped:\n%s", evilName, html)
			}
			if strings.Contains(html, "<script>") {
				t.Errorf("HTML part holds the name unescaped:\n%s", html)
			}

			if want := "Sending email to: " + evilName + "\n"; out.String() != want {
				t.Errorf("stdout = %q; want %q", out.String(), want)
			}
			lines := logLines(t, logs.String())
			if len(lines) != 1 || lines[0]["msg"] != "welcome email sent" || lines[0]["event_id"] != "ev-1" ||
				lines[0]["user_id"] != "user-1" || lines[0]["email"] != "ewan@example.com" || lines[0]["message_id"] != "<welcome.ev-1@shippy.test>" {
				t.Errorf("log = %v; want one \"welcome email sent\" line with event_id, user_id, email and message_id", lines)
			}
		})
	}
}

// A name cannot add a header: CR and LF are dropped from the subject and the
// To name.
func TestSMTPMailerNoHeaderInjection(t *testing.T) {
	t.Parallel()
	sink := startSMTPSink(t, sinkOptions{})
	m := newTestSMTPMailer(t, smtpConfigFor(t, "smtp://"+sink.addr()+"?starttls=none", nil), io.Discard, discardLog)
	e := WelcomeEmail{EventID: "ev-1\r\nBcc: victim@example.com", UserID: "user-1", Name: "Eve\r\nBcc: victim@example.com", Email: "eve@example.com"}
	if err := m.Send(context.Background(), e); err != nil {
		t.Fatalf("Send = %v; want nil", err)
	}
	got := sink.received()
	if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "eve@example.com" {
		t.Fatalf("received %+v; want one message to eve@example.com only", got)
	}
	p := parseMail(t, got[0].Data)
	if bcc := p.header.Get("Bcc"); bcc != "" {
		t.Errorf("message has a Bcc header %q; want none", bcc)
	}
	if want := "Welcome to Shippy, EveBcc: victim@example.com"; p.subject != want {
		t.Errorf("Subject = %q; want %q", p.subject, want)
	}
	if got := p.header.Get("X-Shippy-Event-Id"); got != "ev-1Bcc: victim@example.com" {
		t.Errorf("X-Shippy-Event-Id = %q; want the id on one line", got)
	}
}

// Without the security SMTP_URL asks for, or with credentials the server
// refuses, nothing is sent and the error is temporary (retried, then
// dead-lettered with the reason).
func TestSMTPMailerSendsNothingInsecurely(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sink    sinkOptions
		url     func(s *smtpSink) string
		env     func(s *smtpSink) map[string]string
		wantErr error // if set, errors.Is must hold
	}{
		{"STARTTLS required, not offered", sinkOptions{},
			func(s *smtpSink) string { return "smtp://" + s.addr() },
			func(*smtpSink) map[string]string { return nil }, errNoSTARTTLS},
		{"STARTTLS with a certificate not trusted", sinkOptions{startTLS: true},
			func(s *smtpSink) string { return "smtp://" + s.addr() },
			func(*smtpSink) map[string]string { return nil }, nil},
		{"implicit TLS with a certificate not trusted", sinkOptions{implicitTLS: true},
			func(s *smtpSink) string { return "smtps://" + s.addr() },
			func(*smtpSink) map[string]string { return nil }, nil},
		{"wrong password", sinkOptions{startTLS: true, user: testUser, pass: testPassword},
			func(s *smtpSink) string { return "smtp://" + testUser + ":not-" + testPassword + "@" + s.addr() },
			func(s *smtpSink) map[string]string { return map[string]string{"SMTP_CA_FILE": s.caFile} }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := startSMTPSink(t, tt.sink)
			var out bytes.Buffer
			m := newTestSMTPMailer(t, smtpConfigFor(t, tt.url(sink), tt.env(sink)), &out, discardLog)
			err := m.Send(context.Background(), WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: "Ewan", Email: "ewan@example.com"})
			if err == nil {
				t.Fatalf("Send = nil; want an error")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Send = %v; want %v", err, tt.wantErr)
			}
			if errors.Is(err, errPermanent) {
				t.Errorf("Send = %v; want a temporary error, not %v", err, errPermanent)
			}
			if mails, _, _ := sink.calls(); mails != 0 || len(sink.received()) != 0 || out.Len() != 0 {
				t.Errorf("%d MAIL FROM, %d messages, stdout %q; want none", mails, len(sink.received()), out.String())
			}
		})
	}
}

func TestSMTPMailerErrorClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		sink          sinkOptions
		email         string
		wantPermanent bool
	}{
		{"550 for the recipient", sinkOptions{rcpt: func(int, string) error {
			return smtpReply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
		}}, "nobody@example.com", true},
		{"451 for the recipient", sinkOptions{rcpt: func(int, string) error {
			return smtpReply(451, smtp.EnhancedCode{4, 3, 0}, "try again later")
		}}, "ewan@example.com", false},
		{"553 for the sender", sinkOptions{mail: func(int, string) error {
			return smtpReply(553, smtp.EnhancedCode{5, 7, 1}, "sender not allowed")
		}}, "ewan@example.com", true},
		{"421 for the sender", sinkOptions{mail: func(int, string) error {
			return smtpReply(421, smtp.EnhancedCode{4, 3, 2}, "shutting down")
		}}, "ewan@example.com", false},
		{"554 for the message", sinkOptions{data: func(int) error {
			return smtpReply(554, smtp.EnhancedCode{5, 6, 0}, "content rejected")
		}}, "ewan@example.com", true},
		{"452 for the message", sinkOptions{data: func(int) error {
			return smtpReply(452, smtp.EnhancedCode{4, 3, 1}, "mailbox full for now")
		}}, "ewan@example.com", false},
		{"not an address", sinkOptions{}, "not an address", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink := startSMTPSink(t, tt.sink)
			m := newTestSMTPMailer(t, smtpConfigFor(t, "smtp://"+sink.addr()+"?starttls=none", nil), io.Discard, discardLog)
			err := m.Send(context.Background(), WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: "Ewan", Email: tt.email})
			if err == nil {
				t.Fatalf("Send = nil; want an error")
			}
			if got := errors.Is(err, errPermanent); got != tt.wantPermanent {
				t.Errorf("Send = %v; permanent %v, want %v", err, got, tt.wantPermanent)
			}
			if n := len(sink.received()); n != 0 {
				t.Errorf("sink received %d messages; want 0", n)
			}
		})
	}

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		m := newTestSMTPMailer(t, smtpConfigFor(t, "smtp://"+closedPort(t)+"?starttls=none", nil), io.Discard, discardLog)
		err := m.Send(context.Background(), WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: "Ewan", Email: "ewan@example.com"})
		if err == nil || errors.Is(err, errPermanent) {
			t.Errorf("Send to a closed port = %v; want a temporary error", err)
		}
	})
}

// The send ends with its context, however long go-mail's own timeout.
func TestSMTPMailerStopsWithItsContext(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	sink := startSMTPSink(t, sinkOptions{data: func(int) error { <-release; return nil }})
	t.Cleanup(func() { close(release) }) // before the sink closes
	cfg := smtpConfigFor(t, "smtp://"+sink.addr()+"?starttls=none", nil)
	cfg.Timeout = time.Hour // only the context can end the stalled send
	m := newTestSMTPMailer(t, cfg, io.Discard, discardLog)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- m.Send(ctx, WelcomeEmail{EventID: "ev-1", UserID: "user-1", Name: "Ewan", Email: "ewan@example.com"})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errPermanent) {
			t.Errorf("Send with a stalled server = %v; want a temporary %v", err, context.DeadlineExceeded)
		}
	case <-time.After(30 * time.Second): // a hang guard: go-mail's timeout is an hour
		t.Fatal("Send did not return when its context ended")
	}
}

// The email-service as main builds it on JetStream (handler, dedupMailer over
// the key-value sent log, jsbroker with its default retries) with the SMTP
// mailer: a 4xx reply is retried and the email is sent once; the password is
// in no log line.
func TestSMTPTemporaryFailureIsRetriedAndSentOnce(t *testing.T) {
	t.Parallel()
	sink := startSMTPSink(t, sinkOptions{startTLS: true, user: testUser, pass: testPassword,
		rcpt: func(n int, _ string) error {
			if n == 1 {
				return smtpReply(451, smtp.EnhancedCode{4, 3, 0}, "try again later")
			}
			return nil
		}})
	var logs lockedBuffer
	var out bytes.Buffer
	env := startFaultEnv(t, nil)
	env.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := smtpConfigFor(t, "smtp://"+testUser+":"+testPassword+"@"+sink.addr(), map[string]string{"SMTP_CA_FILE": sink.caFile})
	env.startService(t, newTestSMTPMailer(t, cfg, &out, env.log))

	const id = "ev-451-then-ok"
	env.publish(t, id)
	poll.Until(t, "the email", waitLimit, func() bool { return len(sink.received()) > 0 })
	env.waitAtRest(t, 60*time.Second)

	if n := len(sink.received()); n != 1 {
		t.Errorf("sink received %d messages; want 1", n)
	}
	if _, rcpts, _ := sink.calls(); rcpts != 2 {
		t.Errorf("%d RCPT TO; want 2 (the 451, then the retry)", rcpts)
	}
	if got := strings.Count(out.String(), "Sending email to: "); got != 1 {
		t.Errorf("stdout has %d `Sending email to:` lines; want 1:\n%s", got, out.String())
	}
	select {
	case dl := <-env.dead:
		t.Errorf("dead letter %v; want none", dl.Header)
	default:
	}
	if strings.Contains(logs.String(), testPassword) {
		t.Errorf("the SMTP password is in the logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "451") {
		t.Errorf("the 451 is not in the logs; want the failed attempt logged:\n%s", logs.String())
	}
}

// A 5xx reply for the recipient dead-letters the event after its one
// delivery, with the reason; the sent log's claim is released, so a replay
// of the dead letter sends.
func TestSMTPPermanentFailureIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	sink := startSMTPSink(t, sinkOptions{startTLS: true, user: testUser, pass: testPassword,
		rcpt: func(int, string) error { return smtpReply(550, smtp.EnhancedCode{5, 1, 1}, "no such user") }})
	var logs lockedBuffer
	env := startFaultEnv(t, nil)
	env.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := smtpConfigFor(t, "smtp://"+testUser+"@"+sink.addr(), map[string]string{
		"SMTP_CA_FILE": sink.caFile, "SMTP_PASSWORD_FILE": passwordFile(t, testPassword)})
	env.startService(t, newTestSMTPMailer(t, cfg, io.Discard, env.log))

	const id = "ev-550"
	env.publish(t, id)

	// The dead letter as an operator reads it: from the dead-letter stream.
	ctx := context.Background()
	dlq, err := env.js.Stream(ctx, "SHIPPY_EVENTS_DLQ")
	if err != nil {
		t.Fatalf("dead-letter stream: %v", err)
	}
	subject := "shippy.deadletter.user.created"
	var reason, deliveries, eventID string
	poll.Until(t, "the dead letter in the stream", waitLimit, func() bool {
		m, err := dlq.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return false
		}
		reason, deliveries, eventID = m.Header.Get("Dead-Letter-Reason"), m.Header.Get("Dead-Letter-Deliveries"), m.Header.Get("Event-Id")
		return true
	})
	env.waitAtRest(t, 60*time.Second)

	if deliveries != "1" || eventID != id {
		t.Errorf("dead letter: %s deliveries, event %q; want 1 delivery of %q", deliveries, eventID, id)
	}
	for _, want := range []string{"send welcome email for event " + id, "permanent failure", "550", "no such user"} {
		if !strings.Contains(reason, want) {
			t.Errorf("dead letter reason %q; want it to hold %q", reason, want)
		}
	}
	if _, rcpts, _ := sink.calls(); rcpts != 1 || len(sink.received()) != 0 {
		t.Errorf("%d RCPT TO, %d messages; want 1 and 0", rcpts, len(sink.received()))
	}
	c, ok, err := env.sentLog.Claim(ctx, id)
	if err != nil || !ok {
		t.Errorf("Claim(%q) after the dead letter = %v, %v; want true, nil (released for a replay)", id, ok, err)
	} else {
		_ = env.sentLog.Release(ctx, c)
	}
	if strings.Contains(logs.String(), testPassword) {
		t.Errorf("the SMTP password is in the logs:\n%s", logs.String())
	}
}

// Neither the start-up log, nor a failed or a successful send, nor printing
// the configuration shows the password.
func TestSMTPPasswordNeverLogged(t *testing.T) {
	t.Parallel()
	sink := startSMTPSink(t, sinkOptions{startTLS: true, user: testUser, pass: testPassword,
		rcpt: func(n int, _ string) error {
			if n == 1 {
				return smtpReply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			}
			return nil
		}})
	smtpURL := "smtp://" + testUser + ":" + testPassword + "@" + sink.addr()
	env := map[string]string{"SMTP_URL": smtpURL, "MAIL_FROM": testFrom, "SMTP_CA_FILE": sink.caFile}
	cfg, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("LoadConfig = %v", err)
	}
	var logs lockedBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mailer, closeMailer, err := newMailer(context.Background(), cfg, log, nil)
	if err != nil {
		t.Fatalf("newMailer = %v", err)
	}
	t.Cleanup(closeMailer)
	h := NewHandler(mailer, log)
	for _, id := range []string{"ev-refused", "ev-ok"} {
		_ = h.Handle(context.Background(), validEventWithID(id))
	}
	if len(sink.received()) != 1 {
		t.Fatalf("sink received %d messages; want 1 (the second event)", len(sink.received()))
	}
	if !strings.Contains(logs.String(), "sending email through SMTP") || !strings.Contains(logs.String(), "xxxxx@") {
		t.Errorf("no start-up line with the redacted URL:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), testPassword) {
		t.Errorf("the SMTP password is in the logs:\n%s", logs.String())
	}
	for _, v := range []any{cfg, cfg.SMTP, *cfg.SMTP} {
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			if s := fmt.Sprintf(format, v); strings.Contains(s, testPassword) {
				t.Errorf("Sprintf(%q, %T) shows the password: %s", format, v, s)
			}
		}
		if b, err := json.Marshal(v); err != nil || strings.Contains(string(b), testPassword) {
			t.Errorf("json.Marshal(%T) = %s, %v; shows the password or fails", v, b, err)
		}
	}
	var configLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&configLog, nil)).Info("config", "config", cfg, "smtp", cfg.SMTP)
	if strings.Contains(configLog.String(), testPassword) {
		t.Errorf("slog shows the password of a Config: %s", configLog.String())
	}
}

func validEventWithID(id string) *pb.UserCreated {
	ev := validEvent()
	ev.EventId = id
	return ev
}
