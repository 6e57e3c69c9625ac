package microenv

import (
	"context"
	"strconv"
	"time"

	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/server"
	"go-micro.dev/v6/transport"
	"go-micro.dev/v6/transport/headers"
)

// go-micro's rpc server tells the requests on one connection apart by their
// Micro-ID header (headers.ID), but its http transport hands it the headers
// in Go's canonical form, "Micro-Id": every request on a connection then has
// the id "". The server writes a reply before the handler's goroutine has
// released that request's pseudo-socket; a client that sends its next
// request on the same pooled connection within that gap has it handed to
// the finished request's pseudo-socket, where nothing reads it. The call
// then hangs for the client's 5 s connection timeout, fails with 408
// "<nil>" and is retried: the stall of issue 14 (BENCH.md). Restoring the
// header gives each request a pseudo-socket of its own.

// go-micro's rpc server also gives each request the deadline of its Timeout
// header (every go-micro client sends one), but with a `defer cancel()`
// inside the loop that serves a connection (server/rpc_server.go:260-268):
// each request's context, with a copy of its headers, stays referenced
// until the connection closes, about 1 KiB per request. At 16 callers the
// user-service's heap grew by 250 MB a minute until go-micro's client
// pool redialled, and its collections stopped every caller for up to
// 70 ms (BENCH.md). The socket hands the header on under another name,
// which go-micro leaves alone, and requestDeadline applies it per request.
const (
	timeoutHeader  = "Timeout"
	deadlineHeader = "Shippy-Request-Timeout"
)

// withMicroID wraps the server's transport so that every request it
// receives carries Micro-ID as go-micro's server looks it up, and its
// Timeout as requestDeadline reads it.
func withMicroID(t transport.Transport) transport.Transport {
	if t == nil {
		return nil
	}
	return microIDTransport{t}
}

type microIDTransport struct{ transport.Transport }

func (t microIDTransport) Listen(addr string, opts ...transport.ListenOption) (transport.Listener, error) {
	l, err := t.Transport.Listen(addr, opts...)
	if err != nil {
		return nil, err
	}
	return microIDListener{l}, nil
}

type microIDListener struct{ transport.Listener }

func (l microIDListener) Accept(fn func(transport.Socket)) error {
	return l.Listener.Accept(func(s transport.Socket) { fn(microIDSocket{s}) })
}

type microIDSocket struct{ transport.Socket }

// canonicalID is headers.ID as net/http spells it.
const canonicalID = "Micro-Id"

func (s microIDSocket) Recv(m *transport.Message) error {
	if err := s.Socket.Recv(m); err != nil {
		return err
	}
	if _, ok := m.Header[headers.ID]; !ok {
		if id, ok := m.Header[canonicalID]; ok {
			m.Header[headers.ID] = id
		}
	}
	if to, ok := m.Header[timeoutHeader]; ok {
		delete(m.Header, timeoutHeader)
		m.Header[deadlineHeader] = to
	}
	return nil
}

// requestDeadline gives each request the deadline its caller sent, in
// nanoseconds as go-micro's client writes it, and cancels it when the
// handler returns. The header is taken out of the metadata, so that calls
// the handler makes do not carry it on.
func requestDeadline(next server.HandlerFunc) server.HandlerFunc {
	return func(ctx context.Context, req server.Request, rsp any) error {
		to, ok := metadata.Get(ctx, deadlineHeader)
		if !ok {
			return next(ctx, req, rsp)
		}
		ctx = metadata.Delete(ctx, deadlineHeader)
		if n, err := strconv.ParseUint(to, 10, 64); err == nil && n > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(n))
			defer cancel()
		}
		return next(ctx, req, rsp)
	}
}
