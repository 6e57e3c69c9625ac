package bench

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

const (
	benchPassword = "correct horse battery staple"
	bcryptCost    = 10
)

// concurrencies are the caller counts of pairs 1 and 2.
var concurrencies = []int{2, 4, 8}

// userStack is the user-service as a process with docker-compose.yml's
// environment (BCRYPT_COST=10), on this run's NATS and a fresh database.
func userStack(b *testing.B, extra map[string]string) (pb.UserService, *process, string) {
	b.Helper()
	ns := natstest.Start(b)
	db := pgtest.NewDatabase(b)
	env := localEnv(b, "user-service", ns.URL(), db)
	for k, v := range extra {
		env[k] = v
	}
	p := startProcess(b, "shippy-user-service", env)
	waitRegistered(b, ns.URL(), "go.micro.srv.user", p)
	return userClient(b, ns.URL()), p, ns.URL()
}

// BenchmarkCreate is pair 1: Create through the running user-service against
// raw bcrypt.GenerateFromPassword on as many goroutines as callers.
func BenchmarkCreate(b *testing.B) {
	users, _, _ := userStack(b, map[string]string{"BCRYPT_COST": fmt.Sprint(bcryptCost)})
	ctx := context.Background()
	var seq int
	for _, conc := range concurrencies {
		half := b.N * (8 + conc)
		raw := func(n int) result {
			return run(n, conc, func(int) error {
				_, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcryptCost)
				return err
			})
		}
		create := func(n int) result {
			base := seq
			seq += n
			return run(n, conc, func(i int) error {
				_, err := users.Create(ctx, &pb.User{
					Name: fmt.Sprintf("Bench User %d", base+i), Company: "Bench",
					Email: fmt.Sprintf("bench%d@example.com", base+i), Password: benchPassword,
				})
				return err
			})
		}
		create(conc) // warm connections and the database pool
		rawR, subj := alternate(half, raw, create)
		checkErrs(b, "Create", subj)
		b.ReportMetric(rawR.perSec(), fmt.Sprintf("c%d-bcrypt/s", conc))
		b.ReportMetric(subj.perSec(), fmt.Sprintf("c%d-create/s", conc))
		b.ReportMetric(ms(subj.pct(50)), fmt.Sprintf("c%d-create-p50-ms", conc))
		ratio(b, fmt.Sprintf("1-create-vs-bcrypt-c%d", conc), subj.perSec()/rawR.perSec())
	}
}

// BenchmarkAuth is pair 2: Auth (a lookup by email and a bcrypt compare)
// against raw bcrypt.CompareHashAndPassword.
func BenchmarkAuth(b *testing.B) {
	users, _, _ := userStack(b, map[string]string{"BCRYPT_COST": fmt.Sprint(bcryptCost)})
	ctx := context.Background()
	// One account per caller slot: the login limiter counts attempts in
	// flight per email, so many parallel logins to one account are refused
	// (429) by design; real logins come from many accounts.
	emails := make([]string, 2*slices.Max(concurrencies))
	for i := range emails {
		emails[i] = fmt.Sprintf("auth.bench.%d@example.com", i)
		if _, err := users.Create(ctx, &pb.User{Name: "Auth Bench", Email: emails[i], Password: benchPassword}); err != nil {
			b.Fatalf("Create(%s): %v", emails[i], err)
		}
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(benchPassword), bcryptCost)
	if err != nil {
		b.Fatal(err)
	}
	for _, conc := range concurrencies {
		half := b.N * (8 + conc)
		raw := func(n int) result {
			return run(n, conc, func(int) error {
				return bcrypt.CompareHashAndPassword(hash, []byte(benchPassword))
			})
		}
		auth := func(n int) result {
			return run(n, conc, func(i int) error {
				_, err := users.Auth(ctx, &pb.User{Email: emails[i%len(emails)], Password: benchPassword})
				return err
			})
		}
		auth(conc)
		rawR, subj := alternate(half, raw, auth)
		checkErrs(b, "Auth", subj)
		b.ReportMetric(rawR.perSec(), fmt.Sprintf("c%d-bcrypt/s", conc))
		b.ReportMetric(subj.perSec(), fmt.Sprintf("c%d-auth/s", conc))
		b.ReportMetric(ms(subj.pct(50)), fmt.Sprintf("c%d-auth-p50-ms", conc))
		ratio(b, fmt.Sprintf("2-auth-vs-bcrypt-c%d", conc), subj.perSec()/rawR.perSec())
	}
}
