package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shippy/shippy/internal/jsbroker"
)

// kvBucket is the sent log's key-value bucket and how it is stored. A zero
// limit is no limit.
type kvBucket struct {
	Name string
	// MaxAge is how long a sent event id is remembered (EMAIL_SENT_MAX_AGE):
	// an id forgotten while its event can still be delivered again (it is
	// in the event stream) would be sent again, so LoadConfig keeps it at
	// least the stream's max age.
	MaxAge time.Duration
	// MaxBytes bounds the bucket (EMAIL_SENT_MAX_BYTES). A full bucket
	// refuses new keys (JetStream's DiscardNew for key-value buckets), so
	// claims fail: nothing is sent, and events are retried, then
	// dead-lettered, until old ids expire.
	MaxBytes int64
	Replicas int
}

// Values of a key in the bucket.
const (
	kvSending = "sending" // claimed; the lease runs from the entry's timestamp
	kvSent    = "sent"
)

// kvSentLog is the sentLog shared by all replicas: a NATS JetStream
// key-value bucket, file-backed, one key per event id.
//
// A claim is a KV Create, which fails if the key exists, so of two
// concurrent deliveries exactly one claims. A lease whose holder died is
// taken over with an Update on the revision read, so again exactly one
// delivery wins. The lease is measured from the server's timestamp of the
// claim against this host's clock: clock skew between hosts shortens or
// lengthens it by that much.
type kvSentLog struct {
	kv    jetstream.KeyValue
	lease time.Duration
	now   func() time.Time
}

// newKVSentLog creates the bucket if needed, or updates its settings: the
// email-service owns it.
func newKVSentLog(ctx context.Context, js jetstream.JetStream, b kvBucket, lease time.Duration) (*kvSentLog, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.Name,
		Description: "shippy email-service: event ids whose welcome email was sent",
		TTL:         b.MaxAge,
		MaxBytes:    b.MaxBytes,
		Replicas:    b.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s (replicas %d): %w", b.Name, max(b.Replicas, 1), err)
	}
	return &kvSentLog{kv: kv, lease: lease, now: time.Now}, nil
}

// dialKVSentLog connects to NATS at urls (comma-separated) with opts (the
// program's credentials, its logging) and opens the bucket, waiting up to
// jsbroker.DefaultStartTimeout for a JetStream that does not answer yet (a
// cluster electing its leaders); close ends the connection.
func dialKVSentLog(ctx context.Context, log *slog.Logger, urls string, b kvBucket, lease time.Duration, opts ...nats.Option) (*kvSentLog, func(), error) {
	nc, err := nats.Connect(urls, append([]nats.Option{nats.Name(serviceName + " sent-log"), nats.MaxReconnects(-1)}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", urls, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	var sent *kvSentLog
	err = jsbroker.RetryStart(ctx, log, "create bucket "+b.Name, jsbroker.DefaultStartTimeout, jsbroker.DefaultPublishTimeout,
		func(ctx context.Context) (err error) {
			sent, err = newKVSentLog(ctx, js, b, lease)
			return err
		})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return sent, nc.Close, nil
}

// Ready reports whether the bucket answers (its stream's info), for the
// readiness check.
func (s *kvSentLog) Ready(ctx context.Context) error {
	if _, err := s.kv.Status(ctx); err != nil {
		return fmt.Errorf("key-value bucket %s: %w", s.kv.Bucket(), err)
	}
	return nil
}

// Claim's lease is the key's revision: Sent and Release write only on it.
func (s *kvSentLog) Claim(ctx context.Context, eventID string) (claim, bool, error) {
	key := kvKey(eventID)
	// A second round only when the key was released between Create and Get.
	for range 2 {
		rev, err := s.kv.Create(ctx, key, []byte(kvSending))
		if err == nil {
			return claim{eventID: eventID, rev: rev}, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return claim{}, false, fmt.Errorf("create key %s: %w", key, err)
		}
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return claim{}, false, fmt.Errorf("get key %s: %w", key, err)
		}
		if string(e.Value()) != kvSending {
			return claim{}, false, nil
		}
		if s.now().Before(e.Created().Add(s.lease)) {
			return claim{}, false, errSendInProgress
		}
		rev, err = s.kv.Update(ctx, key, []byte(kvSending), e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Another delivery took it over or finished it first.
			return claim{}, false, errSendInProgress
		}
		if err != nil {
			return claim{}, false, fmt.Errorf("take over key %s: %w", key, err)
		}
		return claim{eventID: eventID, rev: rev}, true, nil
	}
	return claim{}, false, errSendInProgress
}

// Sent writes "sent" on the claim's revision. If the lease was taken over
// (or that delivery released it) meanwhile, the email is out all the same:
// "sent" is written over whatever is there, so the event is not sent a
// third time, and errClaimLost reports the possible second email.
func (s *kvSentLog) Sent(ctx context.Context, c claim) error {
	key := kvKey(c.eventID)
	_, err := s.kv.Update(ctx, key, []byte(kvSent), c.rev)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("update key %s: %w", key, err)
	}
	if _, err := s.kv.Put(ctx, key, []byte(kvSent)); err != nil {
		return fmt.Errorf("put key %s after losing its claim: %w", key, err)
	}
	return fmt.Errorf("key %s: %w", key, errClaimLost)
}

// Release deletes the key only at the claim's revision: a Release landing
// after the lease expired must not delete the claim of the delivery that
// took it over, which would let a third delivery send too.
func (s *kvSentLog) Release(ctx context.Context, c claim) error {
	key := kvKey(c.eventID)
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(c.rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("delete key %s: %w", key, err)
	}
	return nil
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// kvKey maps an event id to a valid KV key. The user-service's ids are
// uuids and are used as they are; anything else (the id comes off the wire)
// is hashed. A plain key has no "_", so the two forms never collide.
func kvKey(eventID string) string {
	if plainKey.MatchString(eventID) {
		return eventID
	}
	sum := sha256.Sum256([]byte(eventID))
	return "sha256_" + hex.EncodeToString(sum[:])
}
