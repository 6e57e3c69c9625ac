package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"unicode"
)

// WelcomeEmail is what the mailer needs to greet a new user; it is built from
// a user.created event so mailers do not depend on the wire format.
type WelcomeEmail struct {
	EventID string
	UserID  string
	Name    string
	Email   string
	Company string
	// RequestID is the id of the request that created the user, from the
	// event's X-Request-Id header; "" when it had none. Log lines get it
	// from the context; the SMTP mailer puts it in the email's header.
	RequestID string
}

// sentReport is what every mailer does after a successful send: the
// tutorial's line `Sending email to: <Name>` on out (stdout in main; tests
// and the docker-compose test count these lines) and a structured log line
// to follow the user by id.
type sentReport struct {
	out io.Writer
	log *slog.Logger
}

// report prints and logs e as sent, with attrs added to the log line.
// Control characters are dropped from the name so that one email is always
// exactly one line.
func (r sentReport) report(ctx context.Context, e WelcomeEmail, attrs ...slog.Attr) error {
	if _, err := fmt.Fprintf(r.out, "Sending email to: %s\n", oneLine(e.Name)); err != nil {
		return fmt.Errorf("write email line: %w", err)
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "welcome email sent", append([]slog.Attr{
		slog.String("event_id", e.EventID),
		slog.String("user_id", e.UserID),
		slog.String("email", e.Email),
	}, attrs...)...)
	return nil
}

// LogMailer "sends" a welcome email the way the tutorial does: one line on
// out, plus a structured log line to follow the user by id.
type LogMailer struct {
	sentReport
}

// NewLogMailer returns a LogMailer printing to out (stdout in main) and
// logging to log.
func NewLogMailer(out io.Writer, log *slog.Logger) *LogMailer {
	return &LogMailer{sentReport{out: out, log: log}}
}

// Send prints `Sending email to: <Name>` and logs the email as sent.
func (m *LogMailer) Send(ctx context.Context, e WelcomeEmail) error {
	return m.report(ctx, e)
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}
