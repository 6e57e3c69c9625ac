package jsbroker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/requestid"
)

// pullExpiry is how long one pull request waits at the server. nats.go
// sends heartbeats at half of it and pulls anew after two go missing, so
// when the server leading the consumer dies, pulling resumes on the new
// leader after about this long (30 s with nats.go's default) instead of
// welcome emails waiting; the cost is one pull request per 5 s when idle.
const pullExpiry = 5 * time.Second

// ephemeralInactive is how long the server keeps the consumer of a
// subscription without a queue after its subscriber went away.
const ephemeralInactive = 5 * time.Minute

type subscriber struct {
	b        *Broker
	topic    string
	opts     broker.SubscribeOptions
	handler  broker.Handler
	cfg      config
	js       jetstream.JetStream
	consumer string
	durable  bool
	log      *slog.Logger

	config jetstream.ConsumerConfig
	// slots bounds the handlers running at once (Concurrency); running
	// counts them, so that Unsubscribe can wait for all of them.
	slots      chan struct{}
	running    sync.WaitGroup
	once       sync.Once
	done       chan struct{} // closed by Unsubscribe
	recovering atomic.Bool
	mu         sync.Mutex
	cc         jetstream.ConsumeContext
}

// ConsumerName is the durable consumer shared by every subscriber of topic
// in queue group queue: characters NATS forbids in names become '_', and a
// hash of the original keeps distinct pairs distinct.
func ConsumerName(queue, topic string) string {
	raw := queue + "_" + topic
	clean := sanitize(raw)
	if clean == raw {
		return clean
	}
	h := fnv.New32a()
	h.Write([]byte(queue + "\x00" + topic))
	return fmt.Sprintf("%s_%08x", clean, h.Sum32())
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		default:
			return '_'
		}
	}, s)
}

// Subscribe consumes topic. With broker.Queue(q) all subscribers of q, in any
// process, share one durable consumer that starts at the first stored
// message; without a queue each subscriber gets its own consumer from now on.
// A message is acked after handler returned nil (unless DisableAutoAck: then
// the handler acks with Event.Ack), redelivered with Backoff after an error,
// and dead-lettered after MaxDeliver deliveries, or at once after an error
// marked Permanent.
func (b *Broker) Subscribe(topic string, handler broker.Handler, opts ...broker.SubscribeOption) (broker.Subscriber, error) {
	so := broker.NewSubscribeOptions(opts...)
	nc, js, cfg := b.conn()
	if nc == nil || js == nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, ErrNotConnected)
	}
	cfg = retryFrom(so.Context, cfg)
	s := &subscriber{b: b, topic: topic, opts: so, handler: handler, cfg: cfg, js: js}
	cc := jetstream.ConsumerConfig{
		FilterSubject: cfg.subjectPrefix + "." + topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.ackWait,
		// The subscriber enforces cfg.maxDeliver itself so that it can
		// dead-letter the message; the server must not drop it silently first.
		MaxDeliver: -1,
	}
	if so.Queue != "" {
		s.consumer, s.durable = ConsumerName(so.Queue, topic), true
		cc.Durable = s.consumer
		cc.Description = fmt.Sprintf("go-micro queue %q on topic %q", so.Queue, topic)
		cc.DeliverPolicy = jetstream.DeliverAllPolicy
	} else {
		s.consumer = sanitize(topic) + "_" + nuid.Next()
		cc.Name = s.consumer
		cc.Description = fmt.Sprintf("go-micro subscriber on topic %q", topic)
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
		cc.InactiveThreshold = ephemeralInactive
	}
	s.slots = make(chan struct{}, concurrencyFrom(so.Context, cfg.concurrency))
	s.log = cfg.log.With("broker", "jetstream", "topic", topic, "consumer", s.consumer)
	s.config = cc
	s.done = make(chan struct{})

	if err := RetryStart(context.Background(), s.log, "create consumer", cfg.startTimeout, cfg.publishTimeout, s.consume); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", topic, err)
	}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s, nil
}

// consume creates (or updates) the consumer and starts pulling from it.
func (s *subscriber) consume(ctx context.Context) error {
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.cfg.stream, s.config)
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", s.consumer, err)
	}
	// The pull keeps every handler slot fed, and a batch more in flight.
	cc, err := cons.Consume(s.dispatch,
		jetstream.PullMaxMessages(max(s.cfg.pullBatch, 2*cap(s.slots))),
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(s.consumeError))
	if err != nil {
		return fmt.Errorf("consume %s: %w", s.consumer, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done: // unsubscribed while recreating
		cc.Stop()
	default:
		s.cc = cc
	}
	return nil
}

// consumeError logs pull errors; when the consumer itself is gone (deleted
// by an operator, or lost by the server) pulling has stopped for good, so
// the consumer is created again.
func (s *subscriber) consumeError(_ jetstream.ConsumeContext, err error) {
	if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.log.Warn("jetstream consume", "err", err)
		return
	}
	if !s.recovering.CompareAndSwap(false, true) {
		return
	}
	s.log.Error("consumer gone; recreating it", "err", err)
	go s.recreate()
}

func (s *subscriber) recreate() {
	defer s.recovering.Store(false)
	s.mu.Lock()
	old := s.cc
	s.mu.Unlock()
	// The error callback can fire before consume has stored the context.
	if old != nil {
		old.Stop()
	}
	wait := s.cfg.reconnectWait
	for {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.publishTimeout)
		err := s.consume(ctx)
		cancel()
		if err == nil {
			s.log.Info("consumer recreated")
			return
		}
		s.log.Warn("recreate consumer", "err", err, "retry_in", wait)
		select {
		case <-s.done:
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

func (s *subscriber) Options() broker.SubscribeOptions { return s.opts }
func (s *subscriber) Topic() string                    { return s.topic }

// Unsubscribe stops pulling and naks the messages pulled but not yet
// handled, so that another subscriber gets them at once instead of this one
// handling up to PullBatch of them during a stop (and being killed midway by
// a stop grace shorter than that). It waits, at most AckWait, for the one
// handlers already running, and keeps a queue group's durable consumer (and
// its position) on the server.
func (s *subscriber) Unsubscribe() error {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		cc := s.cc
		s.mu.Unlock()
		limit := time.NewTimer(s.cfg.ackWait)
		defer limit.Stop()
		closed := true
		if cc != nil {
			cc.Drain()
			select {
			case <-cc.Closed():
			case <-limit.C:
				cc.Stop()
				closed = false
			}
		}
		if closed {
			// The consume loop has ended, so no handler starts any more:
			// wait for those still running in their slots.
			handlersDone := make(chan struct{})
			go func() { s.running.Wait(); close(handlersDone) }()
			select {
			case <-handlersDone:
			case <-limit.C:
				closed = false
			}
		}
		if !closed {
			s.log.Warn("handlers still running after ack wait; their messages will be redelivered")
		}
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
		if !s.durable {
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.publishTimeout)
			defer cancel()
			if derr := s.js.DeleteConsumer(ctx, s.cfg.stream, s.consumer); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
				// The server removes it after ephemeralInactive anyway.
				s.log.Warn("delete consumer", "err", derr)
			}
		}
	})
	return nil
}

// event is what the handler gets: the message as published plus Ack.
type event struct {
	topic string
	msg   *broker.Message
	jsMsg jetstream.Msg
	err   error

	mu    sync.Mutex
	acked bool
}

func (e *event) Topic() string            { return e.topic }
func (e *event) Message() *broker.Message { return e.msg }
func (e *event) Error() error             { return e.err }

// Ack acks the message now and waits for the server to confirm.
func (e *event) Ack() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.acked {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.jsMsg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	e.acked = true
	return nil
}

// ackAsync acks without waiting for the server's confirmation: a lost ack
// only means a redelivery after AckWait, which subscribers drop by event id,
// and not waiting takes a round trip per message off the consume loop
// (bench: BenchmarkEvents/jetstream). Event.Ack keeps the confirmed ack for
// handlers that ack themselves.
func (e *event) ackAsync() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.acked {
		return nil
	}
	if err := e.jsMsg.Ack(); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	e.acked = true
	return nil
}

func (e *event) isAcked() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.acked
}

// dispatch is the consume callback: it runs the handler on m in a slot of
// its own, waiting while all Concurrency slots are busy (which stops the
// pulling too). With one slot it handles m itself, in order.
func (s *subscriber) dispatch(m jetstream.Msg) {
	if cap(s.slots) == 1 {
		s.running.Add(1)
		defer s.running.Done()
		s.handle(m)
		return
	}
	select {
	case s.slots <- struct{}{}:
	case <-s.done:
		s.nakOnStop(m)
		return
	}
	s.running.Add(1)
	go func() {
		defer func() { <-s.slots; s.running.Done() }()
		s.handle(m)
	}()
}

// nakOnStop hands a buffered message back while stopping (the delivery
// counts toward MaxDeliver, as any delivery does).
func (s *subscriber) nakOnStop(m jetstream.Msg) {
	if err := m.Nak(); err != nil {
		s.log.Warn("nak on stop failed; message will be redelivered after ack wait", "err", err)
	}
}

func (s *subscriber) handle(m jetstream.Msg) {
	select {
	case <-s.done:
		s.nakOnStop(m)
		return
	default:
	}
	md, err := m.Metadata()
	if err != nil {
		s.log.Error("message without jetstream metadata", "err", err)
		_ = m.Term()
		return
	}
	header := make(map[string]string, len(m.Headers()))
	for k, v := range m.Headers() {
		if len(v) > 0 {
			header[k] = v[0]
		}
	}
	log := s.log.With("stream_seq", md.Sequence.Stream, "delivery", md.NumDelivered, "event_id", header[HeaderEventID])
	if id, ok := requestid.FromHeader(header); ok {
		// Retries and dead letters can be followed by the request id too.
		log = log.With(requestid.LogKey, id)
	}
	log.Debug("message received", "subject", m.Subject())
	ev := &event{
		topic: strings.TrimPrefix(m.Subject(), s.cfg.subjectPrefix+"."),
		msg:   &broker.Message{Header: header, Body: m.Data()},
		jsMsg: m,
	}

	// More deliveries than allowed without a handler result: the handler hung
	// past AckWait or crashed the process each time. Stop the loop here.
	if int(md.NumDelivered) > s.cfg.maxDeliver {
		s.deadLetter(log, ev, md, fmt.Sprintf("delivered %d times without a handler result", md.NumDelivered))
		return
	}

	s.b.stats.delivered.Add(1)
	stop := keepInProgress(m, s.cfg.ackWait)
	herr := s.handler(ev)
	stop()

	switch {
	case herr == nil:
		if s.opts.AutoAck {
			if err := ev.ackAsync(); err != nil {
				// The server redelivers after AckWait: at least once, not lost.
				log.Warn("ack failed; message will be redelivered", "err", err)
				return
			}
		}
		if ev.isAcked() {
			s.b.stats.acked.Add(1)
		}
	case ev.isAcked():
		log.Warn("handler failed after acking; not redelivered", "err", herr)
	case IsPermanent(herr):
		// No redelivery can fix it: dead-letter it now (see Permanent).
		ev.err = herr
		s.deadLetter(log, ev, md, readableReason(herr))
	case int(md.NumDelivered) >= s.cfg.maxDeliver:
		ev.err = herr
		s.deadLetter(log, ev, md, readableReason(herr))
	default:
		ev.err = herr
		delay := s.cfg.backoffFor(md.NumDelivered)
		log.Warn("handler failed; redelivering", "err", herr, "delay", delay)
		if err := m.NakWithDelay(delay); err != nil {
			log.Warn("nak failed; message will be redelivered after ack wait", "err", err)
		}
		s.b.stats.retried.Add(1)
	}
}

// keepInProgress tells the server the handler is still working, so a slow
// handler does not get its message redelivered to another replica.
// A timer rather than a goroutine per message: most handlers finish long
// before the first tick, and then nothing was started.
func keepInProgress(m jetstream.Msg, ackWait time.Duration) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	var tick func()
	tick = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		_ = m.InProgress()
		t.Reset(ackWait / 2)
	}
	mu.Lock()
	t = time.AfterFunc(ackWait/2, tick)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// deadLetter stores the message with the reason on the dead-letter subject
// and terminates it; if that publish fails the message stays for a retry.
func (s *subscriber) deadLetter(log *slog.Logger, ev *event, md *jetstream.MsgMetadata, reason string) {
	dl := nats.NewMsg(s.cfg.deadLetterPrefix + "." + ev.topic)
	dl.Data = ev.msg.Body
	for k, v := range ev.msg.Header {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		dl.Header.Set(k, v)
	}
	dl.Header.Set(HeaderDeadLetterReason, headerValue(reason))
	dl.Header.Set(HeaderDeadLetterTopic, ev.topic)
	dl.Header.Set(HeaderDeadLetterConsumer, s.consumer)
	dl.Header.Set(HeaderDeadLetterDeliveries, strconv.FormatUint(md.NumDelivered, 10))
	dl.Header.Set(HeaderDeadLetterStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.publishTimeout)
	defer cancel()
	// One dead letter per consumer and message, even if this is retried.
	id := fmt.Sprintf("%s:%s:%d", s.cfg.stream, s.consumer, md.Sequence.Stream)
	if _, err := s.js.PublishMsg(ctx, dl, jetstream.WithMsgID(id)); err != nil {
		s.b.stats.deadLetterErrs.Add(1)
		log.Error("dead-letter publish failed; message kept for retry", "err", err, "reason", reason)
		_ = ev.jsMsg.NakWithDelay(s.cfg.backoffFor(md.NumDelivered))
		return
	}
	if err := ev.jsMsg.Term(); err != nil {
		log.Warn("terminate dead-lettered message", "err", err)
	}
	s.b.stats.deadLettered.Add(1)
	log.Error("message dead-lettered", "reason", reason, "subject", dl.Subject)
}

// headerValue keeps an error text valid as a NATS header value (one line,
// bounded length).
func headerValue(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	const max = 1024
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "")
	}
	return s
}
