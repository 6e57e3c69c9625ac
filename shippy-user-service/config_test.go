package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

const goodSecret = "0123456789abcdef0123456789abcdef" // 32 bytes

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(env(nil))
	if err != nil {
		t.Fatalf("loadConfig(empty) = %v; want nil", err)
	}
	if cfg.Driver != driverSQLite || cfg.DSN != "shippy-users.db" {
		t.Errorf("store = %s %q; want sqlite shippy-users.db", cfg.Driver, cfg.DSN)
	}
	if !cfg.JWTSecretGenerated || len(cfg.JWTSecret) < minSecretLen {
		t.Errorf("secret generated %v, %d bytes; want a generated secret of at least %d bytes", cfg.JWTSecretGenerated, len(cfg.JWTSecret), minSecretLen)
	}
	want := Config{JWTTTL: 72 * time.Hour, BcryptCost: 10, EventsCodec: "proto", AuthMaxFailures: 5, AuthFailureWindow: time.Hour, LogLevel: slog.LevelInfo}
	if cfg.JWTTTL != want.JWTTTL || cfg.BcryptCost != want.BcryptCost || cfg.EventsCodec != want.EventsCodec ||
		cfg.AuthMaxFailures != want.AuthMaxFailures || cfg.AuthFailureWindow != want.AuthFailureWindow || cfg.LogLevel != want.LogLevel {
		t.Errorf("loadConfig(empty) = %+v; want defaults %+v", cfg, want)
	}
	other, _ := loadConfig(env(nil))
	if string(other.JWTSecret) == string(cfg.JWTSecret) {
		t.Errorf("two generated secrets are equal")
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(goodSecret+"-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		env   map[string]string
		check func(t *testing.T, cfg Config)
	}{
		{"sqlite path", map[string]string{"SQLITE_PATH": "/data/u.db"}, func(t *testing.T, c Config) {
			if c.Driver != driverSQLite || c.DSN != "/data/u.db" || !strings.Contains(c.StoreDescription, "/data/u.db") {
				t.Errorf("got %s %q %q; want sqlite /data/u.db", c.Driver, c.DSN, c.StoreDescription)
			}
		}},
		{"DB vars with DB_PASS", map[string]string{"DB_HOST": "db", "DB_USER": "shippy", "DB_PASS": "p@ss word", "DB_NAME": "users", "DB_SSLMODE": "disable", "JWT_SECRET": goodSecret}, func(t *testing.T, c Config) {
			if c.Driver != driverPostgres || c.DSN != "postgres://shippy:p%40ss%20word@db:5432/users?sslmode=disable" {
				t.Errorf("DSN = %q; want the tutorial's variables with DB_PASS as the password", c.DSN)
			}
			if strings.Contains(c.StoreDescription, "p@ss") || !strings.Contains(c.StoreDescription, "host=db") {
				t.Errorf("description %q; want host and no password", c.StoreDescription)
			}
		}},
		{"DB vars with DB_PASSWORD and port", map[string]string{"DB_HOST": "db", "DB_PORT": "6543", "DB_USER": "u", "DB_PASSWORD": "pw", "JWT_SECRET": goodSecret}, func(t *testing.T, c Config) {
			if c.DSN != "postgres://u:pw@db:6543/" {
				t.Errorf("DSN = %q", c.DSN)
			}
		}},
		{"DATABASE_URL", map[string]string{"DATABASE_URL": "postgres://u:topsecret@pg:5433/shippy", "JWT_SECRET": goodSecret}, func(t *testing.T, c Config) {
			if c.Driver != driverPostgres || strings.Contains(c.StoreDescription, "topsecret") || !strings.Contains(c.StoreDescription, "database=shippy") {
				t.Errorf("got %s, description %q; want postgres without password", c.Driver, c.StoreDescription)
			}
		}},
		{"JWT_SECRET_FILE trims newline", map[string]string{"JWT_SECRET_FILE": secretFile}, func(t *testing.T, c Config) {
			if string(c.JWTSecret) != goodSecret+"-from-file" || c.JWTSecretGenerated {
				t.Errorf("secret = %q; want file content without newline", c.JWTSecret)
			}
		}},
		{"JWT_SECRET exactly 32 bytes", map[string]string{"JWT_SECRET": goodSecret}, func(t *testing.T, c Config) {
			if string(c.JWTSecret) != goodSecret {
				t.Errorf("secret = %q", c.JWTSecret)
			}
		}},
		{"all tunables", map[string]string{"JWT_TTL": "15m", "BCRYPT_COST": "12", "EVENTS_CODEC": "json", "AUTH_MAX_FAILURES": "3",
			"AUTH_CALLER_MAX_FAILURES": "30", "AUTH_BACKOFF_BASE": "2s", "AUTH_BACKOFF_MAX": "5m", "AUTH_FAILURE_WINDOW": "10m", "LOG_LEVEL": "debug"}, func(t *testing.T, c Config) {
			if c.JWTTTL != 15*time.Minute || c.BcryptCost != 12 || c.EventsCodec != "json" || c.AuthMaxFailures != 3 ||
				c.AuthCallerMaxFailures != 30 || c.AuthBackoffBase != 2*time.Second || c.AuthBackoffMax != 5*time.Minute ||
				c.AuthFailureWindow != 10*time.Minute || c.LogLevel != slog.LevelDebug {
				t.Errorf("got %+v", c)
			}
		}},
		{"throttle defaults", map[string]string{}, func(t *testing.T, c Config) {
			if c.AuthMaxFailures != 5 || c.AuthCallerMaxFailures != 50 || c.AuthBackoffBase != time.Second ||
				c.AuthBackoffMax != 15*time.Minute || c.AuthFailureWindow != time.Hour || len(c.AdminEmails) != 0 {
				t.Errorf("got %+v; want 5, 50, 1s, 15m, 1h and no admin", c)
			}
		}},
		{"ADMIN_EMAILS lower-cased and trimmed", map[string]string{"ADMIN_EMAILS": " Ada@Example.com, bob@example.com "}, func(t *testing.T, c Config) {
			if fmt.Sprint(c.AdminEmails) != "[ada@example.com bob@example.com]" {
				t.Errorf("AdminEmails = %q; want [ada@example.com bob@example.com]", c.AdminEmails)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(env(tt.env))
			if err != nil {
				t.Fatalf("loadConfig(%v) = %v; want nil", tt.env, err)
			}
			tt.check(t, cfg)
		})
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	dir := t.TempDir()
	shortFile := filepath.Join(dir, "short")
	if err := os.WriteFile(shortFile, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := map[string]string{"DATABASE_URL": "postgres://u@pg/shippy"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		env     map[string]string
		wantVar string
	}{
		{with(nil, "JWT_SECRET", "too-short"), "JWT_SECRET"},
		{with(nil, "JWT_SECRET", goodSecret[:31]), "JWT_SECRET"},
		{with(nil, "JWT_SECRET_FILE", shortFile), "JWT_SECRET_FILE"},
		{with(nil, "JWT_SECRET_FILE", filepath.Join(dir, "missing")), "JWT_SECRET_FILE"},
		{with(nil, "JWT_SECRET", goodSecret, "JWT_SECRET_FILE", shortFile), "JWT_SECRET_FILE"},
		{pg, "JWT_SECRET"},
		{with(nil, "DB_HOST", "db"), "JWT_SECRET"},
		{with(pg, "JWT_SECRET", goodSecret, "DB_HOST", "db"), "DB_HOST"},
		{with(nil, "DATABASE_URL", "postgres://u@pg:notaport/x", "JWT_SECRET", goodSecret), "DATABASE_URL"},
		{with(nil, "DB_USER", "u", "JWT_SECRET", goodSecret), "DB_HOST"},
		{with(nil, "DB_HOST", "db", "DB_PORT", "99999", "JWT_SECRET", goodSecret), "DB_PORT"},
		{with(nil, "DB_HOST", "db", "DB_PORT", "x", "JWT_SECRET", goodSecret), "DB_PORT"},
		{with(nil, "DB_HOST", "db", "DB_SSLMODE", "maybe", "JWT_SECRET", goodSecret), "DB_SSLMODE"},
		{with(nil, "DB_HOST", "db", "DB_USER", "u", "DB_PASSWORD", "a", "DB_PASS", "b", "JWT_SECRET", goodSecret), "DB_PASS"},
		{with(nil, "JWT_TTL", "forever"), "JWT_TTL"},
		{with(nil, "JWT_TTL", "-1h"), "JWT_TTL"},
		{with(nil, "BCRYPT_COST", "3"), "BCRYPT_COST"},
		{with(nil, "BCRYPT_COST", "32"), "BCRYPT_COST"},
		{with(nil, "BCRYPT_COST", "ten"), "BCRYPT_COST"},
		{with(nil, "EVENTS_CODEC", "xml"), "EVENTS_CODEC"},
		{with(nil, "AUTH_MAX_FAILURES", "0"), "AUTH_MAX_FAILURES"},
		{with(nil, "AUTH_FAILURE_WINDOW", "0s"), "AUTH_FAILURE_WINDOW"},
		{with(nil, "AUTH_FAILURE_WINDOW", "20m"), "AUTH_FAILURE_WINDOW"}, // under twice the 15m AUTH_BACKOFF_MAX
		{with(nil, "AUTH_CALLER_MAX_FAILURES", "-1"), "AUTH_CALLER_MAX_FAILURES"},
		{with(nil, "AUTH_BACKOFF_BASE", "soon"), "AUTH_BACKOFF_BASE"},
		{with(nil, "AUTH_BACKOFF_MAX", "0s"), "AUTH_BACKOFF_MAX"},
		{with(nil, "AUTH_BACKOFF_BASE", "20m"), "AUTH_BACKOFF_BASE"}, // longer than AUTH_BACKOFF_MAX
		{with(nil, "ADMIN_EMAILS", "ada@example.com,,bob@example.com"), "ADMIN_EMAILS"},
		{with(nil, "ADMIN_EMAILS", "Ada <ada@example.com>"), "ADMIN_EMAILS"},
		{with(nil, "ADMIN_EMAILS", "not an address"), "ADMIN_EMAILS"},
		{with(nil, "LOG_LEVEL", "loud"), "LOG_LEVEL"},
	}
	for _, tt := range tests {
		t.Run(tt.wantVar, func(t *testing.T) {
			_, err := loadConfig(env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.wantVar) {
				t.Errorf("loadConfig(%v) = %v; want an error naming %s", tt.env, err, tt.wantVar)
			}
		})
	}
}

func TestLoadConfigErrorHidesDatabasePassword(t *testing.T) {
	_, err := loadConfig(env(map[string]string{"DATABASE_URL": "postgres://u:hunter2@pg:notaport/x", "JWT_SECRET": goodSecret}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("loadConfig(bad DATABASE_URL) = %v; want an error without the password", err)
	}
}

// DB_PASS is a prefix of DB_PASSWORD, so the generic table's substring check
// cannot tell them apart: this one compares the variable named.
func TestLoadConfigPasswordWithoutUserNamesTheVariableSet(t *testing.T) {
	for _, name := range []string{"DB_PASSWORD", "DB_PASS"} {
		t.Run(name, func(t *testing.T) {
			e := map[string]string{"DB_HOST": "db", name: "pw", "JWT_SECRET": goodSecret}
			_, err := loadConfig(env(e))
			want := name + " is set but DB_USER is not"
			if err == nil || err.Error() != want {
				t.Errorf("loadConfig(%v) = %v; want %q", e, err, want)
			}
		})
	}
}
