package servicelog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestParseFormat(t *testing.T) {
	tests := []struct {
		v       string
		want    Format
		wantErr bool
	}{
		{"json", JSON, false},
		{"JSON", JSON, false},
		{"text", Text, false},
		{" text ", Text, false},
		{"", DefaultFormat(), false},
		{"logfmt", "", true},
	}
	for _, tt := range tests {
		got, err := ParseFormat(tt.v)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q, error %v", tt.v, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "LOG_FORMAT") {
			t.Errorf("ParseFormat(%q) error %q does not name LOG_FORMAT", tt.v, err)
		}
	}
}

func TestNew(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, JSON, slog.LevelInfo, "go.micro.srv.test").Debug("hidden")
	New(&buf, JSON, slog.LevelInfo, "go.micro.srv.test").Info("shown", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("JSON logger wrote %q: %v", buf.String(), err)
	}
	if line["msg"] != "shown" || line["service"] != "go.micro.srv.test" || line["k"] != "v" {
		t.Errorf("JSON line = %v; want msg, service and k", line)
	}
	buf.Reset()
	New(&buf, Text, slog.LevelInfo, "go.micro.srv.test").Info("shown")
	if got := buf.String(); !strings.Contains(got, "msg=shown") || !strings.Contains(got, "service=go.micro.srv.test") {
		t.Errorf("text line = %q; want key=value pairs", got)
	}
}
