package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go-micro.dev/v6/client"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/poll"
	"github.com/shippy/shippy/internal/requestid"
	"github.com/shippy/shippy/internal/servicelog"
	pb "github.com/shippy/shippy/proto/user"
)

// publishWithRequestID publishes event id as the user-service's relay does,
// with the request id rid in the X-Request-Id header ("" for none).
func (env *faultEnv) publishWithRequestID(t *testing.T, id, rid string) {
	t.Helper()
	ctx := jsbroker.WithEventID(context.Background(), id)
	if rid != "" {
		ctx = requestid.Outgoing(ctx, rid)
	}
	msg := env.pub.NewMessage(pb.TopicUserCreated, event(id), client.WithMessageContentType("application/protobuf"))
	if err := env.pub.Publish(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
}

// linesWith returns the JSON log lines whose msg is msg and whose event_id
// is eventID.
func linesWith(t *testing.T, logs, msg, eventID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range logLines(t, logs) {
		if l["msg"] == msg && l["event_id"] == eventID {
			out = append(out, l)
		}
	}
	return out
}

// The request id an event carries (X-Request-Id) reaches the email's header
// and the email-service's log lines: the welcome email sent, and for a
// failure the failed send and the dead letter, which keeps the header. An
// event without one gets neither, and stdout's line is the tutorial's.
func TestRequestIDFollowedToTheEmail(t *testing.T) {
	t.Parallel()
	sink := startSMTPSink(t, sinkOptions{startTLS: true,
		rcpt: func(_ int, to string) error {
			if strings.HasPrefix(to, "ev-refused") {
				return smtpReply(550, smtp.EnhancedCode{5, 1, 1}, "no such user")
			}
			return nil
		}})
	var logs lockedBuffer
	var out lockedBuffer
	env := startFaultEnv(t, nil)
	// As main builds it: request_id comes from the handler's context.
	env.log = servicelog.New(&logs, servicelog.JSON, slog.LevelDebug, serviceName)
	cfg := smtpConfigFor(t, "smtp://"+sink.addr(), map[string]string{"SMTP_CA_FILE": sink.caFile})
	env.startService(t, newTestSMTPMailer(t, cfg, &out, env.log))

	const rid, refusedRID = "cli-0af7651916cd43dd", "cli-refused-1"
	env.publishWithRequestID(t, "ev-with", rid)
	env.publishWithRequestID(t, "ev-without", "")
	env.publishWithRequestID(t, "ev-refused", refusedRID)

	var dead string
	poll.Until(t, "two emails and the dead letter", waitLimit, func() bool {
		select {
		case dl := <-env.dead:
			dead = dl.Header.Get(requestid.Header)
		default:
		}
		return len(sink.received()) == 2 && dead != ""
	})
	env.waitAtRest(t, 60*time.Second)

	for _, m := range sink.received() {
		p := parseMail(t, m.Data)
		eventID := p.header.Get(headerEventID)
		want := map[string]string{"ev-with": rid, "ev-without": ""}[eventID]
		if got := p.header.Get(requestid.Header); got != want {
			t.Errorf("email for %s: %s = %q; want %q", eventID, requestid.Header, got, want)
		}
	}
	if dead != refusedRID {
		t.Errorf("dead letter's %s = %q; want %q", requestid.Header, dead, refusedRID)
	}

	all := logs.String()
	for _, tt := range []struct{ msg, eventID, want string }{
		{"welcome email sent", "ev-with", rid},
		{"welcome email sent", "ev-without", ""},
		{"welcome email failed", "ev-refused", refusedRID},
		{"message dead-lettered", "ev-refused", refusedRID},
	} {
		lines := linesWith(t, all, tt.msg, tt.eventID)
		if len(lines) != 1 {
			t.Errorf("%d %q lines for %s; want 1:\n%s", len(lines), tt.msg, tt.eventID, all)
			continue
		}
		got, has := lines[0][requestid.LogKey]
		if (tt.want == "" && has) || (tt.want != "" && got != tt.want) {
			t.Errorf("%q line for %s: request_id = %v; want %q", tt.msg, tt.eventID, got, tt.want)
		}
	}
	// The tutorial's line is unchanged: no id on stdout.
	if got := out.String(); !strings.Contains(got, "Sending email to: Name ev-with\n") || strings.Contains(got, rid) {
		t.Errorf("stdout = %q; want the tutorial's lines only", got)
	}
}
