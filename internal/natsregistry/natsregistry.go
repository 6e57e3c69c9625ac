// Package natsregistry is a go-micro registry on NATS in which each service
// has subjects of its own, so that NATS permissions can say who may answer
// for which service, and in which a lookup returns as soon as the service has
// answered instead of after a fixed wait.
//
// go-micro v6's NATS registry (registry/nats) puts every service on one
// query subject, micro.nats.query: anyone who may subscribe there may answer
// for any service, so a NATS account that any shippy program uses could
// register itself as go.micro.srv.user and receive passwords. It also waits
// its whole timeout (100 ms) on every lookup, and a loaded machine that
// answers later gets "service not found".
//
// Subjects, for service S (a go-micro name such as go.micro.srv.user):
//
//	<prefix>.query.S   a lookup: each process serving S replies with its nodes
//	<prefix>.watch.S   register and deregister events of S
//	<prefix>.list      ListServices: every process replies with its services
//
// A lookup with no subscriber on the query subject fails at once (NATS
// answers "no responders"); otherwise it returns Grace after the first
// answer, or after Timeout when no answer came. Optionally a process also
// answers go-micro's own micro.nats.query lookups for its services, so
// go-micro's tools (`micro call`) find them with their stock NATS registry,
// and asks there too, so it finds programs on go-micro's stock registry
// (a subscriber written as in the tutorial, on the built-in broker).
package natsregistry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/natslog"
)

// Defaults; each has an Option.
const (
	DefaultPrefix  = "shippy.registry"
	DefaultTimeout = 3 * time.Second
	DefaultGrace   = 50 * time.Millisecond
	// GoMicroQuerySubject is where go-micro's stock NATS registry asks.
	GoMicroQuerySubject = "micro.nats.query"
)

// ErrInvalidName is returned for a service name that cannot be a NATS
// subject: empty, or with white space or wildcards.
var ErrInvalidName = errors.New("service name is not a valid NATS subject")

// Registry implements go-micro's registry.Registry.
type Registry struct {
	mu       sync.Mutex
	opts     registry.Options
	cfg      config
	nc       *nats.Conn
	services map[string][]*registry.Service // registered by this process, by name
	queries  map[string]*nats.Subscription  // one per registered name
	list     *nats.Subscription
	goMicro  *nats.Subscription
}

type config struct {
	prefix        string
	grace         time.Duration
	answerGoMicro bool
	askGoMicro    bool
	natsOptions   []nats.Option
	log           *slog.Logger
}

// Option configures a Registry beyond go-micro's registry options.
type Option func(*config)

// Prefix sets the subjects' prefix (default shippy.registry).
func Prefix(p string) Option { return func(c *config) { c.prefix = p } }

// Grace is how long a lookup waits for more answers after the first
// (default 50 ms): replicas that answer later are found by the next lookup.
func Grace(d time.Duration) Option { return func(c *config) { c.grace = d } }

// AnswerGoMicro makes the process also answer go-micro's stock NATS registry
// lookups (micro.nats.query) for the services it registers.
func AnswerGoMicro(on bool) Option { return func(c *config) { c.answerGoMicro = on } }

// AskGoMicro makes lookups also ask on go-micro's stock NATS registry
// subject, and merge what its programs answer. Anyone allowed to subscribe
// there can answer for any service: leave it off where NATS permissions are
// what keeps impostors out.
func AskGoMicro(on bool) Option { return func(c *config) { c.askGoMicro = on } }

// NatsOptions adds options to the NATS connection (credentials, TLS, name).
func NatsOptions(opts ...nats.Option) Option {
	return func(c *config) { c.natsOptions = append(c.natsOptions, opts...) }
}

// Logger is where the connection's events go (disconnects, reconnects,
// permission violations); default slog.Default().
func Logger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// New returns a registry; it connects on first use. registry.Addrs,
// registry.Timeout (the longest a lookup waits for a first answer, default
// 3 s), registry.Secure and registry.TLSConfig apply.
func New(ropts []registry.Option, opts ...Option) *Registry {
	r := &Registry{
		opts:     registry.Options{Timeout: DefaultTimeout},
		cfg:      config{prefix: DefaultPrefix, grace: DefaultGrace},
		services: map[string][]*registry.Service{},
		queries:  map[string]*nats.Subscription{},
	}
	for _, o := range ropts {
		o(&r.opts)
	}
	for _, o := range opts {
		o(&r.cfg)
	}
	return r
}

// Init applies go-micro registry options; it refuses new addresses once
// connected, since the registrations live on the connection.
func (r *Registry) Init(opts ...registry.Option) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	before := strings.Join(r.opts.Addrs, ",")
	for _, o := range opts {
		o(&r.opts)
	}
	if r.nc != nil && strings.Join(r.opts.Addrs, ",") != before {
		return errors.New("natsregistry: cannot change addresses once connected")
	}
	return nil
}

// Options returns go-micro's registry options.
func (r *Registry) Options() registry.Options {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opts
}

// String names the registry for go-micro's logs.
func (r *Registry) String() string { return "nats" }

// Close drops the connection and with it every registration.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nc != nil {
		r.nc.Close()
		r.nc = nil
	}
	r.services = map[string][]*registry.Service{}
	r.queries = map[string]*nats.Subscription{}
	r.list, r.goMicro = nil, nil
}

func (r *Registry) subject(kind, service string) string {
	return r.cfg.prefix + "." + kind + "." + service
}

func validName(name string) error {
	if name == "" || strings.ContainsAny(name, " \t\r\n*>") || strings.HasPrefix(name, ".") ||
		strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// conn returns the connection, connecting first; r.mu must be held.
func (r *Registry) conn() (*nats.Conn, error) {
	if r.nc != nil {
		return r.nc, nil
	}
	addrs := r.opts.Addrs
	if len(addrs) == 0 {
		addrs = []string{nats.DefaultURL}
	}
	log := r.cfg.log
	if log == nil {
		log = slog.Default()
	}
	opts := append([]nats.Option{nats.Name("go-micro registry"), nats.MaxReconnects(-1)},
		natslog.Options(log.With("registry", "nats"))...)
	if r.opts.TLSConfig != nil {
		opts = append(opts, nats.Secure(r.opts.TLSConfig))
	} else if r.opts.Secure {
		opts = append(opts, nats.Secure())
	}
	opts = append(opts, r.cfg.natsOptions...)
	nc, err := nats.Connect(strings.Join(addrs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("natsregistry: connect: %w", err)
	}
	r.nc = nc
	return nc, nil
}

// Register adds s's nodes to what this process answers for s.Name and
// announces them on the service's watch subject. go-micro's server calls it
// again every register interval; that is an update.
func (r *Registry) Register(s *registry.Service, _ ...registry.RegisterOption) error {
	if err := validName(s.Name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	nc, err := r.conn()
	if err != nil {
		return err
	}
	action := "update"
	if _, ok := r.queries[s.Name]; !ok {
		action = "create"
		name := s.Name
		sub, err := nc.Subscribe(r.subject("query", name), func(m *nats.Msg) { r.answer(m, name) })
		if err != nil {
			return fmt.Errorf("natsregistry: answer lookups of %s: %w", name, err)
		}
		r.queries[name] = sub
	}
	r.services[s.Name] = addNodes(r.services[s.Name], s)
	if err := r.listenShared(nc); err != nil {
		return err
	}
	if err := r.announce(nc, action, s); err != nil {
		return err
	}
	// Once Register returns, a lookup from any connection must find s: the
	// server has to have the subscriptions, not only this client.
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("natsregistry: register %s: %w", s.Name, err)
	}
	return nil
}

// listenShared subscribes, once, to the list subject and go-micro's query
// subject; r.mu must be held.
func (r *Registry) listenShared(nc *nats.Conn) error {
	if r.list == nil {
		sub, err := nc.Subscribe(r.cfg.prefix+".list", func(m *nats.Msg) { r.answer(m, "") })
		if err != nil {
			return fmt.Errorf("natsregistry: answer list requests: %w", err)
		}
		r.list = sub
	}
	if r.cfg.answerGoMicro && r.goMicro == nil {
		sub, err := nc.Subscribe(GoMicroQuerySubject, r.answerGoMicroQuery)
		if err != nil {
			return fmt.Errorf("natsregistry: answer go-micro lookups: %w", err)
		}
		r.goMicro = sub
	}
	return nil
}

// Deregister removes s's nodes; when none is left for s.Name the process
// stops answering for it.
func (r *Registry) Deregister(s *registry.Service, _ ...registry.DeregisterOption) error {
	if err := validName(s.Name); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	left := removeNodes(r.services[s.Name], s)
	if len(left) > 0 {
		r.services[s.Name] = left
	} else {
		delete(r.services, s.Name)
		if sub, ok := r.queries[s.Name]; ok {
			_ = sub.Unsubscribe()
			delete(r.queries, s.Name)
		}
	}
	if r.nc == nil {
		return nil
	}
	return r.announce(r.nc, "delete", s)
}

func (r *Registry) announce(nc *nats.Conn, action string, s *registry.Service) error {
	b, err := json.Marshal(&registry.Result{Action: action, Service: s})
	if err != nil {
		return fmt.Errorf("natsregistry: encode %s event: %w", action, err)
	}
	if err := nc.Publish(r.subject("watch", s.Name), b); err != nil {
		return fmt.Errorf("natsregistry: announce %s of %s: %w", action, s.Name, err)
	}
	return nil
}

// answer replies to a lookup of name, or to a list request when name is "",
// with one message per service version this process serves.
func (r *Registry) answer(m *nats.Msg, name string) {
	if m.Reply == "" {
		return
	}
	for _, s := range r.registered(name) {
		if b, err := json.Marshal(s); err == nil {
			_ = m.Respond(b)
		}
	}
}

// answerGoMicroQuery speaks go-micro's stock NATS registry protocol: a
// registry.Result with action get (one service) or list.
func (r *Registry) answerGoMicroQuery(m *nats.Msg) {
	var q registry.Result
	if m.Reply == "" || json.Unmarshal(m.Data, &q) != nil {
		return
	}
	switch {
	case q.Action == "get" && q.Service != nil:
		r.answer(m, q.Service.Name)
	case q.Action == "list":
		r.answer(m, "")
	}
}

// registered copies the services this process registered under name, or
// all of them when name is "".
func (r *Registry) registered(name string) []*registry.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*registry.Service
	for n, ss := range r.services {
		if name != "" && n != name {
			continue
		}
		for _, s := range ss {
			out = append(out, copyService(s))
		}
	}
	return out
}

// GetService asks every process serving name for its nodes.
func (r *Registry) GetService(name string, _ ...registry.GetOption) ([]*registry.Service, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	reqs := []*nats.Msg{{Subject: r.subject("query", name)}}
	if r.cfg.askGoMicro {
		q, err := json.Marshal(&registry.Result{Action: "get", Service: &registry.Service{Name: name}})
		if err != nil {
			return nil, fmt.Errorf("natsregistry: encode go-micro lookup: %w", err)
		}
		reqs = append(reqs, &nats.Msg{Subject: GoMicroQuerySubject, Data: q})
	}
	services, err := r.ask(reqs, true)
	if err != nil {
		return nil, err
	}
	var found []*registry.Service
	for _, s := range services {
		if s.Name == name { // go-micro's protocol answers with anything
			found = append(found, s)
		}
	}
	if len(found) == 0 {
		return nil, registry.ErrNotFound
	}
	return found, nil
}

// ListServices asks every process for the services it serves.
func (r *Registry) ListServices(_ ...registry.ListOption) ([]*registry.Service, error) {
	return r.ask([]*nats.Msg{{Subject: r.cfg.prefix + ".list"}}, false)
}

// ask publishes the requests with one reply subject and merges the services
// in the replies by name and version, without repeating a node. With
// first, it returns Grace after the first reply; otherwise Grace after the
// last one. It returns at once when nobody listens on any of the subjects,
// and after Timeout at the latest.
func (r *Registry) ask(reqs []*nats.Msg, first bool) ([]*registry.Service, error) {
	r.mu.Lock()
	nc, err := r.conn()
	timeout, grace := r.opts.Timeout, r.cfg.grace
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// A reply subject per request: NATS lets a responder reply once to each
	// message it received (allow_responses), not once per reply subject.
	inbox := nc.NewInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		return nil, fmt.Errorf("natsregistry: subscribe for replies: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for i, m := range reqs {
		m.Reply = inbox + "." + strconv.Itoa(i)
		if err := nc.PublishMsg(m); err != nil {
			return nil, fmt.Errorf("natsregistry: ask %s: %w", m.Subject, err)
		}
	}

	merged := map[string]*registry.Service{}
	var order []string
	seen := map[string]bool{} // node ids, per name and version
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var settle <-chan time.Time
	noResponders := 0
	for {
		select {
		case m := <-replies:
			if m.Header.Get("Status") == "503" { // nobody listens on one subject
				if noResponders++; noResponders == len(reqs) && len(order) == 0 {
					return nil, nil
				}
				continue
			}
			var s registry.Service
			if json.Unmarshal(m.Data, &s) != nil || s.Name == "" {
				continue
			}
			key := s.Name + "\x00" + s.Version
			have, ok := merged[key]
			if !ok {
				c := s
				c.Nodes = nil
				have = &c
				merged[key] = have
				order = append(order, key)
			}
			for _, n := range s.Nodes {
				if n != nil && !seen[key+"\x00"+n.Id] {
					seen[key+"\x00"+n.Id] = true
					have.Nodes = append(have.Nodes, n)
				}
			}
			if settle == nil || !first {
				settle = time.After(grace)
			}
		case <-settle:
			return collect(merged, order), nil
		case <-deadline.C:
			return collect(merged, order), nil
		}
	}
}

func collect(m map[string]*registry.Service, order []string) []*registry.Service {
	out := make([]*registry.Service, 0, len(order))
	for _, k := range order {
		out = append(out, m[k])
	}
	return out
}

// Watch follows register and deregister events: of one service with
// registry.WatchService, else of all.
func (r *Registry) Watch(opts ...registry.WatchOption) (registry.Watcher, error) {
	var wo registry.WatchOptions
	for _, o := range opts {
		o(&wo)
	}
	subject := r.subject("watch", ">")
	if wo.Service != "" {
		if err := validName(wo.Service); err != nil {
			return nil, err
		}
		subject = r.subject("watch", wo.Service)
	}
	r.mu.Lock()
	nc, err := r.conn()
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		return nil, fmt.Errorf("natsregistry: watch %s: %w", subject, err)
	}
	// Once Watch returns, no event may pass unseen: the server must have
	// the subscription.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("natsregistry: watch %s: %w", subject, err)
	}
	return &watcher{sub: sub}, nil
}

type watcher struct{ sub *nats.Subscription }

// Next blocks until the next event; after Stop it returns
// registry.ErrWatcherStopped.
func (w *watcher) Next() (*registry.Result, error) {
	for {
		m, err := w.sub.NextMsg(time.Minute)
		if errors.Is(err, nats.ErrTimeout) {
			continue
		}
		if err != nil {
			return nil, registry.ErrWatcherStopped
		}
		var res registry.Result
		if json.Unmarshal(m.Data, &res) != nil || res.Service == nil {
			continue
		}
		return &res, nil
	}
}

func (w *watcher) Stop() { _ = w.sub.Unsubscribe() }

// addNodes returns services with s's nodes added to (or replacing, by node
// id) those of the same version.
func addNodes(services []*registry.Service, s *registry.Service) []*registry.Service {
	s = copyService(s)
	for i, have := range services {
		if have.Version != s.Version {
			continue
		}
		merged := copyService(s)
		merged.Nodes = nil
		seen := map[string]bool{}
		for _, n := range s.Nodes {
			seen[n.Id] = true
			merged.Nodes = append(merged.Nodes, n)
		}
		for _, n := range have.Nodes {
			if !seen[n.Id] {
				merged.Nodes = append(merged.Nodes, n)
			}
		}
		services[i] = merged
		return services
	}
	return append(services, s)
}

// removeNodes returns services without s's nodes; a version left without
// nodes is dropped.
func removeNodes(services []*registry.Service, s *registry.Service) []*registry.Service {
	drop := map[string]bool{}
	for _, n := range s.Nodes {
		drop[n.Id] = true
	}
	var out []*registry.Service
	for _, have := range services {
		if have.Version == s.Version {
			kept := copyService(have)
			kept.Nodes = nil
			for _, n := range have.Nodes {
				if !drop[n.Id] {
					kept.Nodes = append(kept.Nodes, n)
				}
			}
			if len(kept.Nodes) == 0 {
				continue
			}
			have = kept
		}
		out = append(out, have)
	}
	return out
}

// copyService copies s deeply enough that callers cannot change what the
// registry answers (nodes and their metadata).
func copyService(s *registry.Service) *registry.Service {
	c := *s
	c.Nodes = make([]*registry.Node, len(s.Nodes))
	for i, n := range s.Nodes {
		nc := *n
		if n.Metadata != nil {
			nc.Metadata = make(map[string]string, len(n.Metadata))
			for k, v := range n.Metadata {
				nc.Metadata[k] = v
			}
		}
		c.Nodes[i] = &nc
	}
	return &c
}
