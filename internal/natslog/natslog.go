// Package natslog sends what a NATS connection reports (disconnects,
// reconnects, asynchronous errors such as a permissions violation or a slow
// consumer, lame-duck mode) to a *slog.Logger, so that a service writes one
// log stream in one format. Without an error handler, nats.go writes
// asynchronous errors to stderr as plain text ("nats: permissions
// violation ..."), which a JSON log parser cannot read.
package natslog

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// Options returns the connection callbacks that log to log. Put them before
// options that set callbacks of their own: for nats.go the last one wins.
// The connection's closed callback is left alone (brokers use it to wait
// for a drain).
func Options(log *slog.Logger) []nats.Option {
	if log == nil {
		log = slog.Default()
	}
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil on the program's own Close
				log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			// Once per failed attempt, every reconnect wait: debug only.
			log.Debug("nats reconnect attempt failed", "err", err)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("nats error", "err", err, "subject", sub.Subject)
				return
			}
			log.Error("nats error", "err", err)
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			log.Warn("nats server entering lame duck mode; the connection will move to another server", "url", nc.ConnectedUrlRedacted())
		}),
	}
}

// State follows whether a connection is up, for readiness checks on
// connections owned by code that does not expose them (go-micro's NATS
// broker): give StateOptions to the connection.
type State struct {
	up atomic.Bool
}

// ErrDown is State.Ready's error while the connection is not up.
var ErrDown = errors.New("nats connection not up")

// Ready returns nil while the connection is up.
func (s *State) Ready(context.Context) error {
	if !s.up.Load() {
		return ErrDown
	}
	return nil
}

// StateOptions are Options(log) that also keep st up to date; they set the
// connection's connected and closed callbacks too.
func StateOptions(log *slog.Logger, st *State) []nats.Option {
	if log == nil {
		log = slog.Default()
	}
	return append(Options(log),
		nats.ConnectHandler(func(*nats.Conn) { st.up.Store(true) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			st.up.Store(false)
			if err != nil {
				log.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			st.up.Store(true)
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) { st.up.Store(false) }),
	)
}
