package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// sentTTL is how long the key-value bucket remembers a sent event id: far
// longer than any redelivery or outbox retry, short enough to bound the
// bucket. An id forgotten after it would send again.
const sentTTL = 7 * 24 * time.Hour

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

// newKVSentLog creates the bucket if needed (or updates its settings).
func newKVSentLog(ctx context.Context, js jetstream.JetStream, bucket string, lease time.Duration) (*kvSentLog, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "shippy email-service: event ids whose welcome email was sent",
		TTL:         sentTTL,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", bucket, err)
	}
	return &kvSentLog{kv: kv, lease: lease, now: time.Now}, nil
}

// dialKVSentLog connects to NATS at urls (comma-separated) and opens the
// bucket; close ends the connection.
func dialKVSentLog(ctx context.Context, urls, bucket string, lease time.Duration) (*kvSentLog, func(), error) {
	nc, err := nats.Connect(urls, nats.Name(serviceName+" sent-log"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", urls, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	sent, err := newKVSentLog(ctx, js, bucket, lease)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return sent, nc.Close, nil
}

func (s *kvSentLog) Claim(ctx context.Context, eventID string) (bool, error) {
	key := kvKey(eventID)
	// A second round only when the key was released between Create and Get.
	for range 2 {
		_, err := s.kv.Create(ctx, key, []byte(kvSending))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("create key %s: %w", key, err)
		}
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get key %s: %w", key, err)
		}
		if string(e.Value()) != kvSending {
			return false, nil
		}
		if s.now().Before(e.Created().Add(s.lease)) {
			return false, errSendInProgress
		}
		_, err = s.kv.Update(ctx, key, []byte(kvSending), e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// Another delivery took it over or finished it first.
			return false, errSendInProgress
		}
		if err != nil {
			return false, fmt.Errorf("take over key %s: %w", key, err)
		}
		return true, nil
	}
	return false, errSendInProgress
}

func (s *kvSentLog) Sent(ctx context.Context, eventID string) error {
	if _, err := s.kv.Put(ctx, kvKey(eventID), []byte(kvSent)); err != nil {
		return fmt.Errorf("put key %s: %w", kvKey(eventID), err)
	}
	return nil
}

// Release deletes the claim. It does not check that the claim is still the
// caller's: the send timeout (half the lease) ends a send before another
// delivery may take the lease over.
func (s *kvSentLog) Release(ctx context.Context, eventID string) error {
	if err := s.kv.Delete(ctx, kvKey(eventID)); err != nil {
		return fmt.Errorf("delete key %s: %w", kvKey(eventID), err)
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
