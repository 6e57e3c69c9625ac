package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/shippy/shippy/internal/jsbroker"
)

// Config is the email-service's own configuration. go-micro's MICRO_*
// variables (broker, registry, transport) are read by go-micro itself
// through internal/microenv; MICRO_BROKER and MICRO_BROKER_ADDRESS are also
// read here to find the JetStream the sent log lives in.
type Config struct {
	// LogLevel is LOG_LEVEL: debug, info (default), warn or error.
	LogLevel slog.Level
	// Queue is EMAIL_QUEUE, the queue group replicas share so that each
	// event is handled once, not once per replica.
	Queue string
	// SentNATS is where the ids of sent events are recorded: with
	// MICRO_BROKER=jetstream, the NATS URL(s) of MICRO_BROKER_ADDRESS
	// (default nats://127.0.0.1:4222), shared by all replicas; otherwise
	// empty, and each replica remembers them in memory.
	SentNATS string
	// SentBucket is EMAIL_SENT_BUCKET, the JetStream key-value bucket of
	// sent event ids (default shippy_email_sent).
	SentBucket string
	// SendLease is EMAIL_SEND_LEASE (default 10s): how long a delivery that
	// is sending an event's email keeps other deliveries of it waiting; the
	// send may take half of it. On the JetStream broker it must be shorter
	// than the broker's delay before a message's last delivery (15s), or a
	// claim left by a replica that died could outlast the redeliveries and
	// the event be dead-lettered unsent.
	SendLease time.Duration
}

const (
	defaultQueue      = "go.micro.srv.email"
	defaultSentBucket = "shippy_email_sent"
	defaultNATSURL    = "nats://127.0.0.1:4222"
)

var bucketName = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// LoadConfig reads the configuration once; getenv is os.Getenv outside tests.
func LoadConfig(getenv func(string) string) (Config, error) {
	cfg := Config{LogLevel: slog.LevelInfo, Queue: defaultQueue, SentBucket: defaultSentBucket, SendLease: defaultSendLease}
	if v := getenv("LOG_LEVEL"); v != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return Config{}, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", v)
		}
	}
	if v := getenv("EMAIL_QUEUE"); v != "" {
		// NATS refuses queue names with spaces or wildcards, and would do so
		// only at subscribe time, after the service had started.
		if strings.ContainsAny(v, " \t\r\n*>") {
			return Config{}, fmt.Errorf("EMAIL_QUEUE=%q: want a queue name without spaces or wildcards", v)
		}
		cfg.Queue = v
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
	if getenv("MICRO_BROKER") == "jetstream" {
		// MICRO_BROKER=jetstream builds the broker with its default retry
		// schedule, which the lease must fit in (see defaultSendLease).
		if limit := jsbroker.DefaultFinalRetryDelay; cfg.SendLease >= limit {
			return Config{}, fmt.Errorf("EMAIL_SEND_LEASE=%s: want less than %s with MICRO_BROKER=jetstream (its delay before an event's last delivery), or an event claimed by a replica that died could be dead-lettered unsent", cfg.SendLease, limit)
		}
		cfg.SentNATS = defaultNATSURL
		if v := getenv("MICRO_BROKER_ADDRESS"); v != "" {
			if err := checkNATSURLs(v); err != nil {
				return Config{}, fmt.Errorf("MICRO_BROKER_ADDRESS=%q: %w", v, err)
			}
			cfg.SentNATS = v
		}
	}
	return cfg, nil
}

// checkNATSURLs accepts what nats.Connect does: comma-separated URLs, the
// scheme optional (nats:// is assumed).
func checkNATSURLs(v string) error {
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if !strings.Contains(a, "://") {
			a = "nats://" + a
		}
		u, err := url.Parse(a)
		if err != nil || u.Host == "" {
			return fmt.Errorf("want NATS URLs such as nats://host:4222, comma-separated")
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("scheme %q: want nats, tls, ws or wss", u.Scheme)
		}
	}
	return nil
}
