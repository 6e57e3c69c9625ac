package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// BenchmarkCreateInProcess runs Create through the generated client against
// the service in this process, on PostgreSQL at bcrypt cost 10, so that one
// CPU profile shows what Create adds to the hash (BENCH.md, pair 1):
//
//	go test -run '^$' -bench CreateInProcess -cpuprofile cpu.out ./shippy-user-service/
//	go tool pprof -top cpu.out
func BenchmarkCreateInProcess(b *testing.B) {
	cfg := testCfg(codecProto)
	cfg.Driver, cfg.DSN, cfg.BcryptCost = driverPostgres, pgtest.NewDatabase(b), bcrypt.DefaultCost
	store := openTestStore(b, cfg)
	ns := natstest.Start(b)
	startUserService(b, cfg, store, ns.URL(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	users := newUserClient(ns.URL())
	ctx := context.Background()

	var n, failed atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			i := n.Add(1)
			_, err := users.Create(ctx, &pb.User{
				Name: "Bench", Email: fmt.Sprintf("bench.%d@example.com", i), Password: "correct horse battery",
			})
			if err != nil {
				failed.Add(1)
			}
		}
	})
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d Creates failed", f, n.Load())
	}
}
