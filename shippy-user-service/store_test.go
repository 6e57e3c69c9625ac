package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// storeBackends opens a fresh store per backend: SQLite in a temporary
// folder always, PostgreSQL when TEST_DATABASE_URL is set (pgtest skips or,
// under CI, fails otherwise).
var storeBackends = []struct {
	name string
	open func(t *testing.T) *Store
}{
	{"sqlite", func(t *testing.T) *Store {
		return openTestStore(t, Config{Driver: driverSQLite, DSN: filepath.Join(t.TempDir(), "users.db"), StoreDescription: "sqlite test"})
	}},
	{"postgres", func(t *testing.T) *Store {
		return openTestStore(t, Config{Driver: driverPostgres, DSN: pgtest.NewDatabase(t), StoreDescription: "postgres test"})
	}},
}

func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := openStore(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("openStore(%s) = %v", cfg.Driver, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

func newTestUser(email string) *User {
	return &User{
		ID:           uuid.NewString(),
		Name:         "'); DROP TABLE users;--",
		Company:      "Acme",
		Email:        email,
		PasswordHash: "hash-" + email,
		CreatedAt:    time.Now().UTC().Truncate(time.Microsecond),
	}
}

// newTestEvent is u's user.created event, as the handler builds it.
func newTestEvent(u *User) *pb.UserCreated {
	return &pb.UserCreated{
		EventId: uuid.NewString(), Id: u.ID, Name: u.Name, Company: u.Company, Email: u.Email,
		CreatedAtUnixMs: u.CreatedAt.UnixMilli(),
	}
}

func TestStore(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			ctx := context.Background()

			ada := newTestUser("ada@example.com")
			if err := s.Create(ctx, ada, newTestEvent(ada)); err != nil {
				t.Fatalf("Create(%q) = %v; want nil", ada.Email, err)
			}
			bob := newTestUser("bob@example.com")
			bob.CreatedAt = ada.CreatedAt.Add(time.Second)
			if err := s.Create(ctx, bob, newTestEvent(bob)); err != nil {
				t.Fatalf("Create(%q) = %v; want nil", bob.Email, err)
			}

			got, err := s.Get(ctx, ada.ID)
			if err != nil {
				t.Fatalf("Get(%q) = %v; want nil", ada.ID, err)
			}
			if got.ID != ada.ID || got.Name != ada.Name || got.Company != ada.Company || got.Email != ada.Email ||
				got.PasswordHash != ada.PasswordHash || !got.CreatedAt.Equal(ada.CreatedAt) {
				t.Errorf("Get(%q) = %+v; want %+v (name verbatim)", ada.ID, got, ada)
			}

			for _, email := range []string{"ada@example.com", "ADA@Example.com", "  ada@example.COM "} {
				got, err := s.GetByEmail(ctx, email)
				if err != nil || got.ID != ada.ID {
					t.Errorf("GetByEmail(%q) = %v, %v; want Ada", email, got, err)
				}
			}

			if _, err := s.Get(ctx, uuid.NewString()); !errors.Is(err, errUserNotFound) {
				t.Errorf("Get(unknown) = %v; want errUserNotFound", err)
			}
			if _, err := s.GetByEmail(ctx, "nobody@example.com"); !errors.Is(err, errUserNotFound) {
				t.Errorf("GetByEmail(unknown) = %v; want errUserNotFound", err)
			}

			dup := newTestUser("ada@example.com")
			if err := s.Create(ctx, dup, newTestEvent(dup)); !errors.Is(err, errEmailTaken) {
				t.Errorf("Create(duplicate email) = %v; want errEmailTaken", err)
			}

			users, err := s.List(ctx)
			if err != nil {
				t.Fatalf("List() = %v", err)
			}
			if len(users) != 2 || users[0].ID != ada.ID || users[1].ID != bob.ID {
				t.Errorf("List() = %v; want ada then bob", users)
			}
		})
	}
}

// The database, not the handler, guarantees one account per email: of many
// concurrent creates for one address exactly one succeeds.
func TestStoreConcurrentCreateSameEmail(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			const n = 8
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					u := newTestUser("race@example.com")
					errs[i] = s.Create(context.Background(), u, newTestEvent(u))
				}()
			}
			close(start)
			wg.Wait()

			var ok, taken int
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case errors.Is(err, errEmailTaken):
					taken++
				default:
					t.Errorf("Create = %v; want nil or errEmailTaken", err)
				}
			}
			if ok != 1 || taken != n-1 {
				t.Errorf("concurrent creates: %d succeeded, %d taken; want 1 and %d", ok, taken, n-1)
			}
			users, err := s.List(context.Background())
			if err != nil || len(users) != 1 {
				t.Errorf("List() = %d users, %v; want 1", len(users), err)
			}
		})
	}
}

// The unique index exists in the schema itself: a raw insert that bypasses
// the store's code is refused too.
func TestStoreUniqueIndexInSchema(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			ctx := context.Background()
			u := newTestUser("idx@example.com")
			if err := s.Create(ctx, u, newTestEvent(u)); err != nil {
				t.Fatalf("Create = %v", err)
			}
			err := s.db.WithContext(ctx).Exec(
				"INSERT INTO users (id, name, company, email, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
				uuid.NewString(), "x", "", "idx@example.com", "h", time.Now()).Error
			if err == nil || !isUniqueViolation(err) {
				t.Errorf("raw duplicate insert = %v; want a unique violation", err)
			}
			if err != nil {
				t.Logf("database said: %v", fmt.Sprint(err))
			}
		})
	}
}

// A user is stored only with its event: whatever makes the outbox insert fail
// rolls the user back, and a refused user leaves no event.
func TestStoreCreateIsAtomicWithItsEvent(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			s := b.open(t)
			ctx := context.Background()
			events := func(eventID string) []outbox.Event {
				t.Helper()
				var rows []outbox.Event
				if err := s.db.WithContext(ctx).Where("event_id = ?", eventID).Find(&rows).Error; err != nil {
					t.Fatalf("read outbox rows: %v", err)
				}
				return rows
			}
			stored := func(u *User) bool {
				t.Helper()
				_, err := s.Get(ctx, u.ID)
				if err != nil && !errors.Is(err, errUserNotFound) {
					t.Fatalf("Get(%s) = %v", u.ID, err)
				}
				return err == nil
			}

			ada := newTestUser("ada@example.com")
			adaEv := newTestEvent(ada)
			if err := s.Create(ctx, ada, adaEv); err != nil {
				t.Fatalf("Create(%q) = %v; want nil", ada.Email, err)
			}
			rows := events(adaEv.EventId)
			if len(rows) != 1 || rows[0].Topic != pb.TopicUserCreated || rows[0].PublishedAt != nil {
				t.Fatalf("outbox rows for %s = %+v; want one pending %s row", adaEv.EventId, rows, pb.TopicUserCreated)
			}
			got := &pb.UserCreated{}
			if err := proto.Unmarshal(rows[0].Payload, got); err != nil || !proto.Equal(got, adaEv) {
				t.Errorf("outbox payload decodes to %v, %v; want %v", got, err, adaEv)
			}

			dupEmail := newTestUser("ada@example.com")
			dupEmailEv := newTestEvent(dupEmail)
			if err := s.Create(ctx, dupEmail, dupEmailEv); !errors.Is(err, errEmailTaken) {
				t.Errorf("Create(taken email) = %v; want errEmailTaken", err)
			}
			if rows := events(dupEmailEv.EventId); len(rows) != 0 {
				t.Errorf("refused user left outbox rows %+v; want none", rows)
			}

			tests := []struct {
				name    string
				prepare func(t *testing.T, ev *pb.UserCreated)
				wantErr error // nil: any error but errEmailTaken
			}{
				{"duplicate event id", func(_ *testing.T, ev *pb.UserCreated) { ev.EventId = adaEv.EventId }, nil},
				{"empty event id", func(_ *testing.T, ev *pb.UserCreated) { ev.EventId = "" }, outbox.ErrInvalidMessage},
				// Last: the table stays dropped.
				{"outbox table missing", func(t *testing.T, _ *pb.UserCreated) {
					if err := s.db.WithContext(ctx).Migrator().DropTable(&outbox.Event{}); err != nil {
						t.Fatalf("drop outbox table: %v", err)
					}
				}, nil},
			}
			for i, tt := range tests {
				u := newTestUser(fmt.Sprintf("user%d@example.com", i))
				ev := newTestEvent(u)
				tt.prepare(t, ev)
				err := s.Create(ctx, u, ev)
				switch {
				case err == nil || errors.Is(err, errEmailTaken):
					t.Errorf("%s: Create(%q) = %v; want an outbox error", tt.name, u.Email, err)
				case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
					t.Errorf("%s: Create(%q) = %v; want %v", tt.name, u.Email, err, tt.wantErr)
				}
				if stored(u) {
					t.Errorf("%s: user %q is stored; want it rolled back with its event", tt.name, u.Email)
				}
			}
		})
	}
}

// Replicas started together on an empty database (a new deployment) must
// all start: their schema migrations take turns instead of colliding in
// CREATE TABLE.
func TestStoreReplicasMigrateTogether(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const replicas = 6
	errs := make(chan error, replicas)
	for range replicas {
		go func() {
			s, err := openStore(context.Background(), Config{Driver: driverPostgres, DSN: dsn, StoreDescription: "postgres test"}, discardLog)
			if err == nil {
				err = s.Close()
			}
			errs <- err
		}()
	}
	for range replicas {
		if err := <-errs; err != nil {
			t.Errorf("openStore on a new database beside %d other replicas = %v; want nil", replicas-1, err)
		}
	}
}
