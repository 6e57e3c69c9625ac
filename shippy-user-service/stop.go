package main

import (
	"io"
	"sync"
	"sync/atomic"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/transport"
)

// The graceful stop, in order (serve):
//  1. the door closes: a request received from now on is dropped unserved
//     and its connection ends, as it would a moment later when the process
//     exits (doorTransport);
//  2. go-micro's Server.Stop deregisters and waits for the requests in
//     flight (server.Wait), then closes the listener;
//  3. the relay's loop stops (it may be backing off, deaf to Notify), then
//     one bounded Drain publishes the events those requests committed now
//     rather than at the next start;
//  4. the broker disconnects: go-micro starts that in a goroutine of its own
//     right after Stop, and heldBroker keeps it waiting until 3. is done.
//
// Without 1., Stop's wait group counts requests that keep arriving while it
// waits (the listener and pooled connections stay open until the wait
// ends): under steady load it may never reach zero, and an Add racing a
// Wait that is returning panics ("WaitGroup is reused before previous Wait
// has returned"). The door acts where a request is read, before go-micro
// counts it, on new and pooled connections alike.

// doorTransport is the server's transport with a door: once closed, a
// socket that receives a request reports the end of the connection instead.
type doorTransport struct {
	transport.Transport
	closed atomic.Bool
}

func (t *doorTransport) closeDoor() { t.closed.Store(true) }

func (t *doorTransport) Listen(addr string, opts ...transport.ListenOption) (transport.Listener, error) {
	l, err := t.Transport.Listen(addr, opts...)
	if err != nil {
		return nil, err
	}
	return doorListener{Listener: l, door: t}, nil
}

type doorListener struct {
	transport.Listener
	door *doorTransport
}

func (l doorListener) Accept(serve func(transport.Socket)) error {
	return l.Listener.Accept(func(sock transport.Socket) {
		serve(doorSocket{Socket: sock, door: l.door})
	})
}

type doorSocket struct {
	transport.Socket
	door *doorTransport
}

// Recv drops a request received after the door closed: go-micro's server
// then ends the connection. Requests are unary here, so a connection
// carries no other request in flight when it receives one.
func (s doorSocket) Recv(m *transport.Message) error {
	if err := s.Socket.Recv(m); err != nil {
		return err
	}
	if s.door.closed.Load() {
		return io.EOF
	}
	return nil
}

// heldBroker is the service's broker with its Disconnect held until
// release, so that the relay can still publish after Server.Stop.
type heldBroker struct {
	broker.Broker
	released     chan struct{}
	releaseOnce  sync.Once
	disconnected chan struct{}
	doneOnce     sync.Once
}

func newHeldBroker(b broker.Broker) *heldBroker {
	return &heldBroker{Broker: b, released: make(chan struct{}), disconnected: make(chan struct{})}
}

// Disconnect waits for release, then disconnects.
func (b *heldBroker) Disconnect() error {
	<-b.released
	err := b.Broker.Disconnect()
	b.doneOnce.Do(func() { close(b.disconnected) })
	return err
}

// release lets Disconnect proceed; Disconnected is closed once it returned.
func (b *heldBroker) release() { b.releaseOnce.Do(func() { close(b.released) }) }

func (b *heldBroker) Disconnected() <-chan struct{} { return b.disconnected }
