package microenv

import (
	"context"

	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natslog"
)

// BrokerReady returns the readiness check of a broker Plugins built: the
// jetstream broker is ready when connected and JetStream answers, the http
// broker once connected (listening), go-micro's NATS broker while its
// connection is up. It returns nil for a broker with no such check (one a
// test built).
func BrokerReady(b broker.Broker) func(context.Context) error {
	if r, ok := b.(interface{ Ready(context.Context) error }); ok {
		return r.Ready
	}
	return nil
}

// natsBrokerState is go-micro's NATS broker, whose connection it does not
// expose, with the connection's state followed through its callbacks.
type natsBrokerState struct {
	broker.Broker
	natslog.State
}
