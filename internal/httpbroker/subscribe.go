package httpbroker

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport/headers"
)

// Subscribe registers a node for topic in the registry; events posted to it
// run h, one call per POST, and the POST is answered once h returned: 200,
// or 500 with h's error. broker.Queue names the queue group: nodes sharing
// it get each event once between them; without it every node gets every
// event.
func (b *Broker) Subscribe(topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscriber, error) {
	o := broker.NewSubscribeOptions(opts...)
	version := o.Queue
	if version == "" {
		version = BroadcastVersion
	}
	b.mu.Lock()
	if !b.connected {
		b.mu.Unlock()
		return nil, fmt.Errorf("subscribe %s: %w", topic, ErrNotConnected)
	}
	secure := "false"
	if b.opts.TLSConfig != nil {
		secure = "true"
	}
	s := &subscriber{
		b:       b,
		id:      topic + "-" + uuid.NewString(),
		topic:   topic,
		opts:    o,
		handler: h,
	}
	s.svc = &registry.Service{
		Name:    ServiceName,
		Version: version,
		Nodes: []*registry.Node{{
			Id:       s.id,
			Address:  b.advertise,
			Metadata: map[string]string{"broker": "http", "topic": topic, "secure": secure},
		}},
	}
	// In the map before it is registered: a publisher may post at once.
	b.subs[s.id] = s
	reg := b.registry()
	b.mu.Unlock()

	if err := reg.Register(s.svc, registry.RegisterTTL(registerTTL)); err != nil {
		b.mu.Lock()
		delete(b.subs, s.id)
		b.mu.Unlock()
		return nil, fmt.Errorf("subscribe %s: register: %w", topic, err)
	}
	return s, nil
}

// subscriber is one subscription: a registry node and its handler.
type subscriber struct {
	b       *Broker
	id      string
	topic   string
	opts    broker.SubscribeOptions
	handler broker.Handler
	svc     *registry.Service

	mu       sync.Mutex
	closed   bool
	inflight sync.WaitGroup
}

func (s *subscriber) Options() broker.SubscribeOptions { return s.opts }
func (s *subscriber) Topic() string                    { return s.topic }

// Unsubscribe deregisters the node, refuses further deliveries to it (the
// publisher tries another node or reports the failure) and waits, for at
// most a few seconds, for the handlers it is running.
func (s *subscriber) Unsubscribe() error {
	s.b.mu.Lock()
	delete(s.b.subs, s.id)
	reg := s.b.registry()
	s.b.mu.Unlock()
	if !s.close() {
		return nil
	}
	err := reg.Deregister(s.svc)
	s.wait(drainTimeout)
	if err != nil {
		return fmt.Errorf("unsubscribe %s: deregister: %w", s.topic, err)
	}
	return nil
}

// begin counts a delivery in; false once the subscriber is closed.
func (s *subscriber) begin() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *subscriber) end() { s.inflight.Done() }

// close stops new deliveries; it reports whether this call closed it.
func (s *subscriber) close() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	return true
}

// wait waits for the deliveries in flight, for at most d.
func (s *subscriber) wait(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// event is what a handler receives. Ack does nothing: the answer to the
// POST is the acknowledgement.
type event struct {
	topic string
	msg   *broker.Message
}

func (e *event) Topic() string            { return e.topic }
func (e *event) Message() *broker.Message { return e.msg }
func (e *event) Ack() error               { return nil }
func (e *event) Error() error             { return nil }

// ServeHTTP receives a delivery: a POST of a JSON-encoded broker.Message to
// /?id=<node id>. Unlike go-micro's broker, which answers 200 whatever its
// handler returned, it answers 500 with the handler's error, and 404 for a
// node id it does not serve (a stale registry entry, or a subscription
// ending), so that the publisher tries elsewhere or reports the failure.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEventBytes))
	if err != nil {
		http.Error(w, "read event: "+err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.RLock()
	codec := b.opts.Codec
	s := b.subs[r.URL.Query().Get("id")]
	b.mu.RUnlock()

	var m broker.Message
	if err := codec.Unmarshal(body, &m); err != nil {
		http.Error(w, "decode event: "+err.Error(), http.StatusBadRequest)
		return
	}
	topic := m.Header[headers.Message]
	if topic == "" {
		http.Error(w, "event has no "+headers.Message+" header", http.StatusBadRequest)
		return
	}
	if s == nil || s.topic != topic || !s.begin() {
		http.Error(w, fmt.Sprintf("no subscription %q for topic %q here", r.URL.Query().Get("id"), topic), http.StatusNotFound)
		return
	}
	defer s.end()
	if err := s.handler(&event{topic: topic, msg: &m}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	// The answer leaves before the delivery counts out, so that a process
	// exiting after Unsubscribe or Disconnect does not cut it: an event
	// handled but not answered would be published again.
	_ = http.NewResponseController(w).Flush()
}

// compile-time checks
var (
	_ broker.Subscriber = (*subscriber)(nil)
	_ broker.Event      = (*event)(nil)
	_ http.Handler      = (*Broker)(nil)
)
