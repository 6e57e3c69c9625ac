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
}

// LogMailer "sends" a welcome email the way the tutorial does: one line on
// out, plus a structured log line to follow the user by id.
type LogMailer struct {
	out io.Writer
	log *slog.Logger
}

// NewLogMailer returns a LogMailer printing to out (stdout in main) and
// logging to log.
func NewLogMailer(out io.Writer, log *slog.Logger) *LogMailer {
	return &LogMailer{out: out, log: log}
}

// Send prints `Sending email to: <Name>`. Control characters are dropped
// from the name so that one email is always exactly one line.
func (m *LogMailer) Send(ctx context.Context, e WelcomeEmail) error {
	if _, err := fmt.Fprintf(m.out, "Sending email to: %s\n", oneLine(e.Name)); err != nil {
		return fmt.Errorf("write email line: %w", err)
	}
	m.log.InfoContext(ctx, "welcome email sent",
		slog.String("event_id", e.EventID),
		slog.String("user_id", e.UserID),
		slog.String("email", e.Email))
	return nil
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}
