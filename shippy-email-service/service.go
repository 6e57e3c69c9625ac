package main

import (
	"fmt"
	"sync"

	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
)

// emailService is the go-micro service with h subscribed to user.created.
type emailService struct {
	micro.Service
	gate *readyBroker
}

// newEmailService builds the service from the MICRO_* environment (opts
// come first; tests pass registry, broker and address) and subscribes h in
// queue group queue.
func newEmailService(h *Handler, queue string, opts ...micro.Option) (*emailService, error) {
	srv, err := microenv.NewService(serviceName, append([]micro.Option{
		// Stop waits for RPCs in flight only with server.Wait, read when the
		// server is built; the replaced server's name is set again.
		micro.Server(server.NewRPCServer(server.Name(serviceName), server.Wait(nil))),
		micro.Version("latest"),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	gate := &readyBroker{Broker: srv.Options().Broker, ready: make(chan struct{})}
	srv.Init(micro.Broker(gate), micro.AfterStart(func() error { gate.open(); return nil }))
	if err := Subscribe(srv.Server(), h, queue); err != nil {
		return nil, err
	}
	return &emailService{Service: srv, gate: gate}, nil
}

// waitHandlersDone returns once the JetStream broker has disconnected, which
// it does only after its running handlers returned and their acks or naks
// went out. go-micro's Stop unsubscribes (jsbroker lets the running handler
// finish) unless deregistering failed first, and disconnects in the
// background after Stop returned: without this wait the sent log could
// close, or the process exit, under a handler holding a claim. Other brokers
// redeliver nothing, and their Disconnect may not be called twice.
func (s *emailService) waitHandlersDone() {
	s.gate.open() // a Start that failed must not leave a handler waiting
	if js, ok := s.gate.Broker.(*jsbroker.Broker); ok {
		_ = js.Disconnect() // returns when go-micro's own call is done
	}
}

// readyBroker holds every delivery until the service has started. go-micro
// v6.3.10's server subscribes on the broker before it adds the subscriber to
// its router (server/rpc_events.go, reSubscribe): a message delivered in
// between finds no subscriber, which go-micro reports as handled (nil), so
// the broker acks it and its email is lost. A durable broker delivers its
// backlog at once, so a replica starting with events waiting met this
// (e2e graceful-stop test). Start returns after the router has the
// subscriber.
type readyBroker struct {
	broker.Broker
	ready chan struct{}
	once  sync.Once
}

func (b *readyBroker) Subscribe(topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscriber, error) {
	return b.Broker.Subscribe(topic, func(e broker.Event) error {
		<-b.ready
		return h(e)
	}, opts...)
}

func (b *readyBroker) open() { b.once.Do(func() { close(b.ready) }) }
