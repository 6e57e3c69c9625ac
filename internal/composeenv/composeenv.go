// Package composeenv gives tests and benchmarks the environment that
// docker-compose.yml gives each service, with the compose hosts swapped for
// local servers, so that what runs as processes here is what ships.
package composeenv

import (
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Service returns the environment docker-compose.yml gives service, with the
// x-micro-env anchor merged in.
func Service(t testing.TB, service string) map[string]string {
	t.Helper()
	return ServiceIn(t, "docker-compose.yml", service)
}

// ServiceIn returns the environment the compose file name (at the module's
// root, such as the override docker-compose.tls.yml) gives service.
func ServiceIn(t testing.TB, name, service string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(moduleRoot(t), name))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	var file struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	svc, ok := file.Services[service]
	if !ok {
		t.Fatalf("%s has no service %q", name, service)
	}
	return svc.Environment
}

// MailSink are the compose variables that point the email-service at
// Mailpit; Localize leaves them out.
var MailSink = map[string]bool{"SMTP_URL": true, "MAIL_FROM": true}

// TestNATSPassword stands in for the NATS passwords of .env.
const TestNATSPassword = "composeenv-test-nats-password"

// TestJWTSecret stands in for the secret compose asks the operator for.
const TestJWTSecret = "composeenv-test-secret-0123456789abcdef0123"

// Localize swaps the compose hosts (postgres, nats) for this test's servers
// and keeps every other value as the compose file has it, but for the mail
// sink: SMTP_URL and MAIL_FROM name compose's Mailpit, which tests do not
// run, and are left out, so the email-service uses its logging mailer (it
// prints the same "Sending email to:" line; tests of the SMTP mailer set
// their own server). dbURL may be empty for a service without a database.
func Localize(t testing.TB, env map[string]string, natsURL, dbURL string) map[string]string {
	t.Helper()
	db := dbVars(t, dbURL)
	out := map[string]string{}
	for k, v := range env {
		if MailSink[k] {
			continue
		}
		v = strings.ReplaceAll(v, "nats://nats:4222", natsURL)
		switch k {
		case "DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_NAME":
			v = db[k]
		case "JWT_SECRET":
			v = TestJWTSecret
		case "NATS_PASSWORD":
			// A NATS server without authorization ignores it; tests of the
			// permissions set their own.
			v = TestNATSPassword
		case "ADMIN_EMAILS":
			v = "" // compose takes it from the operator's shell; tests name their own
		case "MICRO_SERVER_ADDRESS", "METRICS_ADDRESS":
			v = "127.0.0.1:0"
		}
		if strings.Contains(v, "nats:4222") || strings.Contains(v, "${") {
			t.Fatalf("docker-compose.yml value %s=%q was not made local", k, v)
		}
		out[k] = v
	}
	return out
}

// Environ keeps the parent environment (PATH, HOME, GOTOOLCHAIN, ...) but
// none of the variables that configure shippy, then adds env: a developer's
// shell settings must not change what a test runs. Unless env says
// otherwise, the services' ops servers take a free port (METRICS_ADDRESS
// defaults to the fixed 9091 and 9092, which parallel tests would share).
func Environ(env map[string]string) []string {
	if _, ok := env["METRICS_ADDRESS"]; !ok {
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["METRICS_ADDRESS"] = "127.0.0.1:0"
	}
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if configures(k) {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func configures(k string) bool {
	for _, prefix := range []string{"MICRO_", "DB_", "JWT_", "EMAIL_", "AUTH_", "JETSTREAM_", "NATS_", "SMTP_", "MAIL_", "STACK_"} {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	switch k {
	case "DATABASE_URL", "EVENTS_CODEC", "SQLITE_PATH", "SHIPPY_PASSWORD", "SHIPPY_TOKEN", "ADMIN_EMAILS", "BCRYPT_COST", "LOG_LEVEL", "LOG_FORMAT", "METRICS_ADDRESS",
		"USER_METRICS_ADDRESS", "EMAIL_METRICS_ADDRESS":
		return true
	}
	return false
}

// dbVars splits a PostgreSQL URL into the DB_* variables.
func dbVars(t testing.TB, raw string) map[string]string {
	t.Helper()
	if raw == "" {
		return map[string]string{}
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("parse database URL: %v", err)
	}
	pass, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	return map[string]string{
		"DB_HOST":     u.Hostname(),
		"DB_PORT":     port,
		"DB_USER":     u.User.Username(),
		"DB_PASSWORD": pass,
		"DB_NAME":     strings.TrimPrefix(u.Path, "/"),
	}
}

// moduleRoot is the folder with go.mod above the test's working directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("composeenv: no go.mod above the working directory")
		}
		dir = parent
	}
}
