package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/opshttp"
	"github.com/shippy/shippy/internal/servicelog"
)

// Config is the email-service's configuration, go-micro's MICRO_* variables
// included; MICRO_BROKER and MICRO_BROKER_ADDRESS also decide where the sent
// log lives.
type Config struct {
	// Micro is go-micro's configuration (MICRO_BROKER, MICRO_REGISTRY, ...).
	Micro microenv.Env
	// LogLevel is LOG_LEVEL: debug, info (default), warn or error.
	LogLevel slog.Level
	// LogFormat is LOG_FORMAT: json, or text; default text on a terminal,
	// json otherwise.
	LogFormat servicelog.Format
	// MetricsAddress is METRICS_ADDRESS, where the ops server serves
	// /metrics, /healthz and /readyz (default :9092); empty when "off".
	MetricsAddress string
	// Queue is EMAIL_QUEUE, the queue group replicas share so that each
	// event is handled once, not once per replica.
	Queue string
	// Concurrency is EMAIL_CONCURRENCY (default 8, 1 to 1024): how many
	// events a replica handles at once on the JetStream broker (see
	// defaultConcurrency); other brokers ignore it.
	Concurrency int
	// SentNATS is where the ids of sent events are recorded: with
	// MICRO_BROKER=jetstream, the NATS URL(s) of MICRO_BROKER_ADDRESS
	// (default nats://127.0.0.1:4222), shared by all replicas; otherwise
	// empty, and each replica remembers them in memory.
	SentNATS string
	// SentBucket is EMAIL_SENT_BUCKET, the JetStream key-value bucket of
	// sent event ids (default shippy_email_sent).
	SentBucket string
	// SentMaxAge and SentMaxBytes bound that bucket (EMAIL_SENT_MAX_AGE,
	// default JETSTREAM_EVENTS_MAX_AGE, and at least it; EMAIL_SENT_MAX_BYTES,
	// default 256MiB); 0 is no limit. Only with MICRO_BROKER=jetstream.
	SentMaxAge   time.Duration
	SentMaxBytes int64
	// SendLease is EMAIL_SEND_LEASE (default 10s): how long a delivery that
	// is sending an event's email keeps other deliveries of it waiting; the
	// send may take half of it. On the JetStream broker it must be shorter
	// than EMAIL_RETRY_BACKOFF's last delay, or a claim left by a replica
	// that died could outlast the redeliveries and the event be
	// dead-lettered unsent.
	SendLease time.Duration
	// RetryBackoff is EMAIL_RETRY_BACKOFF: on the JetStream broker, the
	// delays before the 2nd, 3rd, ... delivery of an event whose email
	// failed for a reason that may pass (mail server down, a 4xx, DNS); an
	// event still failing after the last one is dead-lettered. Default
	// defaultRetryBackoff; other brokers ignore it.
	RetryBackoff []time.Duration
	// SMTP is the SMTP mailer's configuration, from SMTP_URL and the
	// variables that go with it; nil (SMTP_URL unset) means the logging
	// mailer, which sends nothing.
	SMTP *SMTPConfig
}

const (
	defaultQueue        = "go.micro.srv.email"
	defaultSentBucket   = "shippy_email_sent"
	defaultNATSURL      = "nats://127.0.0.1:4222"
	defaultSentMaxBytes = 256 << 20
	// defaultMetricsAddress is the ops server's port; the user-service's
	// is 9091.
	defaultMetricsAddress = ":9092"
	// maxRetries bounds EMAIL_RETRY_BACKOFF's length.
	maxRetries = 100
)

// defaultRetryBackoff gives a failing email 10 deliveries over about 14
// minutes: a mail server restarting, or a name that does not resolve yet
// (podman's DNS took 45s once in compose), delays the email instead of
// dead-lettering it. Permanent failures (5xx) are dead-lettered at once.
var defaultRetryBackoff = []time.Duration{
	time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 5 * time.Minute,
}

var bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// LoadConfig reads the configuration once; getenv is os.Getenv outside tests.
func LoadConfig(getenv func(string) string) (Config, error) {
	cfg := Config{LogLevel: slog.LevelInfo, Queue: defaultQueue, Concurrency: defaultConcurrency,
		SentBucket: defaultSentBucket, SendLease: defaultSendLease, RetryBackoff: defaultRetryBackoff}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return Config{}, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", v)
		}
	}
	var err error
	if cfg.LogFormat, err = servicelog.ParseFormat(getenv("LOG_FORMAT")); err != nil {
		return Config{}, err
	}
	if cfg.MetricsAddress, err = opshttp.ParseAddress("METRICS_ADDRESS", getenv("METRICS_ADDRESS"), defaultMetricsAddress); err != nil {
		return Config{}, err
	}
	if v := getenv("EMAIL_QUEUE"); v != "" {
		// NATS refuses queue names with spaces or wildcards, and would do so
		// only at subscribe time, after the service had started.
		if strings.ContainsAny(v, " \t\r\n*>") {
			return Config{}, fmt.Errorf("EMAIL_QUEUE=%q: want a queue name without spaces or wildcards", v)
		}
		cfg.Queue = v
	}
	if v := getenv("EMAIL_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jsbroker.MaxConcurrency {
			return Config{}, fmt.Errorf("EMAIL_CONCURRENCY=%q: want a number of events from 1 to %d", v, jsbroker.MaxConcurrency)
		}
		cfg.Concurrency = n
	}
	if v := getenv("EMAIL_SENT_BUCKET"); v != "" {
		if !bucketName.MatchString(v) {
			return Config{}, fmt.Errorf("EMAIL_SENT_BUCKET=%q: want letters, digits, - and _ only", v)
		}
		cfg.SentBucket = v
	}
	if v := getenv("EMAIL_SEND_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return Config{}, fmt.Errorf("EMAIL_SEND_LEASE=%q: want a duration of at least 1s, e.g. 10s", v)
		}
		cfg.SendLease = d
	}
	if v := getenv("EMAIL_RETRY_BACKOFF"); v != "" {
		if cfg.RetryBackoff, err = parseBackoff(v); err != nil {
			return Config{}, fmt.Errorf("EMAIL_RETRY_BACKOFF=%q: %w", v, err)
		}
	}
	micro, err := microenv.LoadEnv(getenv)
	if err != nil {
		return Config{}, err
	}
	cfg.Micro = micro
	if micro.Broker == microenv.BrokerJetStream {
		// The lease must fit in the retry schedule (see defaultSendLease).
		if limit := jsbroker.FinalRetryDelay(len(cfg.RetryBackoff)+1, cfg.RetryBackoff); cfg.SendLease >= limit {
			return Config{}, fmt.Errorf("EMAIL_SEND_LEASE=%s: want less than %s, EMAIL_RETRY_BACKOFF's delay before an event's last delivery, or an event claimed by a replica that died could be dead-lettered unsent", cfg.SendLease, limit)
		}
		cfg.SentNATS = defaultNATSURL
		if len(micro.BrokerAddrs) > 0 {
			cfg.SentNATS = strings.Join(micro.BrokerAddrs, ",")
		}
	}
	if err := loadSentLimits(&cfg, getenv); err != nil {
		return Config{}, err
	}
	smtp, err := loadSMTPConfig(getenv, cfg.SendLease)
	if err != nil {
		return Config{}, err
	}
	cfg.SMTP = smtp
	return cfg, nil
}

// loadSentLimits reads EMAIL_SENT_MAX_AGE and EMAIL_SENT_MAX_BYTES, which
// bound the key-value bucket (MICRO_BROKER=jetstream only). A sent event id
// must be remembered as long as the event can be delivered again, which it
// can as long as the event stream keeps it (a consumer created again starts
// from the first stored message), so the age is at least
// JETSTREAM_EVENTS_MAX_AGE, and no limit when that has none.
func loadSentLimits(cfg *Config, getenv func(string) string) error {
	age, bytes := getenv("EMAIL_SENT_MAX_AGE"), getenv("EMAIL_SENT_MAX_BYTES")
	if cfg.SentNATS == "" {
		for _, v := range []struct{ name, value string }{{"EMAIL_SENT_MAX_AGE", age}, {"EMAIL_SENT_MAX_BYTES", bytes}} {
			if v.value != "" {
				return fmt.Errorf("%s is set but MICRO_BROKER is not jetstream: the sent log is then in memory", v.name)
			}
		}
		return nil
	}
	events := cfg.Micro.JetStream.Events.MaxAge
	cfg.SentMaxAge, cfg.SentMaxBytes = events, defaultSentMaxBytes
	var err error
	if age != "" {
		if cfg.SentMaxAge, err = microenv.ParseMaxAge("EMAIL_SENT_MAX_AGE", age); err != nil {
			return err
		}
	}
	if bytes != "" {
		if cfg.SentMaxBytes, err = microenv.ParseMaxBytes("EMAIL_SENT_MAX_BYTES", bytes); err != nil {
			return err
		}
	}
	switch {
	case cfg.SentMaxAge == 0:
	case events == 0:
		return fmt.Errorf("EMAIL_SENT_MAX_AGE=%s: want 0 (no limit) while JETSTREAM_EVENTS_MAX_AGE is 0: an event kept forever can be delivered again at any time, and its id must still be known as sent", cfg.SentMaxAge)
	case cfg.SentMaxAge < events:
		return fmt.Errorf("EMAIL_SENT_MAX_AGE=%s: want at least JETSTREAM_EVENTS_MAX_AGE=%s: an event still in the stream can be delivered again, and its email would be sent again once its id is forgotten", cfg.SentMaxAge, events)
	}
	return nil
}

// SMTPConfig is the SMTP mailer's configuration. Its String and LogValue
// show SMTP_URL with the password replaced (url.URL.Redacted), never the
// password itself.
type SMTPConfig struct {
	Host string
	Port int
	// Security is how the connection is encrypted: STARTTLS required (the
	// default for smtp://), opportunistic or none (?starttls=...), or
	// implicit TLS (smtps://).
	Security smtpSecurity
	// Username and password authenticate (SMTP AUTH) when Username is set;
	// the password comes from SMTP_URL or SMTP_PASSWORD_FILE. Unexported,
	// so that neither fmt nor encoding/json can print it.
	Username string
	password string
	// From is MAIL_FROM, the sender.
	From *mail.Address
	// Timeout is SMTP_TIMEOUT: go-mail's bound on connecting and on each
	// phase of the SMTP conversation. The whole send is bounded anyway by
	// the email-service's send bound (half of EMAIL_SEND_LEASE), its default.
	Timeout time.Duration
	// RootCAs verify the server's certificate: the system's, plus those of
	// SMTP_CA_FILE when set (a private CA); nil means the system's only.
	RootCAs *x509.CertPool
	// Templates are the welcome email's, embedded or from MAIL_TEMPLATES_DIR.
	Templates *welcomeTemplates

	redactedURL string
	caFile      string
}

// smtpSecurity says how the SMTP connection is encrypted.
type smtpSecurity int

const (
	startTLSRequired      smtpSecurity = iota // smtp://, or ?starttls=required
	startTLSOpportunistic                     // ?starttls=opportunistic: STARTTLS if offered
	startTLSNone                              // ?starttls=none: plain text, for a local sink such as Mailpit
	implicitTLS                               // smtps://
)

func (s smtpSecurity) String() string {
	switch s {
	case startTLSRequired:
		return "starttls=required"
	case startTLSOpportunistic:
		return "starttls=opportunistic"
	case startTLSNone:
		return "starttls=none"
	case implicitTLS:
		return "implicit TLS"
	}
	return fmt.Sprintf("smtpSecurity(%d)", int(s))
}

// String is SMTP_URL with its password redacted.
func (c SMTPConfig) String() string { return c.redactedURL }

// GoString keeps %#v from printing the password.
func (c SMTPConfig) GoString() string { return "SMTPConfig(" + c.redactedURL + ")" }

// MarshalText is what encoding/json (and so slog's JSON handler, given a
// Config) writes: the redacted URL.
func (c SMTPConfig) MarshalText() ([]byte, error) { return []byte(c.redactedURL), nil }

// LogValue is what slog prints for the configuration.
func (c SMTPConfig) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("url", c.redactedURL),
		slog.String("security", c.Security.String()),
		slog.String("from", c.From.String()),
		slog.String("timeout", c.Timeout.String()),
	}
	if c.caFile != "" {
		attrs = append(attrs, slog.String("ca_file", c.caFile))
	}
	if c.Templates != nil && len(c.Templates.overridden) > 0 {
		attrs = append(attrs, slog.Any("templates", c.Templates.overridden))
	}
	return slog.GroupValue(attrs...)
}

// smtpOnlyVariables mean nothing without SMTP_URL.
var smtpOnlyVariables = []string{"MAIL_FROM", "MAIL_TEMPLATES_DIR", "SMTP_PASSWORD_FILE", "SMTP_TIMEOUT", "SMTP_CA_FILE"}

const smtpURLForms = "want smtp://[user[:password]@]host[:port][?starttls=required|opportunistic|none] or smtps://[user[:password]@]host[:port]"

// loadSMTPConfig reads SMTP_URL and the variables that go with it; nil when
// SMTP_URL is unset. sendLease is EMAIL_SEND_LEASE: a send gets half of it.
// No error shows SMTP_URL's value, which may hold a password.
func loadSMTPConfig(getenv func(string) string, sendLease time.Duration) (*SMTPConfig, error) {
	raw := getenv("SMTP_URL")
	if raw == "" {
		for _, v := range smtpOnlyVariables {
			if getenv(v) != "" {
				return nil, fmt.Errorf("%s is set but SMTP_URL is not: without SMTP_URL the email-service only logs its emails", v)
			}
		}
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's errors quote parts of the value, the password's too.
		return nil, fmt.Errorf("SMTP_URL: not a valid URL (value not shown: it may hold a password; percent-encode special characters, or use SMTP_PASSWORD_FILE); %s", smtpURLForms)
	}
	c := &SMTPConfig{redactedURL: u.Redacted()}
	switch u.Scheme {
	case "smtp":
		c.Security, c.Port = startTLSRequired, 587
	case "smtps":
		c.Security, c.Port = implicitTLS, 465
	default:
		return nil, fmt.Errorf("SMTP_URL=%s: scheme %q; %s", c.redactedURL, u.Scheme, smtpURLForms)
	}
	if u.Opaque != "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.Fragment != "" {
		return nil, fmt.Errorf("SMTP_URL=%s: %s", c.redactedURL, smtpURLForms)
	}
	c.Host = u.Hostname()
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("SMTP_URL=%s: port %q: want 1 to 65535", c.redactedURL, p)
		}
		c.Port = n
	}
	for k, vs := range u.Query() {
		if k != "starttls" || len(vs) != 1 {
			return nil, fmt.Errorf("SMTP_URL=%s: query %q: only one starttls=required|opportunistic|none is known", c.redactedURL, k)
		}
		if c.Security == implicitTLS {
			return nil, fmt.Errorf("SMTP_URL=%s: starttls is for smtp://; smtps:// is TLS from the start", c.redactedURL)
		}
		switch vs[0] {
		case "required":
			c.Security = startTLSRequired
		case "opportunistic":
			c.Security = startTLSOpportunistic
		case "none":
			c.Security = startTLSNone
		default:
			return nil, fmt.Errorf("SMTP_URL=%s: starttls=%q: want required, opportunistic or none", c.redactedURL, vs[0])
		}
	}

	hasPassword := false
	if u.User != nil {
		c.Username = u.User.Username()
		c.password, hasPassword = u.User.Password()
	}
	if file := getenv("SMTP_PASSWORD_FILE"); file != "" {
		if hasPassword {
			return nil, errors.New("SMTP_PASSWORD_FILE is set and SMTP_URL holds a password: give only one")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("SMTP_PASSWORD_FILE: %w", err)
		}
		c.password = strings.TrimRight(string(b), "\r\n")
		if c.password == "" {
			return nil, fmt.Errorf("SMTP_PASSWORD_FILE=%q: the file is empty", file)
		}
		hasPassword = true
	}
	switch {
	case c.Username == "" && hasPassword:
		return nil, fmt.Errorf("SMTP_URL=%s: a password needs a user (smtp://user@host, the password in the URL or SMTP_PASSWORD_FILE)", c.redactedURL)
	case c.Username != "" && !hasPassword:
		return nil, fmt.Errorf("SMTP_URL=%s: user %q has no password: put it in the URL or in SMTP_PASSWORD_FILE", c.redactedURL, c.Username)
	case hasPassword && c.Security == startTLSNone:
		return nil, fmt.Errorf("SMTP_URL=%s: starttls=none would send the password unencrypted; use STARTTLS or smtps://", c.redactedURL)
	}

	v := getenv("MAIL_FROM")
	if v == "" {
		return nil, errors.New("MAIL_FROM: required with SMTP_URL, e.g. 'Shippy <welcome@example.com>'")
	}
	if c.From, err = mail.ParseAddress(v); err != nil {
		return nil, fmt.Errorf("MAIL_FROM=%q: want an RFC 5322 address such as 'Shippy <welcome@example.com>': %w", v, err)
	}

	sendBound := sendTimeout(sendLease)
	c.Timeout = sendBound
	if v := getenv("SMTP_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("SMTP_TIMEOUT=%q: want a positive duration, e.g. 3s", v)
		}
		if d > sendBound {
			return nil, fmt.Errorf("SMTP_TIMEOUT=%s: want at most %s, half of EMAIL_SEND_LEASE (%s), which bounds a whole send", d, sendBound, sendLease)
		}
		c.Timeout = d
	}

	if file := getenv("SMTP_CA_FILE"); file != "" {
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("SMTP_CA_FILE: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("SMTP_CA_FILE=%q: no PEM certificate in it", file)
		}
		c.RootCAs, c.caFile = pool, file
	}

	dir := getenv("MAIL_TEMPLATES_DIR")
	if c.Templates, err = loadWelcomeTemplates(dir); err != nil {
		if dir == "" {
			return nil, fmt.Errorf("embedded templates: %w", err)
		}
		return nil, fmt.Errorf("MAIL_TEMPLATES_DIR=%q: %w", dir, err)
	}
	return c, nil
}

// parseBackoff reads a comma-separated list of positive durations.
func parseBackoff(v string) ([]time.Duration, error) {
	parts := strings.Split(v, ",")
	if len(parts) > maxRetries {
		return nil, fmt.Errorf("want at most %d delays", maxRetries)
	}
	out := make([]time.Duration, len(parts))
	for i, p := range parts {
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("want positive durations separated by commas, e.g. 1s,30s,5m")
		}
		out[i] = d
	}
	return out, nil
}
