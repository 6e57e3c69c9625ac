// Package jsbroker is a go-micro broker backed by NATS JetStream that loses
// no event: a publish returns only after the stream stored the message, a
// message is acked only after the subscriber's handler returned nil, failed
// messages are redelivered with a growing delay, and a message that keeps
// failing is moved to a dead-letter subject instead of being retried forever.
// A handler whose failure no retry can fix returns Permanent(err): its
// message is dead-lettered at once, with err's text as the reason.
//
// shippy's programs select it with MICRO_BROKER=jetstream (and
// MICRO_BROKER_ADDRESS) through internal/microenv. A go-micro service built
// with micro.NewService can pass NewBroker(...) to micro.Broker, or make
// MICRO_BROKER=jetstream select it with cmd.DefaultBrokers["jetstream"] =
// NewBroker (this package does not import go-micro's cmd, which links every
// plugin go-micro ships).
//
// Subjects: topic T is stored under "<SubjectPrefix>.T" (default
// shippy.events.T) in stream SHIPPY_EVENTS; its dead letters under
// "<DeadLetterPrefix>.T" (default shippy.deadletter.T) in stream
// SHIPPY_EVENTS_DLQ.
package jsbroker

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/codec/json"
	"go-micro.dev/v6/metadata"

	"github.com/shippy/shippy/internal/natslog"
)

// Headers the broker reads or writes.
const (
	// HeaderEventID carries the event's id; the broker uses it as the JetStream
	// message id, so a publish retried within the duplicate window is stored
	// once. A Nats-Msg-Id header, if present, wins.
	HeaderEventID = "Event-Id"
	// HeaderDeadLetterReason is the handler's last error text on a dead letter.
	HeaderDeadLetterReason = "Dead-Letter-Reason"
	// HeaderDeadLetterTopic is the topic the dead letter was published on.
	HeaderDeadLetterTopic = "Dead-Letter-Topic"
	// HeaderDeadLetterConsumer names the consumer that gave up on the message.
	HeaderDeadLetterConsumer = "Dead-Letter-Consumer"
	// HeaderDeadLetterDeliveries is how often the message was delivered.
	HeaderDeadLetterDeliveries = "Dead-Letter-Deliveries"
	// HeaderDeadLetterStreamSeq is the message's sequence in the event stream.
	HeaderDeadLetterStreamSeq = "Dead-Letter-Stream-Seq"
)

// ErrNotConnected is returned by Publish and Subscribe while the broker has
// no connection to the server (before Connect, or while reconnecting).
var ErrNotConnected = errors.New("jetstream broker not connected")

// WithEventID returns ctx with the event id in go-micro metadata, so that
// micro.Event.Publish(ctx, msg) sends it as the HeaderEventID header.
func WithEventID(ctx context.Context, id string) context.Context {
	return metadata.Set(ctx, HeaderEventID, id)
}

// Stats counts what the broker did since it was created.
type Stats struct {
	Published      uint64 // publishes stored by the stream (duplicates included)
	Duplicates     uint64 // publishes the stream dropped as duplicates of an event id
	PublishErrors  uint64 // publishes that returned an error
	Delivered      uint64 // messages given to a handler
	Acked          uint64 // messages acked after their handler succeeded
	Retried        uint64 // messages nak'ed for redelivery after a handler error
	DeadLettered   uint64 // messages moved to the dead-letter subject
	DeadLetterErrs uint64 // failed attempts to publish a dead letter (message kept for retry)
}

type counters struct {
	published, duplicates, publishErrors, delivered, acked, retried, deadLettered, deadLetterErrs atomic.Uint64
}

// Broker implements go-micro's broker.Broker on JetStream.
type Broker struct {
	// disconnecting serialises Disconnect: go-micro calls it in a goroutine
	// of its own after Server.Stop returned, and a program that must not
	// exit (or close what handlers use) before the handlers finished calls
	// it too, to wait for the same disconnect.
	disconnecting sync.Mutex
	// connecting serialises Connect, which may wait for JetStream.
	connecting sync.Mutex

	mu    sync.RWMutex
	opts  broker.Options
	cfg   config
	nc    *nats.Conn
	js    jetstream.JetStream
	subs  map[*subscriber]struct{}
	stats counters
}

// NewBroker returns the broker as go-micro's interface, for cmd.DefaultBrokers
// and micro.Broker.
func NewBroker(opts ...broker.Option) broker.Broker { return New(opts...) }

// New returns a broker configured by go-micro's broker.Options (Addrs,
// Secure, TLSConfig) and this package's options.
func New(opts ...broker.Option) *Broker {
	b := &Broker{
		opts: broker.Options{Codec: json.Marshaler{}, Context: context.Background()},
		subs: make(map[*subscriber]struct{}),
	}
	b.apply(opts...)
	return b
}

func (b *Broker) apply(opts ...broker.Option) {
	for _, o := range opts {
		o(&b.opts)
	}
	b.cfg = configFrom(b.opts.Context)
}

// Init applies options; connection options take effect on the next Connect.
func (b *Broker) Init(opts ...broker.Option) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.apply(opts...)
	return nil
}

// Options returns the go-micro options.
func (b *Broker) Options() broker.Options {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.opts
}

// String is the name MICRO_BROKER selects.
func (b *Broker) String() string { return "jetstream" }

// Address is the connected server's URL, or the first configured one.
func (b *Broker) Address() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	// go-micro logs the address: never with a password in it.
	if b.nc != nil && b.nc.IsConnected() {
		return b.nc.ConnectedUrlRedacted()
	}
	a := b.addrs()[0]
	if u, err := url.Parse(a); err == nil && u.User != nil {
		return u.Redacted()
	}
	return a
}

func (b *Broker) addrs() []string {
	var out []string
	for _, a := range b.opts.Addrs {
		for _, a := range strings.Split(a, ",") {
			a = strings.TrimSpace(a)
			if a == "" {
				continue
			}
			if !strings.Contains(a, "://") {
				a = "nats://" + a
			}
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		out = []string{nats.DefaultURL}
	}
	return out
}

// Stats returns a snapshot of the counters.
func (b *Broker) Stats() Stats {
	c := &b.stats
	return Stats{
		Published:      c.published.Load(),
		Duplicates:     c.duplicates.Load(),
		PublishErrors:  c.publishErrors.Load(),
		Delivered:      c.delivered.Load(),
		Acked:          c.acked.Load(),
		Retried:        c.retried.Load(),
		DeadLettered:   c.deadLettered.Load(),
		DeadLetterErrs: c.deadLetterErrs.Load(),
	}
}

// Subject is the NATS subject topic is stored under.
func (b *Broker) Subject(topic string) string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.cfg.subjectPrefix + "." + topic
}

// DeadLetterSubject is the subject dead letters of topic are published on.
func (b *Broker) DeadLetterSubject(topic string) string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.cfg.deadLetterPrefix + "." + topic
}

// Connect connects to the server and creates or updates the event stream and
// the dead-letter stream, retrying for up to StartTimeout while JetStream
// does not answer yet. The connection then reconnects forever.
func (b *Broker) Connect() error {
	// connecting, not mu, is held while JetStream is awaited, so that Ready,
	// Publish and Disconnect answer (not connected) meanwhile.
	b.connecting.Lock()
	defer b.connecting.Unlock()
	b.mu.RLock()
	connected := b.nc != nil && !b.nc.IsClosed()
	cfg, tlsConfig, secure, url := b.cfg, b.opts.TLSConfig, b.opts.Secure, strings.Join(b.addrs(), ",")
	b.mu.RUnlock()
	if connected {
		return nil
	}
	log := cfg.log.With("broker", "jetstream")
	nopts := append([]nats.Option{
		nats.Name("shippy-jsbroker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.reconnectWait),
	}, natslog.Options(log)...)
	if tlsConfig != nil {
		nopts = append(nopts, nats.Secure(tlsConfig))
	} else if secure {
		nopts = append(nopts, nats.Secure())
	}
	nopts = append(nopts, cfg.natsOptions...)
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return fmt.Errorf("connect to nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("jetstream context: %w", err)
	}
	err = RetryStart(context.Background(), log, "create streams", cfg.startTimeout, cfg.publishTimeout,
		func(ctx context.Context) error { return ensureStreams(ctx, js, cfg) })
	if err != nil {
		nc.Close()
		return err
	}
	b.mu.Lock()
	b.nc, b.js = nc, js
	b.mu.Unlock()
	return nil
}

func ensureStreams(ctx context.Context, js jetstream.JetStream, cfg config) error {
	events := jetstream.StreamConfig{
		Name:        cfg.stream,
		Description: "go-micro events published through jsbroker",
		Subjects:    []string{cfg.subjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.maxAge,
		MaxBytes:    maxBytes(cfg.maxBytes),
		Replicas:    cfg.replicas,
		Duplicates:  cfg.duplicateWindow,
	}
	dlq := jetstream.StreamConfig{
		Name:        cfg.stream + "_DLQ",
		Description: "messages jsbroker gave up on after the maximum deliveries",
		Subjects:    []string{cfg.deadLetterPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.deadLetterLimits.MaxAge,
		MaxBytes:    maxBytes(cfg.deadLetterLimits.MaxBytes),
		Replicas:    cfg.replicas,
		Duplicates:  cfg.duplicateWindow,
	}
	for _, sc := range []jetstream.StreamConfig{events, dlq} {
		if err := ensureStream(ctx, js, cfg, sc); err != nil {
			return err
		}
	}
	return nil
}

// maxBytes is JetStream's form of a byte limit: -1 for none.
func maxBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// ensureStream creates the stream, or updates it to want if the broker
// updates streams; otherwise it leaves an existing stream as it is and
// says so when its limits differ from want.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg config, want jetstream.StreamConfig) error {
	log := cfg.log.With("broker", "jetstream", "stream", want.Name)
	if cfg.updateStreams {
		if _, err := js.CreateOrUpdateStream(ctx, want); err != nil {
			return fmt.Errorf("create or update stream %s (replicas %d): %w", want.Name, want.Replicas, err)
		}
		log.Info("stream created or updated", "max_age", want.MaxAge.String(), "max_bytes", want.MaxBytes, "replicas", want.Replicas)
		return nil
	}
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err == nil {
			log.Info("stream created", "max_age", want.MaxAge.String(), "max_bytes", want.MaxBytes, "replicas", want.Replicas)
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s (replicas %d): %w", want.Name, want.Replicas, err)
		}
		// Another program created it meanwhile.
		s, err = js.Stream(ctx, want.Name)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	if have.MaxAge != want.MaxAge || have.MaxBytes != want.MaxBytes || have.Replicas != want.Replicas || have.Discard != want.Discard {
		log.Warn("stream exists with other limits than this program's; left as they are (another program owns them)",
			"max_age", have.MaxAge.String(), "want_max_age", want.MaxAge.String(),
			"max_bytes", have.MaxBytes, "want_max_bytes", want.MaxBytes,
			"replicas", have.Replicas, "want_replicas", want.Replicas)
	}
	return nil
}

// Ready reports whether the broker can publish and consume now: connected,
// and JetStream answering (a cluster that lost its quorum does not).
func (b *Broker) Ready(ctx context.Context) error {
	nc, js, _ := b.conn()
	if nc == nil || js == nil {
		return ErrNotConnected
	}
	if !nc.IsConnected() {
		return fmt.Errorf("%w (%s)", ErrNotConnected, nc.Status())
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream account info: %w", err)
	}
	return nil
}

// Disconnect stops every subscription, letting running handlers finish and
// their acks go out, then drains and closes the connection. A call made
// while another is under way returns when that one is done, so any caller
// may wait for the disconnect go-micro starts in the background.
func (b *Broker) Disconnect() error {
	b.disconnecting.Lock()
	defer b.disconnecting.Unlock()
	// A Connect still waiting for JetStream finishes first, so that its
	// connection is closed here rather than left open after.
	b.connecting.Lock()
	defer b.connecting.Unlock()
	b.mu.Lock()
	subs := make([]*subscriber, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	nc := b.nc
	b.mu.Unlock()

	var errs []error
	for _, s := range subs {
		if err := s.Unsubscribe(); err != nil {
			errs = append(errs, err)
		}
	}
	if nc == nil {
		return errors.Join(errs...)
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
	} else {
		<-closed
	}
	b.mu.Lock()
	if b.nc == nc {
		b.nc, b.js = nil, nil
	}
	b.mu.Unlock()
	return errors.Join(errs...)
}

func (b *Broker) conn() (*nats.Conn, jetstream.JetStream, config) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.nc, b.js, b.cfg
}

// Publish stores m in the stream under topic's subject and waits for the
// stream's ack. The body is the NATS payload and the headers are NATS
// headers. It fails fast while the server is unreachable, so that a caller
// (an outbox relay) can retry; HeaderEventID makes the retry safe.
func (b *Broker) Publish(topic string, m *broker.Message, opts ...broker.PublishOption) error {
	po := broker.PublishOptions{}
	for _, o := range opts {
		o(&po)
	}
	ctx := po.Context
	if ctx == nil {
		ctx = context.Background()
	}
	err := b.publish(ctx, topic, m)
	if err != nil {
		b.stats.publishErrors.Add(1)
	}
	return err
}

func (b *Broker) publish(ctx context.Context, topic string, m *broker.Message) error {
	nc, js, cfg := b.conn()
	if err := connected(nc, js); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	msg, popts := natsMsg(cfg, topic, m)
	ctx, cancel := context.WithTimeout(ctx, cfg.publishTimeout)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg, popts...)
	if err != nil {
		return fmt.Errorf("publish %s to jetstream: %w", topic, err)
	}
	b.countAck(ack)
	return nil
}

func connected(nc *nats.Conn, js jetstream.JetStream) error {
	if nc == nil || js == nil {
		return ErrNotConnected
	}
	if !nc.IsConnected() {
		return fmt.Errorf("%w (%s)", ErrNotConnected, nc.Status())
	}
	return nil
}

func (b *Broker) countAck(ack *jetstream.PubAck) {
	b.stats.published.Add(1)
	if ack.Duplicate {
		b.stats.duplicates.Add(1)
	}
}

// natsMsg is m as the NATS message stored under topic's subject, with the
// event id as JetStream's message id.
func natsMsg(cfg config, topic string, m *broker.Message) (*nats.Msg, []jetstream.PublishOpt) {
	msg := nats.NewMsg(cfg.subjectPrefix + "." + topic)
	msg.Data = m.Body
	for k, v := range m.Header {
		msg.Header.Set(k, v)
	}
	var popts []jetstream.PublishOpt
	if id := msg.Header.Get(jetstream.MsgIDHeader); id != "" {
		popts = append(popts, jetstream.WithMsgID(id))
	} else if id := msg.Header.Get(HeaderEventID); id != "" {
		popts = append(popts, jetstream.WithMsgID(id))
	}
	return msg, popts
}

// Outgoing is one message of PublishBatch.
type Outgoing struct {
	Topic   string
	Message *broker.Message
}

// PublishBatch stores msgs as Publish does, but sends them all before
// waiting for the stream's acks (JetStream asynchronous publish): the batch
// costs about one round trip instead of one per message. errs[i] is nil once
// msgs[i] is stored, or why it may not be. The stream may store them in any
// order if one is retried. The wait is bounded by ctx and PublishTimeout.
func (b *Broker) PublishBatch(ctx context.Context, msgs []Outgoing) (errs []error) {
	errs = make([]error, len(msgs))
	defer func() {
		for _, err := range errs {
			if err != nil {
				b.stats.publishErrors.Add(1)
			}
		}
	}()
	nc, js, cfg := b.conn()
	if err := connected(nc, js); err != nil {
		for i, m := range msgs {
			errs[i] = fmt.Errorf("publish %s: %w", m.Topic, err)
		}
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.publishTimeout)
	defer cancel()
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		msg, popts := natsMsg(cfg, m.Topic, m.Message)
		f, err := js.PublishMsgAsync(msg, popts...)
		if err != nil {
			errs[i] = fmt.Errorf("publish %s to jetstream: %w", m.Topic, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			b.countAck(ack)
		case err := <-f.Err():
			errs[i] = fmt.Errorf("publish %s to jetstream: %w", msgs[i].Topic, err)
		case <-ctx.Done():
			errs[i] = fmt.Errorf("publish %s to jetstream: %w", msgs[i].Topic, ctx.Err())
		}
	}
	return errs
}
