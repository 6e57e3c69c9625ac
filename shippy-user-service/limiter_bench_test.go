package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// What the login throttle adds to Auth: each iteration runs Auth through
// a handler with no throttle and through one with the throttle (on SQLite,
// on PostgreSQL), back to back, at bcrypt's default cost, and the two are
// timed apart (users in memory, so only the throttle's statements differ).
// Pairing them cancels the drift of a machine shared with other work. A
// success costs 2 upserts, a delete and an update; a failure 2 upserts.
// BenchmarkThrottle is the statements alone.
//
//	go test -run '^$' -bench 'AuthThrottle|^BenchmarkThrottle' -benchtime 100x ./shippy-user-service/
func BenchmarkAuthThrottle(b *testing.B) {
	for _, backend := range throttleBackends[1:] {
		for _, outcome := range []string{"success", "failure"} {
			b.Run(backend.name+"/"+outcome, func(b *testing.B) {
				plain, throttled := benchHandler(b, noThrottle{}), benchHandler(b, backend.open(b))
				password := "correct horse"
				if outcome == "failure" {
					password = "wrong horse"
				}
				var without, with time.Duration
				b.ResetTimer()
				for i := range b.N {
					// A failure comes from a new address each time, so
					// that no wait starts.
					ctx := from(fmt.Sprintf("10.%d.%d.%d:40000", i>>16&255, i>>8&255, i&255))
					for _, h := range []*handler{plain, throttled} {
						start := time.Now()
						err := h.Auth(ctx, &pb.User{Email: "ada@example.com", Password: password}, &pb.Token{})
						if (err == nil) != (outcome == "success") {
							b.Fatalf("Auth (%s) = %v", outcome, err)
						}
						if h == plain {
							without += time.Since(start)
						} else {
							with += time.Since(start)
						}
					}
				}
				n := float64(b.N)
				b.ReportMetric(float64(without.Microseconds())/n, "us-without/auth")
				b.ReportMetric(float64(with.Microseconds())/n, "us-with/auth")
				b.ReportMetric(float64((with-without).Microseconds())/n, "us-added/auth")
				b.ReportMetric(float64(with)/float64(without), "with/without")
			})
		}
	}
}

func BenchmarkThrottle(b *testing.B) {
	for _, backend := range throttleBackends[1:] {
		l := backend.open(b)
		ctx := context.Background()
		b.Run(backend.name+"/success", func(b *testing.B) {
			for range b.N {
				if wait, err := l.Begin(ctx, "ada@example.com", "10.0.0.1"); err != nil || wait > 0 {
					b.Fatalf("Begin = %s, %v", wait, err)
				}
				if err := l.Succeeded(ctx, "ada@example.com", "10.0.0.1"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(backend.name+"/failure", func(b *testing.B) {
			for i := range b.N {
				if wait, err := l.Begin(ctx, "ada@example.com", fmt.Sprintf("10.1.%d.%d", i>>8&255, i&255)); err != nil || wait > 0 {
					b.Fatalf("Begin = %s, %v", wait, err)
				}
			}
		})
	}
}

var throttleBackends = []struct {
	name string
	open func(b *testing.B) loginThrottle
}{
	{"none", func(*testing.B) loginThrottle { return noThrottle{} }},
	{"sqlite", func(b *testing.B) loginThrottle {
		s := openTestStore(b, Config{Driver: driverSQLite, DSN: filepath.Join(b.TempDir(), "users.db")})
		return newAuthLimiter(s.db, benchThrottle, time.Now)
	}},
	{"postgres", func(b *testing.B) loginThrottle {
		s := openTestStore(b, Config{Driver: driverPostgres, DSN: pgtest.NewDatabase(b)})
		return newAuthLimiter(s.db, benchThrottle, time.Now)
	}},
}

// benchThrottle never makes a benchmark wait.
var benchThrottle = throttleConfig{perEmail: 1 << 30, perCaller: 1 << 30, base: time.Second, max: time.Minute, window: time.Hour}

func benchHandler(b *testing.B, throttle loginThrottle) *handler {
	b.Helper()
	hasher := bcryptHasher{cost: bcrypt.DefaultCost}
	h, err := newHandler(&fakeStore{}, hasher, newTokenService([]byte(testSecret), time.Hour), &countingNotifier{}, throttle, discardLog)
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse"}, &pb.Response{}); err != nil {
		b.Fatal(err)
	}
	return h
}
