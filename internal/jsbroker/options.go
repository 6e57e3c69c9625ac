package jsbroker

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/broker"
)

// Defaults; each has a broker.Option below.
const (
	DefaultStream           = "SHIPPY_EVENTS"
	DefaultSubjectPrefix    = "shippy.events"
	DefaultDeadLetterPrefix = "shippy.deadletter"
	DefaultMaxDeliver       = 5
	DefaultAckWait          = 30 * time.Second
	DefaultMaxAge           = 7 * 24 * time.Hour
	DefaultMaxBytes         = 1 << 30 // 1 GiB
	DefaultDeadLetterMaxAge = 30 * 24 * time.Hour
	// DefaultDeadLetterMaxBytes is 256 MiB.
	DefaultDeadLetterMaxBytes = 256 << 20
	DefaultReplicas           = 1
	// MaxReplicas is JetStream's limit on a stream's replicas.
	MaxReplicas            = 5
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultPublishTimeout  = 5 * time.Second
	DefaultPullBatch       = 16
	// DefaultConcurrency is how many handlers a subscriber runs at once:
	// one, so that a handler need not be safe for concurrent use unless the
	// program asks for more (Concurrency, WithConcurrency).
	DefaultConcurrency   = 1
	MaxConcurrency       = 1024
	DefaultReconnectWait = time.Second
	// DefaultStartTimeout is how long Connect waits for a JetStream that
	// does not answer yet: a new cluster electing its leaders takes seconds.
	DefaultStartTimeout = 30 * time.Second
)

// DefaultBackoff is the delay before the 1st, 2nd, ... redelivery of a message
// whose handler failed; the last entry repeats, so a MaxDeliver above 5 waits
// 15s before each further delivery. With DefaultMaxDeliver a failing message
// is dead-lettered 23s after its first failure (1+2+5+15), and the last
// delivery comes 15s after the one before it: a subscriber that fails
// deliveries while another holds the message under a lease shorter than that
// (the email-service's 10s send lease) loses nothing, see FinalRetryDelay.
var DefaultBackoff = []time.Duration{1 * time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second}

// DefaultFinalRetryDelay is FinalRetryDelay(DefaultMaxDeliver, DefaultBackoff).
var DefaultFinalRetryDelay = FinalRetryDelay(DefaultMaxDeliver, DefaultBackoff)

// FinalRetryDelay is the delay before the last delivery a message gets
// (the maxDeliver-th), after the delivery before it failed: the shortest
// time between a failed delivery and the message's dead-lettering.
//
// It bounds leases held across deliveries. A subscriber that fails a
// delivery because another delivery of the same message holds a lease on it
// (and may have died holding it) must see the lease end before the
// deliveries run out: whichever delivery took the lease, at least this long
// passes between the next failed delivery and the last one. A lease shorter
// than FinalRetryDelay therefore never gets a message dead-lettered while it
// runs; 0 when maxDeliver < 2 (no retry at all).
func FinalRetryDelay(maxDeliver int, backoff []time.Duration) time.Duration {
	if maxDeliver < 2 || len(backoff) == 0 {
		return 0
	}
	return config{backoff: backoff}.backoffFor(uint64(maxDeliver - 1))
}

// Limits bound what a stream keeps; a zero field is no limit. When a
// limit is reached the stream drops its oldest messages (JetStream's
// DiscardOld), whether or not a consumer has had them.
type Limits struct {
	MaxAge   time.Duration
	MaxBytes int64
}

type config struct {
	stream           string
	subjectPrefix    string
	deadLetterPrefix string
	maxDeliver       int
	backoff          []time.Duration
	ackWait          time.Duration
	maxAge           time.Duration
	maxBytes         int64
	deadLetterLimits Limits
	replicas         int
	updateStreams    bool
	duplicateWindow  time.Duration
	publishTimeout   time.Duration
	startTimeout     time.Duration
	pullBatch        int
	concurrency      int
	reconnectWait    time.Duration
	natsOptions      []nats.Option
	log              *slog.Logger
}

type (
	streamKey           struct{}
	subjectPrefixKey    struct{}
	deadLetterPrefixKey struct{}
	maxDeliverKey       struct{}
	backoffKey          struct{}
	ackWaitKey          struct{}
	maxAgeKey           struct{}
	eventLimitsKey      struct{}
	deadLetterLimitsKey struct{}
	replicasKey         struct{}
	updateStreamsKey    struct{}
	duplicateWindowKey  struct{}
	publishTimeoutKey   struct{}
	startTimeoutKey     struct{}
	pullBatchKey        struct{}
	concurrencyKey      struct{}
	retryKey            struct{}
	reconnectWaitKey    struct{}
	natsOptionsKey      struct{}
	loggerKey           struct{}
)

// setOption stores an implementation option in broker.Options.Context, the
// way go-micro's own broker plugins do.
func setOption(k, v any) broker.Option {
	return func(o *broker.Options) {
		if o.Context == nil {
			o.Context = context.Background()
		}
		o.Context = context.WithValue(o.Context, k, v)
	}
}

// Stream names the JetStream stream holding the events (default SHIPPY_EVENTS);
// dead letters go to the stream of the same name with suffix _DLQ.
func Stream(name string) broker.Option { return setOption(streamKey{}, name) }

// SubjectPrefix is put before a topic to form its NATS subject (default
// shippy.events, so topic user.created is subject shippy.events.user.created).
func SubjectPrefix(p string) broker.Option { return setOption(subjectPrefixKey{}, p) }

// DeadLetterPrefix is put before a topic to form its dead-letter subject
// (default shippy.deadletter).
func DeadLetterPrefix(p string) broker.Option { return setOption(deadLetterPrefixKey{}, p) }

// MaxDeliver bounds how often a handler is given one message before the
// message is moved to the dead-letter subject (default 5).
func MaxDeliver(n int) broker.Option { return setOption(maxDeliverKey{}, n) }

// Backoff sets the redelivery delays after failed handler calls; the last one
// repeats (default DefaultBackoff). Keep the one before the last delivery
// (see FinalRetryDelay) longer than any lease a subscriber holds.
func Backoff(d ...time.Duration) broker.Option { return setOption(backoffKey{}, d) }

// AckWait is how long the server waits for an ack before redelivering; a
// running handler extends it automatically (default 30s).
func AckWait(d time.Duration) broker.Option { return setOption(ackWaitKey{}, d) }

// MaxAge is how long the event stream keeps a message (default 7 days); see
// EventLimits, which also sets no limit.
func MaxAge(d time.Duration) broker.Option { return setOption(maxAgeKey{}, d) }

// EventLimits bounds the event stream (default 7 days, 1 GiB); a zero
// field is no limit. An event dropped at a limit before a consumer acked it
// is lost for that consumer.
func EventLimits(l Limits) broker.Option { return setOption(eventLimitsKey{}, l) }

// DeadLetterLimits bounds the dead-letter stream (default 30 days, 256 MiB);
// a zero field is no limit.
func DeadLetterLimits(l Limits) broker.Option { return setOption(deadLetterLimitsKey{}, l) }

// Replicas is how many JetStream servers hold each stream (default 1; 1 to
// MaxReplicas, and at most the cluster's size: more fails Connect).
func Replicas(n int) broker.Option { return setOption(replicasKey{}, n) }

// UpdateStreams says what Connect does with streams that exist already:
// true (the default) updates them to this broker's limits and replicas;
// false leaves them as they are and logs a warning when they differ. Give
// true to one program only, the streams' owner: two programs updating with
// different settings would undo each other at every start, and lowering a
// limit drops the messages above it at once.
func UpdateStreams(on bool) broker.Option { return setOption(updateStreamsKey{}, on) }

// DuplicateWindow is how long the stream remembers message ids to drop
// repeated publishes of one event (default 10 minutes).
func DuplicateWindow(d time.Duration) broker.Option { return setOption(duplicateWindowKey{}, d) }

// PublishTimeout bounds the wait for the stream's ack when the publish
// context has no earlier deadline (default 5s).
func PublishTimeout(d time.Duration) broker.Option { return setOption(publishTimeoutKey{}, d) }

// StartTimeout bounds how long Connect retries while JetStream does not
// answer, or answers that the cluster is not available yet (default
// DefaultStartTimeout).
func StartTimeout(d time.Duration) broker.Option { return setOption(startTimeoutKey{}, d) }

// PullBatch is how many messages a subscriber pulls ahead; small keeps the
// replicas of a queue group evenly loaded (default 16).
func PullBatch(n int) broker.Option { return setOption(pullBatchKey{}, n) }

// Concurrency is how many messages each subscriber hands to its handler at
// once (default 1; at most MaxConcurrency). More than one lets a handler that
// waits (on a mail server, a key-value store) overlap those waits; the
// handler must then be safe for concurrent use, and messages are handled out
// of order. A subscription can set its own with WithConcurrency.
func Concurrency(n int) broker.Option { return setOption(concurrencyKey{}, n) }

// WithConcurrency returns ctx carrying a subscription's concurrency (see
// Concurrency), for broker.SubscribeContext, or go-micro's
// server.SubscriberContext, which passes it on to the broker.
func WithConcurrency(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, concurrencyKey{}, n)
}

// concurrencyFrom is ctx's concurrency, or def.
func concurrencyFrom(ctx context.Context, def int) int {
	if ctx == nil {
		return def
	}
	if v, ok := ctx.Value(concurrencyKey{}).(int); ok && v > 0 {
		return min(v, MaxConcurrency)
	}
	return def
}

// WithRetry returns ctx carrying a subscription's own redelivery schedule,
// for broker.SubscribeContext or go-micro's server.SubscriberContext: after
// the n-th failed delivery the message comes back after backoff[n-1], and it
// is dead-lettered when the delivery after the last delay fails too, so it
// is delivered at most len(backoff)+1 times. Without it the subscription
// uses the broker's MaxDeliver and Backoff.
func WithRetry(ctx context.Context, backoff ...time.Duration) context.Context {
	return context.WithValue(ctx, retryKey{}, slices.Clone(backoff))
}

// retryFrom applies ctx's WithRetry schedule, if any, to c.
func retryFrom(ctx context.Context, c config) config {
	if ctx == nil {
		return c
	}
	if v, ok := ctx.Value(retryKey{}).([]time.Duration); ok && len(v) > 0 {
		c.backoff, c.maxDeliver = v, len(v)+1
	}
	return c
}

// ReconnectWait is the pause between reconnect attempts (default 1s, with jitter).
func ReconnectWait(d time.Duration) broker.Option { return setOption(reconnectWaitKey{}, d) }

// NatsOptions adds options for the NATS connection (credentials, names...).
func NatsOptions(opts ...nats.Option) broker.Option { return setOption(natsOptionsKey{}, opts) }

// Logger sets the structured logger (default slog.Default()).
func Logger(l *slog.Logger) broker.Option { return setOption(loggerKey{}, l) }

func configFrom(ctx context.Context) config {
	c := config{
		stream:           DefaultStream,
		subjectPrefix:    DefaultSubjectPrefix,
		deadLetterPrefix: DefaultDeadLetterPrefix,
		maxDeliver:       DefaultMaxDeliver,
		backoff:          DefaultBackoff,
		ackWait:          DefaultAckWait,
		maxAge:           DefaultMaxAge,
		maxBytes:         DefaultMaxBytes,
		deadLetterLimits: Limits{MaxAge: DefaultDeadLetterMaxAge, MaxBytes: DefaultDeadLetterMaxBytes},
		replicas:         DefaultReplicas,
		updateStreams:    true,
		duplicateWindow:  DefaultDuplicateWindow,
		publishTimeout:   DefaultPublishTimeout,
		startTimeout:     DefaultStartTimeout,
		pullBatch:        DefaultPullBatch,
		concurrency:      DefaultConcurrency,
		reconnectWait:    DefaultReconnectWait,
		log:              slog.Default(),
	}
	if ctx == nil {
		return c
	}
	if v, ok := ctx.Value(streamKey{}).(string); ok && v != "" {
		c.stream = v
	}
	if v, ok := ctx.Value(subjectPrefixKey{}).(string); ok && v != "" {
		c.subjectPrefix = v
	}
	if v, ok := ctx.Value(deadLetterPrefixKey{}).(string); ok && v != "" {
		c.deadLetterPrefix = v
	}
	if v, ok := ctx.Value(maxDeliverKey{}).(int); ok && v > 0 {
		c.maxDeliver = v
	}
	if v, ok := ctx.Value(backoffKey{}).([]time.Duration); ok && len(v) > 0 {
		c.backoff = v
	}
	if v, ok := ctx.Value(ackWaitKey{}).(time.Duration); ok && v > 0 {
		c.ackWait = v
	}
	if v, ok := ctx.Value(maxAgeKey{}).(time.Duration); ok && v > 0 {
		c.maxAge = v
	}
	if v, ok := ctx.Value(eventLimitsKey{}).(Limits); ok {
		c.maxAge, c.maxBytes = v.MaxAge, v.MaxBytes
	}
	if v, ok := ctx.Value(deadLetterLimitsKey{}).(Limits); ok {
		c.deadLetterLimits = v
	}
	if v, ok := ctx.Value(replicasKey{}).(int); ok && v > 0 {
		c.replicas = v
	}
	if v, ok := ctx.Value(updateStreamsKey{}).(bool); ok {
		c.updateStreams = v
	}
	if v, ok := ctx.Value(duplicateWindowKey{}).(time.Duration); ok && v > 0 {
		c.duplicateWindow = v
	}
	if v, ok := ctx.Value(publishTimeoutKey{}).(time.Duration); ok && v > 0 {
		c.publishTimeout = v
	}
	if v, ok := ctx.Value(startTimeoutKey{}).(time.Duration); ok && v > 0 {
		c.startTimeout = v
	}
	if v, ok := ctx.Value(pullBatchKey{}).(int); ok && v > 0 {
		c.pullBatch = v
	}
	c.concurrency = concurrencyFrom(ctx, c.concurrency)
	if v, ok := ctx.Value(reconnectWaitKey{}).(time.Duration); ok && v > 0 {
		c.reconnectWait = v
	}
	if v, ok := ctx.Value(natsOptionsKey{}).([]nats.Option); ok {
		c.natsOptions = v
	}
	if v, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok && v != nil {
		c.log = v
	}
	return c
}

// backoffFor is the delay before redelivery after the n-th failed delivery.
func (c config) backoffFor(n uint64) time.Duration {
	i := int(n) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(c.backoff) {
		i = len(c.backoff) - 1
	}
	return c.backoff[i]
}
