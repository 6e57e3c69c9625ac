// Package outbox is a transactional outbox on gorm: an event is written to
// the outbox_events table in the same database transaction as the change it
// announces, and a Relay publishes pending rows to a broker afterwards. A
// committed change therefore always gets its event, however the broker or the
// process fails in between, and a rolled-back change never gets one.
//
// Delivery is at least once. A crash (or a lost database connection) after a
// publish and before the row is marked published publishes the event again,
// so consumers must deduplicate by Message.EventID: shippy's JetStream broker
// uses the event id as the message id, and the email-service records the
// event ids it has sent.
//
// On PostgreSQL several relays (one per replica) may share a table: a batch is
// claimed with SELECT ... FOR UPDATE SKIP LOCKED inside a transaction that
// lasts while the batch is published, so each row has one publisher at a
// time. SQLite has no row locks, and a write transaction would lock the whole
// file while the broker is slow, so there a batch is claimed with a lease
// (lease_owner, lease_expires_at) written in one UPDATE; the lease outlives
// any publish that honours its timeout, and a crashed relay's lease expires.
//
// A single relay publishes in id order and stops a batch at the first failed
// publish, so a later event does not overtake an earlier one; unless it is
// given WithMaxInFlight, which publishes several at once (through a
// BatchPublisher when the Publisher is one) and gives up that order. Several relays
// share the work and give no order between their batches; ids are also
// allocated before commit, so an event committed late can follow one with a
// higher id.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Limits of Message fields, enforced by Enqueue so that PostgreSQL and SQLite
// accept and refuse the same messages.
const (
	MaxEventIDLen   = 128
	MaxTopicLen     = 255
	MaxRequestIDLen = 64
)

// ErrInvalidMessage is returned by Enqueue for a message without an event id
// or topic, or with one that is too long.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// Message is an event to publish: Payload is the serialized event, stored and
// handed to the Publisher unchanged.
type Message struct {
	// EventID identifies the event across redeliveries; it is unique in the
	// outbox and consumers deduplicate by it.
	EventID string
	Topic   string
	Payload []byte
	// RequestID is the id of the request that caused the event, if any,
	// for the Publisher to send along (a header) so that one request can
	// be followed into its consumers' logs. Optional.
	RequestID string
}

// Event is a row of the outbox_events table.
type Event struct {
	// ID orders the events; the partial index serves the relay's claim query.
	ID      int64  `gorm:"primaryKey;autoIncrement;index:idx_outbox_events_pending,where:published_at IS NULL"`
	EventID string `gorm:"size:128;not null;uniqueIndex:idx_outbox_events_event_id"`
	Topic   string `gorm:"size:255;not null"`
	Payload []byte `gorm:"not null"`
	// CreatedAt is the enqueue time, for operators; nothing compares it.
	CreatedAt time.Time `gorm:"not null"`
	// Attempts counts publishes tried, the successful one included.
	Attempts  int    `gorm:"not null;default:0"`
	LastError string `gorm:"type:text;not null;default:''"`
	// PublishedAt is NULL while the event is pending.
	PublishedAt *time.Time `gorm:"index:idx_outbox_events_published_at"`
	// LeaseOwner and LeaseExpiresAt claim a pending row on SQLite (see the
	// package comment); PostgreSQL leaves them empty.
	LeaseOwner     string `gorm:"size:32;not null;default:''"`
	LeaseExpiresAt *time.Time
	// RequestID is Message.RequestID; NULL when there was none, and in rows
	// written before the column was added (Migrate adds it).
	RequestID *string `gorm:"size:64"`
}

// TableName is the table gorm migrates and queries.
func (Event) TableName() string { return "outbox_events" }

// Migrate creates or updates the outbox_events table; a table made before
// the request_id column existed gets it (NULL in its rows).
func Migrate(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&Event{}); err != nil {
		return fmt.Errorf("migrate outbox_events table: %w", err)
	}
	return nil
}

// Enqueue adds m to the outbox through tx, which should be the caller's
// transaction: the event then commits or rolls back with the caller's change.
// Call Relay.Notify after the commit so that the event goes out at once. A
// second message with the same EventID fails with the database's unique
// violation.
func Enqueue(ctx context.Context, tx *gorm.DB, m Message) error {
	if err := m.validate(); err != nil {
		return err
	}
	ev := Event{EventID: m.EventID, Topic: m.Topic, Payload: m.Payload}
	if m.RequestID != "" {
		ev.RequestID = &m.RequestID
	}
	if ev.Payload == nil {
		// NOT NULL: an empty payload is stored as zero bytes.
		ev.Payload = []byte{}
	}
	if err := tx.WithContext(ctx).Create(&ev).Error; err != nil {
		return fmt.Errorf("outbox: enqueue event %s: %w", m.EventID, err)
	}
	return nil
}

func (m Message) validate() error {
	switch {
	case m.EventID == "":
		return fmt.Errorf("%w: empty event id", ErrInvalidMessage)
	case len(m.EventID) > MaxEventIDLen:
		return fmt.Errorf("%w: event id longer than %d bytes", ErrInvalidMessage, MaxEventIDLen)
	case m.Topic == "":
		return fmt.Errorf("%w: empty topic (event %s)", ErrInvalidMessage, m.EventID)
	case len(m.Topic) > MaxTopicLen:
		return fmt.Errorf("%w: topic longer than %d bytes (event %s)", ErrInvalidMessage, MaxTopicLen, m.EventID)
	case len(m.RequestID) > MaxRequestIDLen:
		return fmt.Errorf("%w: request id longer than %d bytes (event %s)", ErrInvalidMessage, MaxRequestIDLen, m.EventID)
	}
	return nil
}

// message is the row as the Publisher gets it.
func (e *Event) message() Message {
	m := Message{EventID: e.EventID, Topic: e.Topic, Payload: e.Payload}
	if e.RequestID != nil {
		m.RequestID = *e.RequestID
	}
	return m
}

// requestIDAttr is the row's request id as a log attribute, or nothing.
func (e *Event) requestIDAttr() []any {
	if e.RequestID == nil || *e.RequestID == "" {
		return nil
	}
	return []any{"request_id", *e.RequestID}
}
