package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/pgtest"
	"github.com/shippy/shippy/internal/tcptap"
	pb "github.com/shippy/shippy/proto/user"
)

// startReplica runs one user-service on the database at dsn, as a replica
// of its own (own store pool, registry and broker), and returns the
// address its RPC server listens on.
func startReplica(t *testing.T, cfg Config, dsn string) string {
	t.Helper()
	cfg.Driver, cfg.DSN = driverPostgres, dsn
	store := openTestStore(t, cfg)
	reg := registry.NewMemoryRegistry()
	svc, err := newService(cfg, store, discardLog,
		microenv.Plugins{Broker: broker.NewMemoryBroker(), Registry: reg, Transport: transport.NewHTTPTransport()})
	if err != nil {
		t.Fatalf("newService = %v", err)
	}
	serveInBackground(t, svc)
	waitNodes(t, reg, 1)
	svcs, err := reg.GetService(serviceName)
	if err != nil || len(svcs) == 0 || len(svcs[0].Nodes) == 0 {
		t.Fatalf("replica not in its registry: %v", err)
	}
	return svcs[0].Nodes[0].Address
}

// Two replicas on one PostgreSQL database share the throttle: an attacker
// alternating between them gets exactly the guesses one replica allows,
// per email and across emails, while the owner, from another address, logs
// in through both during the attack.
func TestThrottleSharedByTwoReplicas(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	cfg := testCfg(codecProto)
	// No wait ends during the test: every refusal is the count's doing.
	cfg.AuthMaxFailures, cfg.AuthCallerMaxFailures = 5, 12
	cfg.AuthBackoffBase, cfg.AuthBackoffMax, cfg.AuthFailureWindow = time.Hour, 2*time.Hour, 4*time.Hour
	replicas := []string{startReplica(t, cfg, dsn), startReplica(t, cfg, dsn)}
	// What got through to bcrypt, as the throttle's table records it: an
	// answer lost to go-micro's occasional 5 s transport stall (a 408) does
	// not hide an attempt from it.
	db := openTestStore(t, Config{Driver: driverPostgres, DSN: dsn}).db
	counted := func(scope, key string) int64 {
		var row authAttempt
		if err := db.Where("scope = ? AND attempt_key = ?", scope, key).Take(&row).Error; err != nil {
			t.Fatalf("auth_attempts %s %s: %v", scope, key, err)
		}
		return row.Failures
	}
	// The owner's connections come from 127.0.0.2, the attacker's from
	// 127.0.0.1.
	owner := []string{
		tcptap.Start(t, replicas[0], tcptap.DialFrom("127.0.0.2")).Addr(),
		tcptap.Start(t, replicas[1], tcptap.DialFrom("127.0.0.2")).Addr(),
	}
	users := pb.NewUserService(serviceName, microenv.Env{ClientRetries: -1}.NewClient(
		microenv.Plugins{Broker: broker.NewMemoryBroker(), Registry: registry.NewMemoryRegistry(), Transport: transport.NewHTTPTransport()},
		client.Retries(0), client.RequestTimeout(10*time.Second)))
	ctx := context.Background()
	const password = "correct horse battery"
	if _, err := users.Create(ctx, &pb.User{Name: "Ada", Email: "ada@example.com", Password: password}, client.WithAddress(replicas[0])); err != nil {
		t.Fatalf("Create = %v", err)
	}
	// auth answers 0, 401 or 429, or 408 when the answer was lost (the
	// client does not retry: a retry would be another attempt).
	auth := func(addr, email, pw string) int32 {
		_, err := users.Auth(ctx, &pb.User{Email: email, Password: pw}, client.WithAddress(addr))
		switch c := microCode(err); c {
		case 0, 401, 429:
			return c
		case 408:
			t.Logf("Auth via %s: answer lost (%v)", addr, err)
			return c
		default:
			t.Fatalf("Auth via %s = %v; want 0, 401 or 429", addr, err)
			return c
		}
	}
	// owns signs the owner in through addr, again if the answer was lost.
	owns := func(addr string) int32 {
		for range 3 {
			if c := auth(addr, "ada@example.com", password); c != 408 {
				return c
			}
		}
		return 408
	}

	// 20 wrong passwords for Ada, alternating replicas: 5 reach bcrypt
	// (401), as on one replica; the rest wait (429).
	got := map[int32]int{}
	for i := range 20 {
		got[auth(replicas[i%2], "ada@example.com", fmt.Sprintf("guess %d", i))]++
		if i == 9 {
			// The owner, mid-attack, through either replica.
			for r, addr := range owner {
				if c := owns(addr); c != 0 {
					t.Errorf("the owner's Auth via replica %d during the attack = code %d; want success", r, c)
				}
			}
		}
	}
	if n := counted(scopeEmailCaller, "127.0.0.1|ada@example.com"); n != int64(cfg.AuthMaxFailures) {
		t.Errorf("20 wrong passwords over 2 replicas: %d reached bcrypt; want %d, one replica's allowance", n, cfg.AuthMaxFailures)
	}
	if got[401] > cfg.AuthMaxFailures || got[401]+got[408] < cfg.AuthMaxFailures || got[429]+got[408] < 20-cfg.AuthMaxFailures {
		t.Errorf("20 wrong passwords over 2 replicas answered %v; want %d x 401 and %d x 429 (408: answer lost)",
			got, cfg.AuthMaxFailures, 20-cfg.AuthMaxFailures)
	}
	// The right password from the attacker's address waits too (a NAT or
	// proxy in front makes every caller that address).
	if c := auth(replicas[1], "ada@example.com", password); c != 429 && c != 408 {
		t.Errorf("the right password from the attacker's address = code %d; want 429", c)
	}

	// Across emails: a fresh address (the attacker's is past its 12 by
	// now) sprays one guess at each of 20 emails over both replicas.
	sprayer := []string{
		tcptap.Start(t, replicas[0], tcptap.DialFrom("127.0.0.3")).Addr(),
		tcptap.Start(t, replicas[1], tcptap.DialFrom("127.0.0.3")).Addr(),
	}
	got = map[int32]int{}
	for i := range 20 {
		got[auth(sprayer[i%2], fmt.Sprintf("user%d@example.com", i), "Summer2026!")]++
	}
	if n := counted(scopeCaller, "127.0.0.3"); n != int64(cfg.AuthCallerMaxFailures) {
		t.Errorf("20 guesses on 20 emails from one address over 2 replicas: %d reached bcrypt; want %d", n, cfg.AuthCallerMaxFailures)
	}
	if got[401] > cfg.AuthCallerMaxFailures || got[401]+got[408] < cfg.AuthCallerMaxFailures || got[429]+got[408] < 20-cfg.AuthCallerMaxFailures {
		t.Errorf("20 guesses on 20 emails from one address over 2 replicas answered %v; want %d x 401 and %d x 429 (408: answer lost)",
			got, cfg.AuthCallerMaxFailures, 20-cfg.AuthCallerMaxFailures)
	}
	for r, addr := range owner {
		if c := owns(addr); c != 0 {
			t.Errorf("the owner's Auth via replica %d after the spray = code %d; want success", r, c)
		}
	}
}
