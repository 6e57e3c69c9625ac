package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// sentLog remembers which events have had their welcome email sent, so that
// a redelivered event sends nothing.
//
// Design: claim, send, then record. Claim takes a short lease on the event
// id before the send; Sent records it for good, only after the mailer
// succeeded; Release drops the lease when the send failed, so a retry sends.
//
//   - Redelivery after a send: Claim finds the id sent and nothing is sent.
//   - Two replicas get the same event at once (e.g. after an ack timeout):
//     one wins the claim, the other gets errSendInProgress, which the broker
//     sees as a failure and redelivers later, when the id is sent. One email.
//   - The send fails: the lease is released, the error goes to the broker,
//     the redelivery sends.
//   - The replica dies between Claim and the send: nothing is recorded and
//     the lease expires, so a redelivery after the lease takes it over and
//     sends. No email is lost (claiming for good before sending would lose it)
//     as long as the broker keeps redelivering until the lease is over: see
//     defaultSendLease.
//
// What remains at-least-once: a replica that dies (or cannot reach the log)
// after the mailer succeeded and before Sent is stored leaves a lease that
// expires, and the redelivery sends a second email. No log can close that
// window for a mailer (SMTP) that has no idempotency key of its own.
type sentLog interface {
	// Claim returns ok true and the caller's claim if the caller should send
	// the email for eventID; ok false with a nil error if it has been sent;
	// errSendInProgress if another delivery holds a live lease on it.
	Claim(ctx context.Context, eventID string) (c claim, ok bool, err error)
	// Sent records the claim's event as sent; its lease ends. If another
	// delivery took the lease over meanwhile, the event is recorded all the
	// same and the error is errClaimLost.
	Sent(ctx context.Context, c claim) error
	// Release drops the caller's lease after a failed send; a lease taken
	// over by another delivery meanwhile is left alone.
	Release(ctx context.Context, c claim) error
}

// claim is one delivery's lease on an event id. rev tells this lease from a
// later one on the same id (a takeover after it expired), so that a late
// Sent or Release never acts on another delivery's lease.
type claim struct {
	eventID string
	rev     uint64
}

// errClaimLost is returned by Sent when the lease had expired and another
// delivery took it over during the send: that delivery may send again.
var errClaimLost = errors.New("claim taken over by another delivery during the send")

// errSendInProgress is returned for an event another delivery is sending
// now; the broker should deliver it again later.
var errSendInProgress = errors.New("welcome email for this event is being sent by another delivery")

// defaultSendLease is how long a claim keeps other deliveries of the same
// event away; the send gets half of it (5s). Deliveries that meet a live
// claim fail with errSendInProgress and are redelivered on the broker's
// backoff, each counting toward its dead-letter limit, so the lease must end
// before the deliveries do: it must be shorter than the delay before the
// last delivery (EMAIL_RETRY_BACKOFF's last, 5m by default; LoadConfig
// refuses a longer EMAIL_SEND_LEASE). The default is also shorter than
// JetStream's ack wait (30s), so the redelivery of a message whose replica
// died mid-send finds the lease over and sends at once; a longer lease only
// delays that send.
const defaultSendLease = 10 * time.Second

// sendTimeout bounds one send under a lease of the given length: half of
// it, so that the send ends before another delivery may take the claim over.
func sendTimeout(lease time.Duration) time.Duration { return lease / 2 }

// logTimeout bounds the Sent and Release calls made after the send, which
// run even if the delivery's context has been cancelled meanwhile.
const logTimeout = 5 * time.Second

// dedupMailer sends each event's welcome email once through next, however
// often the event is delivered (see sentLog for the guarantee).
type dedupMailer struct {
	next  Mailer
	sent  sentLog
	lease time.Duration
	log   *slog.Logger
}

// newDedupMailer wraps next; lease must match the sentLog's lease: the send
// is given half of it, so that it ends before another delivery may take the
// claim over.
func newDedupMailer(next Mailer, sent sentLog, lease time.Duration, log *slog.Logger) *dedupMailer {
	return &dedupMailer{next: next, sent: sent, lease: lease, log: log}
}

func (d *dedupMailer) Send(ctx context.Context, e WelcomeEmail) error {
	c, ok, err := d.sent.Claim(ctx, e.EventID)
	if err != nil {
		return fmt.Errorf("claim event %s: %w", e.EventID, err)
	}
	if !ok {
		d.log.InfoContext(ctx, "welcome email already sent; event ignored",
			slog.String("event_id", e.EventID), slog.String("user_id", e.UserID))
		return nil
	}
	d.log.DebugContext(ctx, "event claimed for sending",
		slog.String("event_id", e.EventID), slog.String("user_id", e.UserID))

	sendCtx, cancel := context.WithTimeout(ctx, sendTimeout(d.lease))
	err = d.next.Send(sendCtx, e)
	cancel()

	logCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), logTimeout)
	defer cancel()
	if err != nil {
		if rerr := d.sent.Release(logCtx, c); rerr != nil {
			// Not lost: the lease expires and a redelivery sends.
			d.log.WarnContext(ctx, "release claim after failed send",
				slog.String("event_id", e.EventID), slog.Any("error", rerr))
		}
		return err
	}
	// The email is out: returning an error would make the broker redeliver
	// and send it again, so Sent's errors are logged and success reported.
	switch err := d.sent.Sent(logCtx, c); {
	case errors.Is(err, errClaimLost):
		d.log.WarnContext(ctx, "welcome email sent after its lease expired; the delivery that took it over may send it again",
			slog.String("event_id", e.EventID), slog.String("user_id", e.UserID))
	case err != nil:
		d.log.ErrorContext(ctx, "welcome email sent but not recorded; a redelivery may send it again",
			slog.String("event_id", e.EventID), slog.String("user_id", e.UserID), slog.Any("error", err))
	}
	return nil
}
