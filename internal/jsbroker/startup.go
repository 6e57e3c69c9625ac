package jsbroker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes of a cluster that is still forming or failing
// over (nats-server's JSClusterNotAvailErr and JSClusterNoPeersErrF).
const (
	errCodeClusterNotAvailable jetstream.ErrorCode = 10008
	errCodeNoSuitablePeers     jetstream.ErrorCode = 10005
)

// Transient reports whether err, from a JetStream API request, may pass by
// itself: no answer in time, or a cluster without a leader or with too few
// servers for the replicas yet. A server without JetStream (no responders)
// or a refused configuration is not transient.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return true
	case errors.As(err, &apiErr):
		return apiErr.ErrorCode == errCodeClusterNotAvailable || apiErr.ErrorCode == errCodeNoSuitablePeers
	}
	return false
}

// RetryStart calls fn, each call bounded by attempt, until it returns nil
// or an error that is not Transient, ctx ends, or total has passed; it logs
// each retry. Programs start with it what needs JetStream (streams, key-value
// buckets), so that services started together with a new NATS cluster, or
// during a failover, wait for its leaders instead of exiting.
func RetryStart(ctx context.Context, log *slog.Logger, what string, total, attempt time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(total)
	wait := 250 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := fn(actx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil || time.Now().Add(wait).After(deadline) {
			return err
		}
		log.Warn("JetStream not ready; retrying", "what", what, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}
