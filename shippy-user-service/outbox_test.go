package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/pgtest"
	"github.com/shippy/shippy/internal/poll"
	pb "github.com/shippy/shippy/proto/user"
)

// The tests here run the user-service on the JetStream broker, as
// docker-compose.yml does, and read what reached the broker from the stream
// itself. The registry is in memory so that RPCs keep working while the NATS
// server is down.

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// jsService is a user-service serving in the background on its own
// JetStream broker connection, as one replica, registered in its own
// in-memory registry (replicas in one process share go-micro's node id).
type jsService struct {
	*userService
	broker *jsbroker.Broker
	reg    registry.Registry
	stop   func() error
}

// startJetStreamService starts a replica and waits until it serves.
func startJetStreamService(t *testing.T, store *Store, natsURL string, log *slog.Logger) *jsService {
	t.Helper()
	reg := registry.NewMemoryRegistry()
	b := jsbroker.New(broker.Addrs(natsURL), jsbroker.ReconnectWait(50*time.Millisecond), jsbroker.Logger(discardLog))
	svc, err := newService(testCfg(codecProto), store, log, testPlugins(reg, b))
	if err != nil {
		t.Fatalf("newService = %v", err)
	}
	js := &jsService{userService: svc, broker: b, reg: reg, stop: serveInBackground(t, svc)}
	waitNodes(t, reg, 1)
	return js
}

// waitNodes polls reg until serviceName has n nodes.
func waitNodes(t *testing.T, reg registry.Registry, n int) {
	t.Helper()
	poll.Until(t, fmt.Sprintf("%s to have %d nodes", serviceName, n), 15*time.Second, func() bool {
		svcs, _ := reg.GetService(serviceName)
		got := 0
		for _, s := range svcs {
			got += len(s.Nodes)
		}
		return got == n
	})
}

// streamed is what the JetStream stream holds for user.created: how many
// messages per user id, and the events by user id.
type streamed struct {
	count  map[string]int
	events map[string]*pb.UserCreated
}

// readStream reads every user.created message from the broker's stream and
// checks that each carries its event id in the Event-Id header.
func readStream(t *testing.T, natsURL string) streamed {
	t.Helper()
	got := streamed{count: map[string]int{}, events: map[string]*pb.UserCreated{}}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect to %s: %v", natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, jsbroker.DefaultStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return got
	}
	if err != nil {
		t.Fatalf("stream %s: %v", jsbroker.DefaultStream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subject := jsbroker.DefaultSubjectPrefix + "." + pb.TopicUserCreated
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		if m.Subject != subject {
			continue
		}
		ev := &pb.UserCreated{}
		if err := proto.Unmarshal(m.Data, ev); err != nil {
			t.Fatalf("message %d: decode %s: %v", seq, pb.TopicUserCreated, err)
		}
		if h := m.Header.Get(jsbroker.HeaderEventID); h == "" || h != ev.EventId {
			t.Errorf("message %d: header %s = %q; want the event id %q", seq, jsbroker.HeaderEventID, h, ev.EventId)
		}
		got.count[ev.Id]++
		got.events[ev.Id] = ev
	}
	return got
}

// waitStreamed polls the stream until it holds an event for every user in
// ids, then checks that it holds exactly one each and nothing else.
func waitStreamed(t *testing.T, natsURL string, ids []string) streamed {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := readStream(t, natsURL)
		missing := 0
		for _, id := range ids {
			if got.count[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			for id, n := range got.count {
				if n != 1 {
					t.Errorf("stream holds %d events for user %s; want 1", n, id)
				}
			}
			if len(got.count) != len(ids) {
				t.Errorf("stream holds events for %d users; want %d", len(got.count), len(ids))
			}
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream lacks the events of %d of %d users after 30s", missing, len(ids))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// waitPublished polls until relays have counted want publishes between
// them. A relay counts a batch only after its commit, so the outbox can show
// no pending row a moment before the count catches up.
func waitPublished(t *testing.T, want uint64, relays ...*outbox.Relay) {
	t.Helper()
	poll.Until(t, fmt.Sprintf("the relays to count %d publishes", want), 30*time.Second, func() bool {
		var got uint64
		for _, r := range relays {
			got += r.Stats().Published
		}
		return got >= want
	})
}

// waitNoPending polls until the outbox has no pending row.
func waitNoPending(t *testing.T, relay *outbox.Relay) {
	t.Helper()
	poll.Until(t, "an outbox with no pending event", 30*time.Second, func() bool {
		n, err := relay.Pending(context.Background())
		return err == nil && n == 0
	})
}

func createUser(t *testing.T, users pb.UserService, i int) string {
	t.Helper()
	email := fmt.Sprintf("user%03d@example.com", i)
	res, err := users.Create(context.Background(), &pb.User{Name: fmt.Sprint("User ", i), Email: email, Password: "correct horse"})
	if err != nil {
		t.Fatalf("Create(%q) = %v; want nil", email, err)
	}
	return res.User.Id
}

// Broker down: every Create succeeds, the events wait in the outbox, and
// each is published once after the NATS server is back.
func TestCreateSucceedsWhileBrokerIsDown(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			svc := startJetStreamService(t, b.open(t), ns.URL(), discardLog)
			users := newUserClientOn(svc.reg)

			ids := []string{createUser(t, users, 0)}
			waitStreamed(t, ns.URL(), ids)

			ns.Stop()
			const n = 10
			for i := 1; i <= n; i++ {
				ids = append(ids, createUser(t, users, i))
			}
			if pending, err := svc.relay.Pending(context.Background()); err != nil || pending != n {
				t.Errorf("Pending() with the broker down = %d, %v; want %d", pending, err, n)
			}

			ns.Restart()
			got := waitStreamed(t, ns.URL(), ids)
			waitNoPending(t, svc.relay)
			waitPublished(t, n+1, svc.relay)
			if st := svc.relay.Stats(); st.Published != n+1 {
				t.Errorf("relay stats = %+v; want %d published", st, n+1)
			}
			if ev := got.events[ids[n]]; ev.GetEmail() != fmt.Sprintf("user%03d@example.com", n) || ev.GetEventId() == "" {
				t.Errorf("event for user %d = %v; want its email and an event id", n, ev)
			}
		})
	}
}

// SIGTERM while the broker is down: serve returns, the relay stops and
// leaves the event pending, and the next start publishes it once.
func TestStopWhileBrokerIsDownLosesNothing(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			store := b.open(t)
			logs := &logbuf.Buffer{}
			first := startJetStreamService(t, store, ns.URL(), slog.New(slog.NewJSONHandler(logs, nil)))

			ns.Stop()
			res := &pb.Response{}
			if err := first.handler.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse"}, res); err != nil {
				t.Fatalf("Create with the broker down = %v; want nil", err)
			}
			if err := first.stop(); err != nil {
				t.Fatalf("serve after its context ended = %v; want nil", err)
			}
			for _, line := range []string{"outbox relay started", "outbox relay stopped"} {
				if !strings.Contains(logs.String(), line) {
					t.Errorf("logs lack %q:\n%s", line, logs)
				}
			}
			if n, err := first.relay.Pending(context.Background()); err != nil || n != 1 {
				t.Fatalf("Pending() after stop = %d, %v; want 1", n, err)
			}

			ns.Restart()
			second := startJetStreamService(t, store, ns.URL(), discardLog)
			waitStreamed(t, ns.URL(), []string{res.User.Id})
			waitNoPending(t, second.relay)
		})
	}
}

// Two replicas on one PostgreSQL database: every event is published by one
// relay, once.
func TestTwoReplicasPublishEachEventOnce(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	ns := natstest.Start(t)
	// Opened one after the other: the schema migration is not safe to race.
	var replicas []*jsService
	for range 2 {
		store := openTestStore(t, Config{Driver: driverPostgres, DSN: dsn, StoreDescription: "postgres test"})
		replicas = append(replicas, startJetStreamService(t, store, ns.URL(), discardLog))
	}

	const n = 40
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &pb.Response{}
			email := fmt.Sprintf("user%03d@example.com", i)
			if err := replicas[i%2].handler.Create(context.Background(), &pb.User{Name: "U", Email: email, Password: "correct horse"}, res); err != nil {
				t.Errorf("Create(%q) = %v; want nil", email, err)
				return
			}
			ids[i] = res.User.Id
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	waitStreamed(t, ns.URL(), ids)
	waitNoPending(t, replicas[0].relay)
	waitPublished(t, n, replicas[0].relay, replicas[1].relay)
	var published, duplicates uint64
	for _, r := range replicas {
		published += r.relay.Stats().Published
		duplicates += r.broker.Stats().Duplicates
	}
	if published != n || duplicates != 0 {
		t.Errorf("relays published %d events, the stream dropped %d duplicates; want %d and 0", published, duplicates, n)
	}
}
