package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/requestid"
	"github.com/shippy/shippy/internal/servicelog"
	pb "github.com/shippy/shippy/proto/user"
)

// logLines are a service's JSON log lines.
type logLines []map[string]any

func parseLogLines(t *testing.T, s string) logLines {
	t.Helper()
	var out logLines
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		out = append(out, m)
	}
	return out
}

// with returns the lines whose msg is msg.
func (ls logLines) with(msg string) logLines {
	var out logLines
	for _, l := range ls {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// Every line the user-service logs about a request carries its id: the
// caller's, or one the service made; refusals by the token check too. The
// id goes into the outbox row, and the relay's line names it.
func TestRequestIDInLogsAndOutbox(t *testing.T) {
	natsURL := natstest.Start(t).URL()
	store := openTestStore(t, Config{Driver: driverSQLite, DSN: t.TempDir() + "/u.db"})
	logs := &logbuf.Buffer{}
	log := servicelog.New(logs, servicelog.JSON, slog.LevelDebug, serviceName)
	startUserService(t, testCfg(codecProto), store, natsURL, log)
	users := newUserClient(natsURL)
	ctx := context.Background()

	const createID, refusedID = "test-create-0af7651916cd43dd", "test-refused-1"
	res, err := users.Create(requestid.Outgoing(ctx, createID),
		&pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse battery"})
	if err != nil {
		t.Fatalf("Create = %v", err)
	}
	if _, err := users.GetAll(requestid.Outgoing(ctx, refusedID), &pb.Request{}); microCode(err) != 401 {
		t.Fatalf("GetAll without a token = %v; want 401", err)
	}
	// No id sent, and a bad one: the service makes one for each.
	_, _ = users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: "wrong password"})
	_, _ = users.Auth(requestid.Outgoing(ctx, "forged\n{\"msg\":\"x\"}"), &pb.User{Email: "ada@example.com", Password: "wrong password"})

	var rows []outbox.Event
	if err := store.db.Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].RequestID == nil || *rows[0].RequestID != createID {
		t.Errorf("outbox rows = %+v; want one with request_id %q", rows, createID)
	}

	// The relay publishes right after the commit; its line comes then.
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(logs.String(), `"outbox event published"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no 'outbox event published' line within 15s:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}

	lines := parseLogLines(t, logs.String())
	wantOne := func(msg, id string) map[string]any {
		t.Helper()
		got := lines.with(msg)
		if len(got) != 1 || got[0][requestid.LogKey] != id {
			t.Errorf("%q lines = %v; want one with request_id %q", msg, got, id)
			return nil
		}
		return got[0]
	}
	if l := wantOne("user created", createID); l != nil && l["user_id"] != res.User.Id {
		t.Errorf("user created line = %v; want user_id %s", l, res.User.Id)
	}
	wantOne("outbox event published", createID)
	wantOne("request refused", refusedID)
	failed := lines.with("auth failed")
	if len(failed) != 2 {
		t.Fatalf("auth failed lines = %v; want 2", failed)
	}
	made := map[string]bool{}
	for _, l := range failed {
		id, _ := l[requestid.LogKey].(string)
		if len(id) != 16 || !requestid.Valid(id) {
			t.Errorf("auth failed line %v; want a request_id the service made", l)
		}
		made[id] = true
	}
	if len(made) != 2 {
		t.Errorf("two requests without a usable id got ids %v; want one each", made)
	}
	if strings.Contains(logs.String(), "forged") {
		t.Errorf("a bad request id reached the log:\n%s", logs)
	}
}
