package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/bcrypt"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/servicelog"
)

// minSecretLen is the shortest JWT_SECRET accepted: HS256 needs at least a
// 256-bit key to keep its security margin (RFC 7518, section 3.2).
const minSecretLen = 32

// Store drivers.
const (
	driverPostgres = "postgres"
	driverSQLite   = "sqlite"
)

// Event codecs (EVENTS_CODEC).
const (
	codecProto = "proto"
	codecJSON  = "json"
)

// Config is everything the user-service reads from its environment, read and
// validated once at start-up, go-micro's MICRO_* variables included.
type Config struct {
	// Micro is go-micro's configuration (MICRO_BROKER, MICRO_REGISTRY, ...).
	Micro microenv.Env

	// Driver is driverPostgres when a database server is configured,
	// driverSQLite otherwise.
	Driver string
	// DSN is the PostgreSQL connection string or the SQLite file path.
	DSN string
	// StoreDescription names the store for logs; it never holds a password.
	StoreDescription string

	JWTSecret []byte
	// JWTSecretGenerated is true when no secret was configured and one was
	// generated for this run (embedded store only): tokens die with the process.
	JWTSecretGenerated bool
	JWTTTL             time.Duration

	BcryptCost  int
	EventsCodec string

	// AdminEmails are the lower-cased emails whose tokens carry the admin
	// claim (ADMIN_EMAILS).
	AdminEmails []string

	// The login throttle (limiter.go): back-off starts after
	// AuthMaxFailures failures of one email from one caller, or
	// AuthCallerMaxFailures of one caller across emails; waits start at
	// AuthBackoffBase and double up to AuthBackoffMax; failures older than
	// AuthFailureWindow are forgotten.
	AuthMaxFailures       int
	AuthCallerMaxFailures int
	AuthBackoffBase       time.Duration
	AuthBackoffMax        time.Duration
	AuthFailureWindow     time.Duration

	LogLevel slog.Level
	// LogFormat is LOG_FORMAT: json, or text; default text on a terminal,
	// json otherwise.
	LogFormat servicelog.Format
	// MetricsAddress is METRICS_ADDRESS, where the ops server serves
	// /metrics, /healthz and /readyz (default :9091); empty when "off".
	MetricsAddress string
}

// Defaults.
const (
	defaultSQLitePath            = "shippy-users.db"
	defaultDBPort                = "5432"
	defaultJWTTTL                = 72 * time.Hour
	defaultBcryptCost            = bcrypt.DefaultCost
	defaultAuthMaxFailures       = 5
	defaultAuthCallerMaxFailures = 50
	defaultAuthBackoffBase       = time.Second
	defaultAuthBackoffMax        = 15 * time.Minute
	defaultAuthFailureWindow     = time.Hour
)

// loadConfig reads the configuration through getenv (os.Getenv outside
// tests). Every error names the variable that is wrong.
func loadConfig(getenv func(string) string) (Config, error) {
	cfg := Config{
		JWTTTL:                defaultJWTTTL,
		BcryptCost:            defaultBcryptCost,
		EventsCodec:           codecProto,
		AuthMaxFailures:       defaultAuthMaxFailures,
		AuthCallerMaxFailures: defaultAuthCallerMaxFailures,
		AuthBackoffBase:       defaultAuthBackoffBase,
		AuthBackoffMax:        defaultAuthBackoffMax,
		AuthFailureWindow:     defaultAuthFailureWindow,
		LogLevel:              slog.LevelInfo,
	}
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }

	var err error
	if cfg.Micro, err = microenv.LoadEnv(getenv); err != nil {
		return Config{}, err
	}
	if err := loadStore(&cfg, get, getenv); err != nil {
		return Config{}, err
	}
	if err := loadSecret(&cfg, getenv); err != nil {
		return Config{}, err
	}

	if v := get("JWT_TTL"); v != "" {
		if cfg.JWTTTL, err = positiveDuration("JWT_TTL", v); err != nil {
			return Config{}, err
		}
	}
	if v := get("BCRYPT_COST"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < bcrypt.MinCost || n > bcrypt.MaxCost {
			return Config{}, fmt.Errorf("BCRYPT_COST=%q: want an integer from %d to %d", v, bcrypt.MinCost, bcrypt.MaxCost)
		}
		cfg.BcryptCost = n
	}
	if v := get("EVENTS_CODEC"); v != "" {
		if v != codecProto && v != codecJSON {
			return Config{}, fmt.Errorf("EVENTS_CODEC=%q: want %q or %q", v, codecProto, codecJSON)
		}
		cfg.EventsCodec = v
	}
	if err := loadThrottle(&cfg, get); err != nil {
		return Config{}, err
	}
	if v := get("ADMIN_EMAILS"); v != "" {
		for _, e := range strings.Split(v, ",") {
			e = strings.TrimSpace(e)
			if err := validateEmail(e); err != nil {
				return Config{}, fmt.Errorf("ADMIN_EMAILS: %q: %w (a comma-separated list of addresses)", e, err)
			}
			cfg.AdminEmails = append(cfg.AdminEmails, normalizeEmail(e))
		}
	}
	if v := get("LOG_LEVEL"); v != "" {
		switch strings.ToLower(v) {
		case "debug":
			cfg.LogLevel = slog.LevelDebug
		case "info":
			cfg.LogLevel = slog.LevelInfo
		case "warn":
			cfg.LogLevel = slog.LevelWarn
		case "error":
			cfg.LogLevel = slog.LevelError
		default:
			return Config{}, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", v)
		}
	}
	if cfg.LogFormat, err = servicelog.ParseFormat(getenv("LOG_FORMAT")); err != nil {
		return Config{}, err
	}
	if cfg.MetricsAddress, err = opshttp.ParseAddress("METRICS_ADDRESS", getenv("METRICS_ADDRESS"), defaultMetricsAddress); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// loadThrottle reads the login throttle's AUTH_* variables.
func loadThrottle(cfg *Config, get func(string) string) error {
	for _, n := range []struct {
		name string
		into *int
	}{
		{"AUTH_MAX_FAILURES", &cfg.AuthMaxFailures},
		{"AUTH_CALLER_MAX_FAILURES", &cfg.AuthCallerMaxFailures},
	} {
		if v := get(n.name); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i < 1 {
				return fmt.Errorf("%s=%q: want a positive integer", n.name, v)
			}
			*n.into = i
		}
	}
	for _, d := range []struct {
		name string
		into *time.Duration
	}{
		{"AUTH_BACKOFF_BASE", &cfg.AuthBackoffBase},
		{"AUTH_BACKOFF_MAX", &cfg.AuthBackoffMax},
		{"AUTH_FAILURE_WINDOW", &cfg.AuthFailureWindow},
	} {
		if v := get(d.name); v != "" {
			var err error
			if *d.into, err = positiveDuration(d.name, v); err != nil {
				return err
			}
		}
	}
	if cfg.AuthBackoffBase > cfg.AuthBackoffMax {
		return fmt.Errorf("AUTH_BACKOFF_BASE=%s is longer than AUTH_BACKOFF_MAX=%s", cfg.AuthBackoffBase, cfg.AuthBackoffMax)
	}
	// Failures must outlive the longest wait, or a caller waiting it out
	// would find its count forgotten and start again with free attempts.
	if cfg.AuthFailureWindow < 2*cfg.AuthBackoffMax {
		return fmt.Errorf("AUTH_FAILURE_WINDOW=%s: want at least twice AUTH_BACKOFF_MAX=%s, so that failures are remembered past the longest wait", cfg.AuthFailureWindow, cfg.AuthBackoffMax)
	}
	return nil
}

// dbVars are the tutorial's variables for a PostgreSQL server.
var dbVars = []string{"DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_PASS", "DB_NAME", "DB_SSLMODE"}

var sslModes = map[string]bool{
	"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true,
}

func loadStore(cfg *Config, get, raw func(string) string) error {
	var setDBVars []string
	for _, v := range dbVars {
		if get(v) != "" {
			setDBVars = append(setDBVars, v)
		}
	}
	dsn := get("DATABASE_URL")
	switch {
	case dsn != "" && len(setDBVars) > 0:
		// Two sources of truth would leave a reader guessing which one won.
		return fmt.Errorf("DATABASE_URL and %s are both set: configure the database one way", strings.Join(setDBVars, ", "))
	case dsn != "":
		pc, err := pgconn.ParseConfig(dsn)
		if err != nil {
			// pgconn's message may quote the URL, password included.
			return errors.New("DATABASE_URL: not a valid PostgreSQL connection string")
		}
		cfg.Driver, cfg.DSN = driverPostgres, dsn
		cfg.StoreDescription = describePostgres(pc.Host, pc.Port, pc.Database, pc.User)
		return nil
	case len(setDBVars) > 0:
		return loadDBVars(cfg, get, raw)
	default:
		cfg.Driver = driverSQLite
		cfg.DSN = get("SQLITE_PATH")
		if cfg.DSN == "" {
			cfg.DSN = defaultSQLitePath
		}
		cfg.StoreDescription = "sqlite " + cfg.DSN
		return nil
	}
}

func loadDBVars(cfg *Config, get, raw func(string) string) error {
	host := get("DB_HOST")
	if host == "" {
		return errors.New("DB_HOST is required when any DB_* variable is set")
	}
	port := get("DB_PORT")
	if port == "" {
		port = defaultDBPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("DB_PORT=%q: want a port number from 1 to 65535", port)
	}
	// Passwords are taken as given: spaces may be part of them.
	pass := getenvFirst(raw, "DB_PASSWORD", "DB_PASS")
	if raw("DB_PASSWORD") != "" && raw("DB_PASS") != "" && raw("DB_PASSWORD") != raw("DB_PASS") {
		return errors.New("DB_PASSWORD and DB_PASS are both set and differ: set one")
	}
	u := &url.URL{Scheme: "postgres", Host: net.JoinHostPort(host, port), Path: "/" + get("DB_NAME")}
	switch user := get("DB_USER"); {
	case user != "" && pass != "":
		u.User = url.UserPassword(user, pass)
	case user != "":
		u.User = url.User(user)
	case pass != "":
		passVar := "DB_PASSWORD"
		if raw("DB_PASSWORD") == "" {
			passVar = "DB_PASS"
		}
		return fmt.Errorf("%s is set but DB_USER is not", passVar)
	}
	q := url.Values{}
	if mode := get("DB_SSLMODE"); mode != "" {
		if !sslModes[mode] {
			return fmt.Errorf("DB_SSLMODE=%q: want disable, allow, prefer, require, verify-ca or verify-full", mode)
		}
		q.Set("sslmode", mode)
	}
	u.RawQuery = q.Encode()
	if _, err := pgconn.ParseConfig(u.String()); err != nil {
		return errors.New("DB_HOST, DB_PORT, DB_USER, DB_NAME: do not form a valid PostgreSQL connection string")
	}
	cfg.Driver, cfg.DSN = driverPostgres, u.String()
	p, _ := strconv.Atoi(port)
	cfg.StoreDescription = describePostgres(host, uint16(p), get("DB_NAME"), get("DB_USER"))
	return nil
}

func describePostgres(host string, port uint16, db, user string) string {
	return fmt.Sprintf("postgres host=%s port=%d database=%s user=%s", host, port, db, user)
}

func loadSecret(cfg *Config, getenv func(string) string) error {
	secret, file := getenv("JWT_SECRET"), strings.TrimSpace(getenv("JWT_SECRET_FILE"))
	switch {
	case secret != "" && file != "":
		return errors.New("JWT_SECRET and JWT_SECRET_FILE are both set: set one")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("JWT_SECRET_FILE: read secret: %w", err)
		}
		// Files written by editors and `echo` end in a newline that is not
		// part of the secret.
		secret = strings.TrimRight(string(b), "\r\n")
		if len(secret) < minSecretLen {
			return fmt.Errorf("JWT_SECRET_FILE: the secret in %s is %d bytes; at least %d are required", file, len(secret), minSecretLen)
		}
	case secret != "":
		if len(secret) < minSecretLen {
			return fmt.Errorf("JWT_SECRET is %d bytes; at least %d are required (e.g. `openssl rand -base64 48`)", len(secret), minSecretLen)
		}
	case cfg.Driver == driverPostgres:
		// Replicas sharing a database must share the secret, so it cannot
		// be made up per process.
		return errors.New("JWT_SECRET (or JWT_SECRET_FILE) is required when a database server is configured")
	default:
		b := make([]byte, 48)
		if _, err := rand.Read(b); err != nil {
			return fmt.Errorf("JWT_SECRET: generate a secret: %w", err)
		}
		cfg.JWTSecret, cfg.JWTSecretGenerated = b, true
		return nil
	}
	cfg.JWTSecret = []byte(secret)
	return nil
}

func positiveDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 90s, 15m or 72h", name, v)
	}
	return d, nil
}

func getenvFirst(get func(string) string, names ...string) string {
	for _, n := range names {
		if v := get(n); v != "" {
			return v
		}
	}
	return ""
}
