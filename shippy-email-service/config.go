package main

import (
	"fmt"
	"log/slog"
	"strings"
)

// Config is the email-service's own configuration. go-micro's MICRO_*
// variables (broker, registry, transport) are read by go-micro itself
// through internal/microenv.
type Config struct {
	// LogLevel is LOG_LEVEL: debug, info (default), warn or error.
	LogLevel slog.Level
	// Queue is EMAIL_QUEUE, the queue group replicas share so that each
	// event is handled once, not once per replica.
	Queue string
}

const defaultQueue = "go.micro.srv.email"

// LoadConfig reads the configuration once; getenv is os.Getenv outside tests.
func LoadConfig(getenv func(string) string) (Config, error) {
	cfg := Config{LogLevel: slog.LevelInfo, Queue: defaultQueue}
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
	return cfg, nil
}
