package natslog_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natslog"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// What nats.go would print on stderr as plain text (a permissions
// violation) and the disconnect/reconnect cycle of a server restart reach
// the logger as JSON lines, and the state follows the connection.
func TestConnectionEventsAreLogged(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte(`authorization { users = [ { user: u, password: p, permissions: { publish: { deny: ["forbidden"] } } } ] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := natstest.StartConfig(t, conf, nil)
	var logs logbuf.Buffer
	var st natslog.State
	opts := append(natslog.StateOptions(slog.New(slog.NewJSONHandler(&logs, nil)), &st),
		nats.UserInfo("u", "p"), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
	nc, err := nats.Connect(ns.URL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	poll.Until(t, "the state up after connecting", 10*time.Second, func() bool { return st.Ready(context.Background()) == nil })

	if err := nc.Publish("forbidden", []byte("x")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the permissions violation logged", 10*time.Second, func() bool { return strings.Contains(logs.String(), "Permissions Violation") })

	ns.Stop()
	poll.Until(t, "the state down", 10*time.Second, func() bool { return st.Ready(context.Background()) != nil })
	ns.Restart()
	poll.Until(t, "the reconnect logged", 10*time.Second, func() bool { return strings.Contains(logs.String(), "nats reconnected") })
	if err := st.Ready(context.Background()); err != nil {
		t.Errorf("state after the reconnect = %v; want up", err)
	}

	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		}
	}
	for _, want := range []string{`"msg":"nats error"`, `"msg":"nats disconnected; reconnecting"`, `"msg":"nats reconnected"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
}
