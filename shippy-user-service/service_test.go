package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	natsbroker "go-micro.dev/v6/broker/nats"
	"go-micro.dev/v6/client"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/registry"
	natsregistry "go-micro.dev/v6/registry/nats"
	"go-micro.dev/v6/selector"
	"go-micro.dev/v6/transport"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/requestid"
	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// testCfg is a configuration for in-process services: fast bcrypt, a fixed
// secret.
func testCfg(codec string) Config {
	return Config{
		Micro:     microenv.Env{ServerAddress: "127.0.0.1:0", ClientRetries: -1},
		JWTSecret: []byte(testSecret), JWTTTL: time.Hour, BcryptCost: 4, EventsCodec: codec,
		AdminEmails:     []string{testAdmin},
		AuthMaxFailures: 5, AuthCallerMaxFailures: 50, AuthBackoffBase: time.Second,
		AuthBackoffMax: 15 * time.Minute, AuthFailureWindow: time.Hour, LogLevel: slog.LevelDebug,
	}
}

// testPlugins are a service's go-micro parts in a test: reg and b, and
// go-micro's http transport.
func testPlugins(reg registry.Registry, b broker.Broker) microenv.Plugins {
	return microenv.Plugins{Broker: b, Registry: reg, Transport: transport.NewHTTPTransport()}
}

// startUserService runs the user-service in-process on a random port,
// registered in the NATS registry at natsURL and publishing on the NATS
// broker there, and waits until it is registered.
func startUserService(t testing.TB, cfg Config, store *Store, natsURL string, log *slog.Logger) *userService {
	t.Helper()
	svc, err := newService(cfg, store, log, testPlugins(
		natsregistry.NewNatsRegistry(registry.Addrs(natsURL)),
		natsbroker.NewNatsBroker(broker.Addrs(natsURL))))
	if err != nil {
		t.Fatalf("newService = %v", err)
	}
	serveInBackground(t, svc)
	waitRegistered(t, natsURL, serviceName)
	return svc
}

// serveInBackground runs svc.serve, as main does, until stop is called or
// the test ends; stop returns serve's error.
func serveInBackground(t testing.TB, svc *userService) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- svc.serve(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second): // a hang guard, not a timing assertion
				err = errors.New("serve did not return within 30s of its context's end")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop user-service: %v", err)
		}
	})
	return stop
}

// waitRegistered polls a registry of its own, as another process would,
// until name has a node. Asking through a client first would cache the
// miss for 5 s.
func waitRegistered(t testing.TB, natsURL, name string) {
	t.Helper()
	reg := natsregistry.NewNatsRegistry(registry.Addrs(natsURL))
	deadline := time.Now().Add(15 * time.Second)
	for {
		svcs, err := reg.GetService(name)
		if err == nil && len(svcs) > 0 && len(svcs[0].Nodes) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not registered within 15s (last error: %v)", name, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not a stand-in for the condition
	}
}

// newUserClient is the generated client as a separate program (the CLI)
// would build it: its own registry connection.
func newUserClient(natsURL string) pb.UserService {
	return newUserClientOn(natsregistry.NewNatsRegistry(registry.Addrs(natsURL)))
}

// newUserClientOn is the generated client looking the service up in reg,
// through a selector of its own. Every test client is built here:
// client.NewClient defaults to go-micro's process-wide selector, which
// client.Registry re-points, so parallel tests on different registries
// would look each other's services up ("service ...: not found").
func newUserClientOn(reg registry.Registry, opts ...client.Option) pb.UserService {
	sel := selector.NewSelector(selector.Registry(reg))
	// The selector first: client.Registry re-points the one set by then.
	c := client.NewClient(append([]client.Option{client.Selector(sel), client.Registry(reg)}, opts...)...)
	return pb.NewUserService(serviceName, c)
}

func microCode(err error) int32 {
	if err == nil {
		return 0
	}
	return merrors.FromError(err).Code
}

func TestServiceThroughGeneratedClient(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			natsURL := natstest.Start(t).URL()
			logs := &logbuf.Buffer{}
			startUserService(t, testCfg(codecProto), store, natsURL,
				slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			users := newUserClient(natsURL)
			ctx := context.Background()
			const password = "correct horse battery"

			created, err := users.Create(ctx, &pb.User{Name: "Ada Lovelace", Company: "Analytical", Email: "Ada@Example.com", Password: password})
			if err != nil {
				t.Fatalf("Create = %v; want nil", err)
			}
			if created.User.GetId() == "" || created.User.Email != "ada@example.com" || created.User.Password != "" || created.Token.GetToken() == "" {
				t.Fatalf("Create = %v; want a user with id, lower-cased email, no password, and a token", created)
			}
			id := created.User.Id
			// Reads need a token: Ada's own (from Create) and an admin's.
			asAda := tokenauth.BearerContext(ctx, created.Token.GetToken())
			if _, err := users.Create(ctx, &pb.User{Name: "Root", Email: testAdmin, Password: password}); err != nil {
				t.Fatalf("Create(admin) = %v", err)
			}
			adminTok, err := users.Auth(ctx, &pb.User{Email: testAdmin, Password: password})
			if err != nil {
				t.Fatalf("Auth(admin) = %v", err)
			}
			asAdmin := tokenauth.BearerContext(ctx, adminTok.GetToken())

			tests := []struct {
				name     string
				call     func() (any, error)
				wantCode int32
			}{
				{"Create invalid email", func() (any, error) {
					return users.Create(ctx, &pb.User{Name: "X", Email: "not-an-email", Password: password})
				}, 400},
				{"Create short password", func() (any, error) {
					return users.Create(ctx, &pb.User{Name: "X", Email: "x@example.com", Password: "short"})
				}, 400},
				{"Create duplicate in other case", func() (any, error) {
					return users.Create(ctx, &pb.User{Name: "X", Email: "ADA@example.COM", Password: password})
				}, 409},
				{"Get", func() (any, error) { return users.Get(asAda, &pb.User{Id: id}) }, 0},
				{"Get without token", func() (any, error) { return users.Get(ctx, &pb.User{Id: id}) }, 401},
				{"Get unknown", func() (any, error) { return users.Get(asAdmin, &pb.User{Id: "00000000-0000-4000-8000-000000000000"}) }, 404},
				{"GetAll", func() (any, error) { return users.GetAll(asAdmin, &pb.Request{}) }, 0},
				{"GetAll not admin", func() (any, error) { return users.GetAll(asAda, &pb.Request{}) }, 403},
				{"Auth", func() (any, error) { return users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: password}) }, 0},
				{"Auth wrong password", func() (any, error) {
					return users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: "wrong password"})
				}, 401},
				{"Auth unknown email", func() (any, error) { return users.Auth(ctx, &pb.User{Email: "nobody@example.com", Password: password}) }, 401},
				{"ValidateToken", func() (any, error) { return users.ValidateToken(ctx, &pb.Token{Token: created.Token.Token}) }, 0},
				{"ValidateToken tampered", func() (any, error) {
					return users.ValidateToken(ctx, &pb.Token{Token: created.Token.Token + "x"})
				}, 401},
			}
			var bodies []string
			for _, tt := range tests {
				res, err := tt.call()
				if got := microCode(err); got != tt.wantCode {
					t.Errorf("%s = %v; want code %d", tt.name, err, tt.wantCode)
				}
				if err != nil {
					if me := merrors.FromError(err); me.Id != serviceName || me.Detail == "" {
						t.Errorf("%s error = %+v; want id %s and a message", tt.name, me, serviceName)
					}
				}
				b, _ := json.Marshal(res)
				bodies = append(bodies, string(b), errString(err))
			}

			got, _ := users.Get(asAda, &pb.User{Id: id})
			if got.GetUser().GetName() != "Ada Lovelace" {
				t.Errorf("Get(%s) = %v; want Ada Lovelace", id, got)
			}
			all, _ := users.GetAll(asAdmin, &pb.Request{})
			if len(all.GetUsers()) != 2 {
				t.Errorf("GetAll = %v; want Ada and the admin", all)
			}
			tok, _ := users.Auth(ctx, &pb.User{Email: "ADA@example.com", Password: password})
			valid, err := users.ValidateToken(ctx, &pb.Token{Token: tok.GetToken()})
			if err != nil || !valid.Valid {
				t.Errorf("ValidateToken(Auth's token) = %v, %v; want valid", valid, err)
			}

			// The throttle is visible to callers as 429. The successful Auth
			// above cleared the earlier failure.
			for range 5 {
				_, _ = users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: "wrong password"})
			}
			_, err = users.Auth(ctx, &pb.User{Email: "ada@example.com", Password: password})
			if microCode(err) != 429 || !strings.Contains(err.Error(), "too many failed attempts") {
				t.Errorf("Auth after 5 failures = %v; want 429 too many failed attempts", err)
			}

			bodies = append(bodies, logs.String())
			for _, s := range bodies {
				if strings.Contains(s, password) || hashPattern.MatchString(s) {
					t.Errorf("password or hash leaked in: %s", s)
				}
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// received is what a subscriber saw: the decoded event and the raw message.
type received struct {
	mu     sync.Mutex
	events []*pb.UserCreated
	raw    []*broker.Message
}

func (r *received) find(userID string) (*pb.UserCreated, *broker.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ev *pb.UserCreated
	var raw *broker.Message
	for _, e := range r.events {
		if e.Id == userID {
			ev = e
		}
	}
	for _, m := range r.raw {
		if strings.Contains(string(m.Body), userID) || m.Header[headerUserID] == userID {
			raw = m
		}
	}
	return ev, raw
}

// Both codecs reach a go-micro subscriber taking *pb.UserCreated over a real
// NATS broker, through the outbox relay, and the raw message carries the
// documented headers.
func TestEventsReachSubscriber(t *testing.T) {
	for _, codec := range []string{codecProto, codecJSON} {
		t.Run(codec, func(t *testing.T) {
			natsURL := natstest.Start(t).URL()
			got := &received{}

			sub := micro.NewService("shippy.test.subscriber",
				micro.Registry(natsregistry.NewNatsRegistry(registry.Addrs(natsURL))),
				micro.Broker(natsbroker.NewNatsBroker(broker.Addrs(natsURL))),
				micro.Address("127.0.0.1:0"))
			err := micro.RegisterSubscriber(pb.TopicUserCreated, sub.Server(), func(_ context.Context, ev *pb.UserCreated) error {
				got.mu.Lock()
				defer got.mu.Unlock()
				got.events = append(got.events, ev)
				return nil
			})
			if err != nil {
				t.Fatalf("RegisterSubscriber = %v", err)
			}
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Stop() })

			spy := natsbroker.NewNatsBroker(broker.Addrs(natsURL))
			if err := spy.Connect(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = spy.Disconnect() })
			if _, err := spy.Subscribe(pb.TopicUserCreated, func(e broker.Event) error {
				got.mu.Lock()
				defer got.mu.Unlock()
				got.raw = append(got.raw, e.Message())
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			store := openTestStore(t, Config{Driver: driverSQLite, DSN: t.TempDir() + "/u.db"})
			svc := startUserService(t, testCfg(codec), store, natsURL, slog.New(slog.NewTextHandler(io.Discard, nil)))
			waitRegistered(t, natsURL, "shippy.test.subscriber")

			// NATS subscriptions become active asynchronously: publish probes
			// through the service's publisher until both receivers see one.
			deadline := time.Now().Add(15 * time.Second)
			for {
				if err := svc.publisher.Publish(context.Background(), &pb.UserCreated{EventId: "probe", Id: "probe"}); err != nil {
					t.Fatalf("publish probe: %v", err)
				}
				if ev, raw := got.find("probe"); ev != nil && raw != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("probe events not received within 15s")
				}
				time.Sleep(50 * time.Millisecond) // poll interval
			}

			const password = "correct horse battery"
			const reqID = "cli-0af7651916cd43dd"
			res, err := newUserClient(natsURL).Create(requestid.Outgoing(context.Background(), reqID),
				&pb.User{Name: "Ada", Company: "Acme", Email: "ada@example.com", Password: password})
			if err != nil {
				t.Fatalf("Create = %v", err)
			}
			id := res.User.Id

			var ev *pb.UserCreated
			var raw *broker.Message
			deadline = time.Now().Add(15 * time.Second)
			for ev == nil || raw == nil {
				if time.Now().After(deadline) {
					t.Fatalf("event for %s not received within 15s (decoded %v, raw %v)", id, ev, raw)
				}
				time.Sleep(20 * time.Millisecond) // poll interval
				ev, raw = got.find(id)
			}

			if ev.EventId == "" || ev.Name != "Ada" || ev.Company != "Acme" || ev.Email != "ada@example.com" || ev.CreatedAtUnixMs == 0 {
				t.Errorf("decoded event = %v; want the new user's fields", ev)
			}
			body := string(raw.Body)
			if strings.Contains(body, password) || hashPattern.MatchString(body) {
				t.Errorf("event body holds the password or a hash: %q", body)
			}
			wantCT := map[string]string{codecProto: "application/protobuf", codecJSON: "application/json"}[codec]
			if ct := raw.Header["Content-Type"]; ct != wantCT {
				t.Errorf("Content-Type = %q; want %q", ct, wantCT)
			}
			if topic := raw.Header["Micro-Topic"]; topic != pb.TopicUserCreated {
				t.Errorf("Micro-Topic = %q; want %q", topic, pb.TopicUserCreated)
			}
			// Both codecs carry the event id the JetStream broker dedupes by.
			if raw.Header[jsbroker.HeaderEventID] != ev.EventId {
				t.Errorf("headers = %v; want %s=%s", raw.Header, jsbroker.HeaderEventID, ev.EventId)
			}
			// And the id of the Create that made the event.
			if raw.Header[requestid.Header] != reqID {
				t.Errorf("headers = %v; want %s=%s", raw.Header, requestid.Header, reqID)
			}
			if codec == codecJSON {
				if raw.Header[headerUserID] != id {
					t.Errorf("headers = %v; want %s=%s", raw.Header, headerUserID, id)
				}
				var m map[string]any
				// The keys encoding/json reads into the tutorial's User, and ours.
				if err := json.Unmarshal(raw.Body, &m); err != nil || m["id"] != id || m["name"] != "Ada" ||
					m["company"] != "Acme" || m["email"] != "ada@example.com" || m["event_id"] != ev.EventId {
					t.Errorf("JSON body = %s (%v); want proto field names id, name, company, email, event_id", body, err)
				}
				if _, ok := m["password"]; ok {
					t.Errorf("JSON body = %s; want no password key", body)
				}
			}
		})
	}
}
