package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/requestid"
	pb "github.com/shippy/shippy/proto/user"
	"go-micro.dev/v6/server"
)

// Mailer sends the welcome email for one event.
//
// It is also the seam for idempotency (issue 4): dedupMailer wraps the real
// one, skips ids already sent and records an id only after the wrapped Send
// succeeded, so the handler stays as it is.
type Mailer interface {
	Send(ctx context.Context, e WelcomeEmail) error
}

// errInvalidEvent marks events that can never be sent. It is returned
// unmarked, so an invalid event is retried like any other and dead-lettered
// when its deliveries run out (jsbroker's MaxDeliver), with this error's
// text as the reason; only the mailer's errPermanent is dead-lettered at once.
var errInvalidEvent = errors.New("invalid user.created event")

// errPermanent marks a mailer's failure that no retry can fix (the SMTP
// server refused the recipient for good): the handler hands it to the broker
// as jsbroker.Permanent, which survives go-micro's flattening of the error
// to text, and jsbroker dead-letters the event at once with the reason.
var errPermanent = errors.New("permanent failure")

// Handler turns user.created events into welcome emails.
type Handler struct {
	mailer Mailer
	log    *slog.Logger
	// concurrency is how many events Subscribe lets run at once.
	concurrency int
	// retry is the JetStream redelivery schedule; nil is the broker's.
	retry []time.Duration
}

// NewHandler returns a Handler sending through mailer, defaultConcurrency
// events at a time.
func NewHandler(mailer Mailer, log *slog.Logger) *Handler {
	return &Handler{mailer: mailer, log: log, concurrency: defaultConcurrency}
}

// WithConcurrency sets how many events Subscribe lets h handle at once
// (EMAIL_CONCURRENCY); n below 1 keeps the default.
func (h *Handler) WithConcurrency(n int) *Handler {
	if n > 0 {
		h.concurrency = n
	}
	return h
}

// WithRetry sets the delays before each redelivery of an event whose email
// failed (EMAIL_RETRY_BACKOFF, JetStream broker); nil keeps the broker's.
func (h *Handler) WithRetry(backoff []time.Duration) *Handler {
	h.retry = backoff
	return h
}

// Handle is the go-micro subscriber: go-micro has already decoded the
// message with the codec named by its Content-Type. Errors are returned so
// that the broker sees them (logged by core NATS, nak'ed by a durable broker).
func (h *Handler) Handle(ctx context.Context, ev *pb.UserCreated) error {
	if err := validate(ev); err != nil {
		h.log.WarnContext(ctx, "rejected user.created event",
			slog.String("event_id", ev.GetEventId()),
			slog.String("user_id", ev.GetId()),
			slog.Any("error", err))
		return err
	}
	err := h.mailer.Send(ctx, WelcomeEmail{
		EventID:   ev.GetEventId(),
		UserID:    ev.GetId(),
		Name:      ev.GetName(),
		Email:     ev.GetEmail(),
		Company:   ev.GetCompany(),
		RequestID: requestid.FromContext(ctx),
	})
	if err != nil {
		permanent := errors.Is(err, errPermanent)
		h.log.ErrorContext(ctx, "welcome email failed",
			slog.String("event_id", ev.GetEventId()),
			slog.String("user_id", ev.GetId()),
			slog.Bool("permanent", permanent),
			slog.Any("error", err))
		err = fmt.Errorf("send welcome email for event %s: %w", ev.GetEventId(), err)
		if permanent {
			// A durable broker (jsbroker) dead-letters it now instead of
			// retrying; the others see an error as before.
			return jsbroker.Permanent(err)
		}
		return err
	}
	return nil
}

func validate(ev *pb.UserCreated) error {
	// Named as in user.proto, so a dead letter's reason names the field.
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"event_id", ev.GetEventId()},
		{"id", ev.GetId()},
		{"name", ev.GetName()},
		{"email", ev.GetEmail()},
	} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %v", errInvalidEvent, missing)
	}
	return nil
}

// defaultConcurrency is how many events a replica handles at once on the
// JetStream broker (EMAIL_CONCURRENCY; other brokers ignore it): a handler
// mostly waits (the sent log's claim and record, the mail server), so a few
// in flight overlap those waits. Each still claims its event id first, so a
// send stays exactly once.
const defaultConcurrency = 8

// Subscribe registers h for user.created on srv in the queue group queue, so
// that replicas sharing the queue handle each event once between them, up
// to h's concurrency at a time per replica (JetStream broker).
func Subscribe(srv server.Server, h *Handler, queue string) error {
	ctx := jsbroker.WithConcurrency(context.Background(), h.concurrency)
	if h.retry != nil {
		ctx = jsbroker.WithRetry(ctx, h.retry...)
	}
	sub := srv.NewSubscriber(pb.TopicUserCreated, h.Handle, server.SubscriberQueue(queue), server.SubscriberContext(ctx))
	if err := srv.Subscribe(sub); err != nil {
		return fmt.Errorf("subscribe to %s: %w", pb.TopicUserCreated, err)
	}
	return nil
}
