package requestid

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/server"
)

func TestValid(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"0af7651916cd43dd", true},
		{"3f0d8b0e-7b9a-4c1e-9d53-2b1f0c9e8a77", true},
		{"e2e.req_1:a", true},
		{strings.Repeat("a", MaxLen), true},
		{"", false},
		{strings.Repeat("a", MaxLen+1), false},
		{"abc\ndef", false},
		{"abc\x1b[31mred", false},
		{"abc def", false},
		{`abc"def`, false},
		{"caf\u00e9", false},
		{"a=b", false},
	}
	for _, tt := range tests {
		if got := Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v; want %v", tt.id, got, tt.want)
		}
	}
}

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := New()
		if len(id) != 16 || !Valid(id) || seen[id] {
			t.Fatalf("New() = %q (seen before: %v); want 16 new hex characters", id, seen[id])
		}
		seen[id] = true
	}
}

func TestFromHeader(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		wantID string
		wantOK bool
	}{
		{"canonical", map[string]string{"X-Request-Id": "abc"}, "abc", true},
		{"lower case (NATS transport)", map[string]string{"x-request-id": "abc"}, "abc", true},
		{"upper case", map[string]string{"X-REQUEST-ID": "abc"}, "abc", true},
		{"missing", map[string]string{"Other": "abc"}, "", false},
		{"nil", nil, "", false},
		{"invalid", map[string]string{"X-Request-Id": "a b"}, "a b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := FromHeader(tt.header)
			if ok != tt.wantOK || (ok && id != tt.wantID) {
				t.Errorf("FromHeader(%v) = %q, %v; want %q, %v", tt.header, id, ok, tt.wantID, tt.wantOK)
			}
		})
	}
}

// seen is what a handler behind the wrapper found in its context.
type seen struct {
	id       string // FromContext
	metadata string // go-micro metadata under Header, as a call made with ctx sends it
	keys     int    // metadata keys spelling Header in any case
}

func wrapped(t *testing.T, md metadata.Metadata) seen {
	t.Helper()
	var s seen
	h := NewHandlerWrapper()(func(ctx context.Context, _ server.Request, _ any) error {
		s.id = FromContext(ctx)
		out, _ := metadata.FromContext(ctx)
		s.metadata = out[Header]
		for k := range out {
			if strings.EqualFold(k, Header) {
				s.keys++
			}
		}
		return nil
	})
	ctx := context.Background()
	if md != nil {
		ctx = metadata.NewContext(ctx, md)
	}
	if err := h(ctx, nil, nil); err != nil {
		t.Fatalf("wrapped handler = %v", err)
	}
	return s
}

func TestHandlerWrapper(t *testing.T) {
	tests := []struct {
		name string
		md   metadata.Metadata
		keep string // the id the handler must see; "" for a new one
	}{
		{"kept", metadata.Metadata{"X-Request-Id": "cli-1234"}, "cli-1234"},
		{"kept, lower-case key", metadata.Metadata{"x-request-id": "cli-1234"}, "cli-1234"},
		{"kept, uuid", metadata.Metadata{"X-Request-Id": "3f0d8b0e-7b9a-4c1e-9d53-2b1f0c9e8a77"}, "3f0d8b0e-7b9a-4c1e-9d53-2b1f0c9e8a77"},
		{"missing", metadata.Metadata{"Authorization": "Bearer x"}, ""},
		{"no metadata at all", nil, ""},
		{"empty", metadata.Metadata{"X-Request-Id": ""}, ""},
		{"too long", metadata.Metadata{"X-Request-Id": strings.Repeat("a", MaxLen+1)}, ""},
		{"newline (a forged log line)", metadata.Metadata{"X-Request-Id": "abc\n{\"msg\":\"user created\"}"}, ""},
		{"escape sequence", metadata.Metadata{"X-Request-Id": "abc\x1b[2J"}, ""},
		{"spaces", metadata.Metadata{"x-request-id": "drop table users"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := wrapped(t, tt.md)
			switch {
			case tt.keep != "" && s.id != tt.keep:
				t.Errorf("handler saw id %q; want the caller's %q", s.id, tt.keep)
			case tt.keep == "" && (len(s.id) != 16 || !Valid(s.id)):
				t.Errorf("handler saw id %q; want a new 16-character id", s.id)
			}
			if s.metadata != s.id || s.keys != 1 {
				t.Errorf("outgoing metadata %s = %q (%d spellings); want %q once", Header, s.metadata, s.keys, s.id)
			}
		})
	}
	if a, b := wrapped(t, nil), wrapped(t, nil); a.id == b.id {
		t.Errorf("two requests without an id both got %q; want one each", a.id)
	}
}

// fakeMessage is the part of server.Message the subscriber wrapper reads.
type fakeMessage struct {
	server.Message
	header map[string]string
}

func (m fakeMessage) Header() map[string]string { return m.header }

func TestSubscriberWrapper(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]string
		want   string
	}{
		{"kept", map[string]string{"X-Request-Id": "cli-1234", "Event-Id": "e1"}, "cli-1234"},
		{"lower-case key", map[string]string{"x-request-id": "cli-1234"}, "cli-1234"},
		{"none: none made", map[string]string{"Event-Id": "e1"}, ""},
		{"invalid: dropped", map[string]string{"X-Request-Id": "abc\ndef"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := "unset"
			h := NewSubscriberWrapper()(func(ctx context.Context, _ server.Message) error {
				got = FromContext(ctx)
				return nil
			})
			if err := h(context.Background(), fakeMessage{header: tt.header}); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("subscriber saw id %q; want %q", got, tt.want)
			}
		})
	}
}

func TestOutgoingReplacesOtherSpellings(t *testing.T) {
	ctx := metadata.NewContext(context.Background(), metadata.Metadata{"x-request-id": "old", "Authorization": "Bearer t"})
	md, _ := metadata.FromContext(Outgoing(ctx, "new"))
	if len(md) != 2 || md[Header] != "new" || md["Authorization"] != "Bearer t" {
		t.Errorf("metadata = %v; want %s=new and the token kept", md, Header)
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "test")
	ctx := NewContext(context.Background(), "abc123")

	log.InfoContext(ctx, "with id", "user_id", "u1")
	log.Info("without context")
	log.InfoContext(context.Background(), "context without id")
	log.With("component", "outbox").LogAttrs(ctx, slog.LevelWarn, "derived logger")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{"abc123", "", "", "abc123"}
	if len(lines) != len(want) {
		t.Fatalf("logged %d lines; want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		got, _ := m[LogKey].(string)
		if got != want[i] || m["service"] != "test" {
			t.Errorf("line %q: request_id = %q, service = %v; want %q, test", line, got, m["service"], want[i])
		}
	}
}
