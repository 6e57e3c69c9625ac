package microenv

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go-micro.dev/v6/logger"
)

func TestSlogLoggerWritesOneJSONObjectPerLine(t *testing.T) {
	var buf bytes.Buffer
	l := &slogLogger{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	l.Logf(logger.InfoLevel, "Broker [%s] Connected to %s", "nats", "127.0.0.1:4222")
	l.Fields(map[string]interface{}{"service": "go.micro.srv.user"}).Log(logger.ErrorLevel, "subscriber error: ", "boom")
	l.Log(logger.DebugLevel, "below the handler's level")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("wrote %d lines %q; want 2 (debug filtered out)", len(lines), lines)
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("line %q is not JSON: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("line %q is not JSON: %v", lines[1], err)
	}
	if first["msg"] != "Broker [nats] Connected to 127.0.0.1:4222" || first["level"] != "INFO" {
		t.Errorf("first line = %v; want the formatted INFO message", first)
	}
	if second["service"] != "go.micro.srv.user" || second["level"] != "ERROR" {
		t.Errorf("second line = %v; want the field and level ERROR", second)
	}
	if got := l.Options().Level; got != logger.InfoLevel {
		t.Errorf("Options().Level = %v; want %v, the handler's lowest level", got, logger.InfoLevel)
	}
}
