package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/opshttp"
)

// emailOps is the email-service's ops server (METRICS_ADDRESS) with its
// metrics and readiness checks: the broker, and the sent log's key-value
// bucket on JetStream.
type emailOps struct {
	server *opshttp.Server
	sent   prometheus.Counter
	failed *prometheus.CounterVec
}

// Failure kinds of shippy_emails_failed_total.
const (
	failureTemporary = "temporary"
	failurePermanent = "permanent"
)

func newEmailOps(log *slog.Logger) *emailOps {
	o := &emailOps{
		server: opshttp.New(log.With("component", "ops")),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shippy_emails_sent_total",
			Help: "Welcome emails the mailer sent (a redelivered event already sent is not counted).",
		}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shippy_emails_failed_total",
			Help: "Welcome emails the mailer failed to send, by kind: temporary (retried) or permanent (dead-lettered at once).",
		}, []string{"kind"}),
	}
	o.failed.WithLabelValues(failureTemporary)
	o.failed.WithLabelValues(failurePermanent)
	o.server.Registry().MustRegister(o.sent, o.failed)
	return o
}

// countSends wraps the mailer that really sends (below the dedup layer, so
// an event ignored as already sent counts as nothing).
func (o *emailOps) countSends(next Mailer) Mailer {
	if o == nil {
		return next
	}
	return countingMailer{next: next, ops: o}
}

type countingMailer struct {
	next Mailer
	ops  *emailOps
}

func (m countingMailer) Send(ctx context.Context, e WelcomeEmail) error {
	err := m.next.Send(ctx, e)
	switch {
	case err == nil:
		m.ops.sent.Inc()
	case errors.Is(err, errPermanent):
		m.ops.failed.WithLabelValues(failurePermanent).Inc()
	default:
		m.ops.failed.WithLabelValues(failureTemporary).Inc()
	}
	return err
}

// checkSentLog makes the sent log's bucket a readiness check.
func (o *emailOps) checkSentLog(s *kvSentLog) {
	if o == nil {
		return
	}
	o.server.AddCheck("sent_log", func(ctx context.Context) error {
		if err := s.Ready(ctx); err != nil {
			return opshttp.Fail("key-value bucket unreachable", err)
		}
		return nil
	})
}

// watchBroker makes b (as Plugins built it, before the service wraps it) a
// readiness check and, for the jetstream broker, exports its counters.
func (o *emailOps) watchBroker(b broker.Broker) {
	if ready := microenv.BrokerReady(b); ready != nil {
		o.server.AddCheck("broker", func(ctx context.Context) error {
			if err := ready(ctx); err != nil {
				return opshttp.Fail("not connected", err)
			}
			return nil
		})
	}
	js, ok := b.(*jsbroker.Broker)
	if !ok {
		return
	}
	counter := func(name, help string, v func(jsbroker.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(js.Stats())) })
	}
	o.server.Registry().MustRegister(
		counter("shippy_events_delivered_total", "Events the broker gave to the handler, redeliveries included.",
			func(s jsbroker.Stats) uint64 { return s.Delivered }),
		counter("shippy_event_retries_total", "Events handed back for redelivery after the handler failed.",
			func(s jsbroker.Stats) uint64 { return s.Retried }),
		counter("shippy_dead_letters_total", "Events moved to the dead-letter stream (retries exhausted, or a permanent failure).",
			func(s jsbroker.Stats) uint64 { return s.DeadLettered }),
		counter("shippy_dead_letter_errors_total", "Failed attempts to store a dead letter (the event is kept and retried).",
			func(s jsbroker.Stats) uint64 { return s.DeadLetterErrs }),
	)
}
