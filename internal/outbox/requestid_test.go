package outbox

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/shippy/shippy/internal/pgtest"
)

// recorder is a Publisher keeping every message it was given.
type recorder struct {
	mu   sync.Mutex
	msgs map[string]Message
}

func (r *recorder) Publish(_ context.Context, m Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.msgs == nil {
		r.msgs = map[string]Message{}
	}
	r.msgs[m.EventID] = m
	return nil
}

func (r *recorder) get(id string) (Message, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.msgs[id]
	return m, ok
}

// The request id goes into the row and out with the message; a message
// without one is stored as NULL and published without one.
func TestRequestIDStoredAndPublished(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ctx := context.Background()
		with := Message{EventID: "with", Topic: "user.created", Payload: []byte("p"), RequestID: "0af7651916cd43dd"}
		without := Message{EventID: "without", Topic: "user.created", Payload: []byte("p")}
		err := db.Transaction(func(tx *gorm.DB) error {
			return errors.Join(Enqueue(ctx, tx, with), Enqueue(ctx, tx, without))
		})
		if err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
		evs := rows(t, db)
		if len(evs) != 2 || evs[0].RequestID == nil || *evs[0].RequestID != with.RequestID || evs[1].RequestID != nil {
			t.Fatalf("rows = %+v; want request_id %q, then NULL", evs, with.RequestID)
		}

		pub := &recorder{}
		if err := New(db, pub, WithLogger(discardLogger())).Drain(ctx); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		for _, want := range []Message{with, without} {
			if got, ok := pub.get(want.EventID); !ok || got.RequestID != want.RequestID {
				t.Errorf("published %s with request id %q (published: %v); want %q", want.EventID, got.RequestID, ok, want.RequestID)
			}
		}
	})
}

func TestEnqueueRefusesLongRequestID(t *testing.T) {
	m := Message{EventID: "e-1", Topic: "user.created", RequestID: strings.Repeat("r", MaxRequestIDLen+1)}
	if err := Enqueue(context.Background(), nil, m); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Enqueue(request id of %d bytes) = %v; want %v", len(m.RequestID), err, ErrInvalidMessage)
	}
}

// eventBeforeRequestID is the outbox_events table as it was before the
// request_id column: what an upgraded user-service finds.
type eventBeforeRequestID struct {
	ID             int64      `gorm:"primaryKey;autoIncrement;index:idx_outbox_events_pending,where:published_at IS NULL"`
	EventID        string     `gorm:"size:128;not null;uniqueIndex:idx_outbox_events_event_id"`
	Topic          string     `gorm:"size:255;not null"`
	Payload        []byte     `gorm:"not null"`
	CreatedAt      time.Time  `gorm:"not null"`
	Attempts       int        `gorm:"not null;default:0"`
	LastError      string     `gorm:"type:text;not null;default:''"`
	PublishedAt    *time.Time `gorm:"index:idx_outbox_events_published_at"`
	LeaseOwner     string     `gorm:"size:32;not null;default:''"`
	LeaseExpiresAt *time.Time
}

func (eventBeforeRequestID) TableName() string { return "outbox_events" }

// Migrate adds the column to an existing table, and the rows written before
// it (pending at the upgrade) are published without a request id.
func TestMigrateAddsRequestIDToAnOldTable(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			tdb := testDB{dialect: dialect}
			if dialect == "sqlite" {
				tdb.dsn = filepath.Join(t.TempDir(), "outbox.db")
			} else {
				tdb.dsn = pgtest.NewDatabase(t)
			}
			db := tdb.open(t)
			ctx := context.Background()
			if err := db.AutoMigrate(&eventBeforeRequestID{}); err != nil {
				t.Fatalf("create the old table: %v", err)
			}
			if err := db.Create(&eventBeforeRequestID{EventID: "old", Topic: "user.created", Payload: []byte("p")}).Error; err != nil {
				t.Fatalf("insert an old row: %v", err)
			}
			if db.Migrator().HasColumn(&Event{}, "request_id") {
				t.Fatal("the old table already has request_id; the test proves nothing")
			}
			if err := Migrate(ctx, db); err != nil {
				t.Fatalf("Migrate an old table: %v", err)
			}
			if !db.Migrator().HasColumn(&Event{}, "request_id") {
				t.Fatal("Migrate did not add request_id")
			}
			// Twice, as every start does.
			if err := Migrate(ctx, db); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
			err := db.Transaction(func(tx *gorm.DB) error {
				return Enqueue(ctx, tx, Message{EventID: "new", Topic: "user.created", Payload: []byte("p"), RequestID: "rid-1"})
			})
			if err != nil {
				t.Fatalf("Enqueue after the migration: %v", err)
			}
			pub := &recorder{}
			if err := New(db, pub, WithLogger(discardLogger())).Drain(ctx); err != nil {
				t.Fatalf("Drain: %v", err)
			}
			for id, want := range map[string]string{"old": "", "new": "rid-1"} {
				if got, ok := pub.get(id); !ok || got.RequestID != want {
					t.Errorf("published %s with request id %q (published: %v); want %q", id, got.RequestID, ok, want)
				}
			}
		})
	}
}
