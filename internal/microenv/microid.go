package microenv

import (
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

// withMicroID wraps the server's transport so that every request it
// receives carries Micro-ID as go-micro's server looks it up.
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
	return nil
}
