// Package servicelog builds a service's one logger from LOG_FORMAT and
// LOG_LEVEL. A program makes it the process's default (slog.SetDefault,
// which also routes the standard log package through it) and gives it to
// go-micro (microenv.UseSlog) and to its NATS connections (natslog), so that
// every line it writes to stderr is in that one format: JSON for a log
// collector, text for a person at a terminal.
package servicelog

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/shippy/shippy/internal/requestid"
)

// Format is LOG_FORMAT.
type Format string

// Formats.
const (
	JSON Format = "json"
	Text Format = "text"
)

// ParseFormat reads LOG_FORMAT's value: json, text, or empty for the
// default (DefaultFormat). The error names the variable.
func ParseFormat(v string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(v))); f {
	case "":
		return DefaultFormat(), nil
	case JSON, Text:
		return f, nil
	}
	return "", fmt.Errorf("LOG_FORMAT=%q: want json or text", v)
}

// DefaultFormat is text when stderr is a terminal, JSON otherwise (a
// container, a file, a pipe to a collector).
func DefaultFormat() Format {
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return Text
	}
	return JSON
}

// New returns a logger writing to w in format at level and up, with the
// attribute service=service on every line, and request_id on every line
// logged with a context that carries one (internal/requestid).
func New(w io.Writer, format Format, level slog.Level, service string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == Text {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(requestid.NewLogHandler(h)).With("service", service)
}

// Exit logs err as the reason the program stops, in the format LOG_FORMAT
// asks for (the default if it is invalid: the error may be about it), and
// exits with status 1. For main, after run returned an error.
func Exit(service string, err error) {
	format, ferr := ParseFormat(os.Getenv("LOG_FORMAT"))
	if ferr != nil {
		format = DefaultFormat()
	}
	New(os.Stderr, format, slog.LevelError, service).Error("exiting", "err", err)
	os.Exit(1)
}
