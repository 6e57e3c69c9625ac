// Package httpbroker is go-micro's built-in pubsub made synchronous: a
// go-micro broker.Broker that speaks the wire format of go-micro v6's http
// broker (broker/http.go), so a tutorial-style service on go-micro's stock
// broker receives shippy's events and shippy receives a stock publisher's,
// but whose Publish returns only once the event was delivered.
//
// go-micro's own http broker keeps an event in an in-memory inbox of 64 per
// topic (oldest kept, newer ones dropped), returns nil from Publish before
// anything is sent, sends in a goroutine and ignores the subscriber's answer,
// which is 200 even when the handler failed: a caller never learns of a loss.
// Here Publish finds the topic's subscribers in the registry, POSTs the event
// to one node of each queue group (trying the group's other nodes if one
// fails) and to every node of a broadcast subscription, and returns an error
// when there is no subscriber, a delivery failed or the context ended. The
// subscriber side answers 500 with the handler's error when the handler
// fails. There is no backlog: a caller that must not lose an event keeps it
// and publishes again (shippy's transactional outbox does).
//
// The wire, as go-micro's: subscribers register as nodes of registry service
// "micro.http.broker" (version = queue name, or "ff.http.broadcast" without
// one; metadata broker=http, topic, secure), and an event is a POST of the
// JSON-encoded broker.Message, with the topic in its Micro-Topic header, to
// http://<node address>/?id=<node id>.
package httpbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/codec/json"
	"go-micro.dev/v6/logger"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/registry/cache"
)

// Registry names go-micro's http broker uses; both sides must agree on them.
const (
	// ServiceName is the registry service subscribers register under.
	ServiceName = "micro.http.broker"
	// BroadcastVersion is the service version of a subscription without a
	// queue: every such node receives every event.
	BroadcastVersion = "ff.http.broadcast"
)

// Defaults.
const (
	// DefaultAddress is where the subscriber side listens unless
	// MICRO_BROKER_ADDRESS (broker.Addrs) says otherwise: local only, as
	// go-micro's http broker.
	DefaultAddress = "127.0.0.1:0"
	// DefaultPublishTimeout bounds a Publish whose context has no deadline.
	DefaultPublishTimeout = 10 * time.Second
	// registerTTL and registerInterval are go-micro's: a subscriber node is
	// registered for a minute and registered again every 30 seconds.
	registerTTL      = time.Minute
	registerInterval = 30 * time.Second
	// drainTimeout bounds the wait for handlers still running when a
	// subscriber unsubscribes or the broker disconnects.
	drainTimeout = 5 * time.Second
	// maxEventBytes bounds an event body the subscriber side reads.
	maxEventBytes = 32 << 20
)

var (
	// ErrNoSubscriber is returned by Publish when no node subscribes to the
	// topic.
	ErrNoSubscriber = errors.New("no subscriber")
	// ErrNotConnected is returned by Publish and Subscribe before Connect
	// and after Disconnect.
	ErrNotConnected = errors.New("http broker not connected")
)

// Broker implements go-micro's broker.Broker. Its methods are safe for
// concurrent use.
type Broker struct {
	// life serialises Connect and Disconnect, so that a second Disconnect
	// returns only once the first has finished.
	life sync.Mutex

	mu        sync.RWMutex
	opts      broker.Options
	client    *http.Client
	connected bool
	advertise string       // host:port subscriber nodes register
	lookup    cache.Cache  // subscriber lookups, while connected
	srv       *http.Server // the subscriber side, while connected
	stopBeat  chan struct{}
	beatDone  chan struct{}
	subs      map[string]*subscriber // by node id
}

var _ broker.Broker = (*Broker)(nil)

// NewBroker returns a broker configured by opts: broker.Registry (default
// go-micro's registry.DefaultRegistry), broker.Addrs (the listen address,
// default DefaultAddress), broker.TLSConfig (serve and post over TLS).
func NewBroker(opts ...broker.Option) *Broker {
	o := *broker.NewOptions(opts...)
	if o.Codec == nil {
		o.Codec = json.Marshaler{}
	}
	return &Broker{opts: o, client: newClient(o.TLSConfig), subs: make(map[string]*subscriber)}
}

// newClient returns the client deliveries are posted with: connections are
// kept alive between events; a delivery's context bounds it as a whole.
func newClient(tlsConfig *tls.Config) *http.Client {
	var tc *tls.Config
	if tlsConfig != nil {
		tc = tlsConfig.Clone()
	}
	return &http.Client{Transport: &http.Transport{
		// No proxy: subscribers are addresses from the registry.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 16,
		// Shorter than the subscriber side's idle timeout, so that a
		// connection is rarely reused just as the other side closes it.
		IdleConnTimeout: 30 * time.Second,
	}}
}

// Init applies opts; it fails while connected, as go-micro's broker does.
func (b *Broker) Init(opts ...broker.Option) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.connected {
		return errors.New("httpbroker: cannot Init while connected")
	}
	for _, o := range opts {
		o(&b.opts)
	}
	if b.opts.Codec == nil {
		b.opts.Codec = json.Marshaler{}
	}
	b.client = newClient(b.opts.TLSConfig)
	return nil
}

// Options returns the options.
func (b *Broker) Options() broker.Options {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.opts
}

// Address returns the address subscriber nodes register while connected,
// the configured listen address otherwise.
func (b *Broker) Address() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.connected {
		return b.advertise
	}
	return b.listenAddress()
}

func (b *Broker) listenAddress() string {
	if len(b.opts.Addrs) > 0 && b.opts.Addrs[0] != "" {
		return b.opts.Addrs[0]
	}
	return DefaultAddress
}

func (b *Broker) registry() registry.Registry {
	if b.opts.Registry != nil {
		return b.opts.Registry
	}
	return registry.DefaultRegistry
}

// String is "http": go-micro's cmd keeps a broker whose name matches
// MICRO_BROKER instead of replacing it with its own.
func (b *Broker) String() string { return "http" }

// Connect starts the subscriber side's HTTP server, the registry lookups and
// the heartbeat that keeps subscriptions registered.
func (b *Broker) Connect() error {
	b.life.Lock()
	defer b.life.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.connected {
		return nil
	}
	if b.opts.Secure && b.opts.TLSConfig == nil {
		// go-micro's broker would generate a self-signed certificate, which
		// a verifying publisher refuses.
		return errors.New("httpbroker: Secure needs a TLSConfig with a certificate")
	}
	l, err := net.Listen("tcp", b.listenAddress())
	if err != nil {
		return fmt.Errorf("httpbroker: listen: %w", err)
	}
	advertise, err := advertiseAddress(l.Addr().String())
	if err != nil {
		l.Close()
		return fmt.Errorf("httpbroker: %w", err)
	}
	if b.opts.TLSConfig != nil {
		l = tls.NewListener(l, b.opts.TLSConfig)
	}
	b.srv = &http.Server{
		Handler:           b,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go b.srv.Serve(l) //nolint:errcheck // returns ErrServerClosed at Disconnect
	b.advertise = advertise
	b.lookup = cache.New(b.registry(), cache.WithLogger(b.opts.Logger))
	b.stopBeat, b.beatDone = make(chan struct{}), make(chan struct{})
	go b.heartbeat(b.registry(), b.stopBeat, b.beatDone)
	b.connected = true
	return nil
}

// Ready reports whether the broker is connected (its subscriber side
// listening); the subscribers it publishes to are found per publish, so
// there is nothing else to reach.
func (b *Broker) Ready(context.Context) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if !b.connected {
		return ErrNotConnected
	}
	return nil
}

// Disconnect deregisters the subscriptions, lets the deliveries in flight
// finish (for at most a few seconds) and answers them, then stops. A second
// call returns once the first has finished.
func (b *Broker) Disconnect() error {
	b.life.Lock()
	defer b.life.Unlock()
	b.mu.Lock()
	if !b.connected {
		b.mu.Unlock()
		return nil
	}
	b.connected = false
	subs := make([]*subscriber, 0, len(b.subs))
	for _, s := range b.subs {
		subs = append(subs, s)
	}
	b.subs = make(map[string]*subscriber)
	srv, lookup, reg := b.srv, b.lookup, b.registry()
	close(b.stopBeat)
	beatDone := b.beatDone
	b.mu.Unlock()

	<-beatDone
	var errs []error
	for _, s := range subs {
		if s.close() {
			if err := reg.Deregister(s.svc); err != nil {
				errs = append(errs, fmt.Errorf("deregister %s: %w", s.id, err))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("stop serving: %w", err))
		srv.Close()
	}
	lookup.Stop()
	b.client.CloseIdleConnections()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("httpbroker: disconnect: %w", err)
	}
	return nil
}

// heartbeat registers every subscription again each registerInterval, as
// go-micro's broker does, so that registries with a TTL keep them.
func (b *Broker) heartbeat(reg registry.Registry, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(registerInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		b.mu.RLock()
		svcs := make([]*registry.Service, 0, len(b.subs))
		for _, s := range b.subs {
			svcs = append(svcs, s.svc)
		}
		log := b.opts.Logger
		b.mu.RUnlock()
		for _, svc := range svcs {
			if err := reg.Register(svc, registry.RegisterTTL(registerTTL)); err != nil {
				log.Logf(logger.WarnLevel, "httpbroker: register subscription %s again: %v", svc.Nodes[0].Id, err)
			}
		}
	}
}

// advertiseAddress is the address to register for listen address addr: a
// wildcard host (0.0.0.0, ::) becomes the host's first private address,
// else its first other non-loopback one, else the loopback address.
func advertiseAddress(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsUnspecified() {
		return addr, nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("interface addresses: %w", err)
	}
	var public net.IP
	for _, a := range ifaddrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.IsLoopback() || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.IsPrivate() {
			return net.JoinHostPort(n.IP.String(), port), nil
		}
		if public == nil {
			public = n.IP
		}
	}
	if public != nil {
		return net.JoinHostPort(public.String(), port), nil
	}
	return net.JoinHostPort("127.0.0.1", port), nil
}
