package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"

	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/requestid"
	pb "github.com/shippy/shippy/proto/user"
)

var (
	errEmailTaken   = errors.New("email already registered")
	errUserNotFound = errors.New("user not found")
)

// User is a row of the users table.
//
// Email is stored trimmed and lower-cased (the handler normalises it before
// it gets here), so a plain UNIQUE index makes the database refuse a second
// account for the same address in any case, on PostgreSQL and SQLite alike,
// without citext or expression indexes that gorm cannot migrate portably.
type User struct {
	ID           string    `gorm:"primaryKey;size:36"`
	Name         string    `gorm:"size:100;not null"`
	Company      string    `gorm:"size:100;not null;default:''"`
	Email        string    `gorm:"size:254;not null;uniqueIndex:idx_users_email"`
	PasswordHash string    `gorm:"not null"`
	CreatedAt    time.Time `gorm:"not null"`
}

// Store keeps users in PostgreSQL or in an embedded SQLite file.
type Store struct {
	db *gorm.DB
}

// openStore connects to the configured database and migrates the schema:
// the users table, the login throttle's and the outbox's.
func openStore(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	gcfg := &gorm.Config{Logger: newGormLogger(log), NowFunc: func() time.Time { return time.Now().UTC() }}
	var (
		db  *gorm.DB
		err error
	)
	switch cfg.Driver {
	case driverPostgres:
		db, err = gorm.Open(postgres.Open(cfg.DSN), gcfg)
	case driverSQLite:
		// busy_timeout waits for a lock instead of failing at once; WAL lets
		// readers run while a write is in progress.
		sep := "?"
		if strings.Contains(cfg.DSN, "?") {
			sep = "&"
		}
		db, err = gorm.Open(sqlite.Open(cfg.DSN+sep+"_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)"), gcfg)
	default:
		return nil, fmt.Errorf("open store: unknown driver %q", cfg.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("open store (%s): %w", cfg.StoreDescription, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if cfg.Driver == driverSQLite {
		// One writer at a time is all SQLite allows; a single connection
		// queues writers in Go instead of failing them with SQLITE_BUSY.
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(5)
		sqlDB.SetConnMaxLifetime(30 * time.Minute)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	}
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return s, nil
}

// migrateLockKey names shippy's schema migration among PostgreSQL's
// advisory locks (any constant the database's other users do not take).
const migrateLockKey = 0x5368_6970_7079 // "Shippy"

// migrate creates or updates the tables. On PostgreSQL it runs in one
// transaction holding an advisory lock: replicas started together on a new
// database take turns, where concurrent CREATE TABLEs would collide (a
// duplicate pg_type row) and all but one replica would exit.
func (s *Store) migrate(ctx context.Context) error {
	if s.db.Dialector.Name() != "postgres" {
		return migrateTables(ctx, s.db)
	}
	return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", migrateLockKey).Error; err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		return migrateTables(ctx, tx)
	})
}

func migrateTables(ctx context.Context, db *gorm.DB) error {
	if err := db.WithContext(ctx).AutoMigrate(&User{}); err != nil {
		return fmt.Errorf("migrate users table: %w", err)
	}
	if err := migrateAuthAttempts(ctx, db); err != nil {
		return err
	}
	return outbox.Migrate(ctx, db)
}

// Close closes the connection pool.
func (s *Store) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// Create inserts u and enqueues ev, its user.created event, in one
// transaction: the user exists only if its event will be published, and an
// event is never published for a user that was rolled back. A user with the
// same email gives errEmailTaken. The request's id (ctx) goes with the
// event, so the email-service's lines about it carry it too.
func (s *Store) Create(ctx context.Context, u *User, ev *pb.UserCreated) error {
	payload, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("create user: encode event %s: %w", ev.GetEventId(), err)
	}
	msg := outbox.Message{EventID: ev.GetEventId(), Topic: pb.TopicUserCreated, Payload: payload,
		RequestID: requestid.FromContext(ctx)}
	err = s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := insertUser(tx, u); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, tx, msg)
	})
	if err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	return nil
}

func insertUser(tx *gorm.DB, u *User) error {
	if err := tx.Create(u).Error; err != nil {
		if isUniqueViolation(err) {
			return errEmailTaken
		}
		return err
	}
	return nil
}

// Get returns the user with id, or errUserNotFound.
func (s *Store) Get(ctx context.Context, id string) (*User, error) {
	var u User
	if err := s.db.WithContext(ctx).Where("id = ?", id).Take(&u).Error; err != nil {
		return nil, fmt.Errorf("get user %s: %w", id, notFound(err))
	}
	return &u, nil
}

// GetByEmail returns the user with email (matched case-insensitively), or
// errUserNotFound.
func (s *Store) GetByEmail(ctx context.Context, email string) (*User, error) {
	var u User
	err := s.db.WithContext(ctx).Where("email = ?", normalizeEmail(email)).Take(&u).Error
	if err != nil {
		return nil, fmt.Errorf("get user by email: %w", notFound(err))
	}
	return &u, nil
}

// List returns all users, oldest first.
func (s *Store) List(ctx context.Context) ([]User, error) {
	var users []User
	if err := s.db.WithContext(ctx).Order("created_at, id").Find(&users).Error; err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

func notFound(err error) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return errUserNotFound
	}
	return err
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505" // unique_violation
	}
	// The pure-Go SQLite driver reports constraint failures only as text.
	return errors.Is(err, gorm.ErrDuplicatedKey) || strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// newGormLogger sends gorm's warnings (slow queries, errors) to slog on one
// line each. ParameterizedQueries keeps bound values, such as a password
// hash, out of the SQL it prints.
func newGormLogger(log *slog.Logger) gormlogger.Interface {
	return gormlogger.New(slogWriter{log}, gormlogger.Config{
		SlowThreshold:             500 * time.Millisecond,
		LogLevel:                  gormlogger.Warn,
		IgnoreRecordNotFoundError: true,
		ParameterizedQueries:      true,
		Colorful:                  false,
	})
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Printf(format string, args ...any) {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	w.log.Warn("database", "detail", msg)
}
