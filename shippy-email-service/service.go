package main

import (
	"fmt"
	"sync"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/httpbroker"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/requestid"
)

// emailService is the go-micro server with h subscribed to user.created.
type emailService struct {
	server server.Server
	gate   *readyBroker
}

// newEmailService builds the server on p (from MICRO_*, or a test's) and
// subscribes h in queue group queue. The handler's context carries the
// event's request id (its X-Request-Id header), for its log lines and the
// email's header.
func newEmailService(env microenv.Env, p microenv.Plugins, h *Handler, queue string) (*emailService, error) {
	gate := &readyBroker{Broker: p.Broker, ready: make(chan struct{})}
	p.Broker = gate
	srv := env.NewServer(serviceName, p, server.WrapSubscriber(requestid.NewSubscriberWrapper()))
	if err := Subscribe(srv, h, queue); err != nil {
		return nil, err
	}
	return &emailService{server: srv, gate: gate}, nil
}

// start starts the server, then lets deliveries through (see readyBroker).
func (s *emailService) start() error {
	if err := s.server.Start(); err != nil {
		return fmt.Errorf("start %s: %w", serviceName, err)
	}
	s.gate.open()
	return nil
}

// stop deregisters, unsubscribes and waits for the handlers running.
func (s *emailService) stop() error {
	err := s.server.Stop()
	s.waitHandlersDone()
	if err != nil {
		return fmt.Errorf("stop %s: %w", serviceName, err)
	}
	return nil
}

// waitHandlersDone returns once the JetStream broker or shippy's http broker
// has disconnected, which they do only after their running handlers
// returned and their acks, naks or answers went out. go-micro's Stop
// unsubscribes (both let the running handler finish) unless deregistering
// failed first, and disconnects in the background after Stop returned:
// without this wait the sent log could close, or the process exit, under a
// handler holding a claim, and an email sent but not answered would be
// published again. Other brokers redeliver nothing, and their Disconnect may
// not be called twice.
func (s *emailService) waitHandlersDone() {
	s.gate.open() // a Start that failed must not leave a handler waiting
	switch b := s.gate.Broker.(type) {
	case *jsbroker.Broker:
		_ = b.Disconnect() // returns when go-micro's own call is done
	case *httpbroker.Broker:
		_ = b.Disconnect() // the same
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
