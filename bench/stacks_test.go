package bench

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/client"
	grpcclient "go-micro.dev/v6/client/grpc"
	"go-micro.dev/v6/selector"
	"go-micro.dev/v6/server"
	grpcserver "go-micro.dev/v6/server/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// The RPC stacks go-micro offers, side by side on ValidateToken (issue 14,
// point 1): each serves the same handler, the user-service's ValidateToken
// (an HS256 JWT check with the service's parser options), in this process,
// against the framework-free floor: the same check behind a nats.go
// responder, called with nats.go request/reply. The stack chosen as shippy's
// default is in BENCH.md.
//
// go-micro's gRPC server and client are measured here only: their packages
// import go-micro's cmd package, which links every plugin go-micro ships
// (consul, etcd, rabbitmq, redis, mysql...), and go-micro's own `micro call`
// speaks its rpc protocol, which a gRPC server does not (BENCH.md).

const (
	tokenIssuer  = "shippy.user" // as the user-service signs
	tokenSecret  = "bench-secret-0123456789abcdef0123456789abcdef"
	stackService = "bench.token"
)

type tokenClaims struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Admin bool   `json:"admin,omitempty"`
	jwt.RegisteredClaims
}

func signToken(b *testing.B) string {
	b.Helper()
	now := time.Now()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{
		Name: "Stack Bench", Email: "stack.bench@example.com",
		RegisteredClaims: jwt.RegisteredClaims{
			ID: "bench", Issuer: tokenIssuer, Subject: "0b7c7b8e-5f0e-4d2a-9a59-3f1c2e7d9a10",
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
	}).SignedString([]byte(tokenSecret))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

var tokenParser = jwt.NewParser(
	jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
	jwt.WithExpirationRequired(), jwt.WithIssuer(tokenIssuer), jwt.WithIssuedAt())

// checkToken is the user-service's ValidateToken without go-micro.
func checkToken(req, rsp *pb.Token) error {
	claims := &tokenClaims{}
	if _, err := tokenParser.ParseWithClaims(req.Token, claims, func(*jwt.Token) (any, error) { return []byte(tokenSecret), nil }); err != nil {
		return err
	}
	if claims.Subject == "" {
		return errors.New("no subject")
	}
	rsp.Token, rsp.Valid = req.Token, true
	return nil
}

// TokenCheck is ValidateToken as a go-micro handler.
type TokenCheck struct{}

func (TokenCheck) ValidateToken(_ context.Context, req *pb.Token, rsp *pb.Token) error {
	return checkToken(req, rsp)
}

// floorValidate is the floor: checkToken behind a nats.go responder.
func floorValidate(b *testing.B, natsURL, token string) func(int) error {
	b.Helper()
	srvConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srvConn.Close)
	subject := "bench.floor." + nats.NewInbox()[7:]
	if _, err := srvConn.Subscribe(subject, func(m *nats.Msg) {
		var req, rsp pb.Token
		if proto.Unmarshal(m.Data, &req) != nil || checkToken(&req, &rsp) != nil {
			_ = m.Respond(nil)
			return
		}
		out, _ := proto.Marshal(&rsp)
		_ = m.Respond(out)
	}); err != nil {
		b.Fatal(err)
	}
	if err := srvConn.Flush(); err != nil {
		b.Fatal(err)
	}
	cliConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cliConn.Close)
	req, _ := proto.Marshal(&pb.Token{Token: token})
	return func(int) error {
		m, err := cliConn.Request(subject, req, 5*time.Second)
		if err != nil {
			return err
		}
		var rsp pb.Token
		if err := proto.Unmarshal(m.Data, &rsp); err != nil || !rsp.Valid {
			return fmt.Errorf("token not valid (%v)", err)
		}
		return nil
	}
}

// stack is one way to serve and call TokenCheck with go-micro.
type stack struct {
	name string
	env  map[string]string // MICRO_* for microenv's parts
	grpc bool              // go-micro's gRPC server and client instead of its rpc ones
}

// startStack serves TokenCheck on st and returns a call of it.
func startStack(b *testing.B, natsURL string, st stack, token string) func(int) error {
	b.Helper()
	for _, k := range []string{"MICRO_TRANSPORT", "MICRO_TRANSPORT_ADDRESS"} {
		b.Setenv(k, st.env[k])
	}
	env, p := fromEnv(b)
	var srv server.Server
	if st.grpc {
		srv = grpcserver.NewServer(server.Name(stackService), server.Registry(p.Registry), server.Broker(p.Broker),
			server.Address("127.0.0.1:0"), server.Wait(nil))
	} else {
		srv = env.NewServer(stackService, p, server.Address("127.0.0.1:0"))
	}
	if err := srv.Handle(srv.NewHandler(TokenCheck{})); err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatalf("start %s: %v", st.name, err)
	}
	b.Cleanup(func() { _ = srv.Stop() })
	waitRegistered(b, natsURL, stackService, nil)
	cenv, cp := fromEnv(b)
	var c client.Client
	if st.grpc {
		c = grpcclient.NewClient(client.Selector(selector.NewSelector(selector.Registry(cp.Registry))), client.Broker(cp.Broker))
	} else {
		c = cenv.NewClient(cp)
	}
	ctx := context.Background()
	return func(int) error {
		rsp := &pb.Token{}
		if err := c.Call(ctx, c.NewRequest(stackService, "TokenCheck.ValidateToken", &pb.Token{Token: token}), rsp); err != nil {
			return err
		}
		if !rsp.Valid {
			return errors.New("token not valid")
		}
		return nil
	}
}

// BenchmarkStacks is issue 14's point 1: ValidateToken on go-micro's default
// (rpc server and client over the http transport, as microenv builds them),
// on the nats transport, and on go-micro's gRPC server and client, each
// against the framework-free floor in the same run, at 1 and 16 callers.
func BenchmarkStacks(b *testing.B) {
	ns := natstest.Start(b)
	b.Setenv("MICRO_REGISTRY", "nats")
	b.Setenv("MICRO_REGISTRY_ADDRESS", ns.URL())
	b.Setenv("MICRO_BROKER", "nats")
	b.Setenv("MICRO_BROKER_ADDRESS", ns.URL())
	token := signToken(b)
	floor := floorValidate(b, ns.URL(), token)
	stacks := []stack{
		{name: "http", env: map[string]string{}},
		{name: "nats", env: map[string]string{"MICRO_TRANSPORT": "nats", "MICRO_TRANSPORT_ADDRESS": ns.URL()}},
		{name: "grpc", grpc: true},
	}
	for _, st := range stacks {
		b.Run(st.name, func(b *testing.B) {
			call := startStack(b, ns.URL(), st, token)
			for _, conc := range rpcCallers {
				half := b.N * 1000 * max(1, conc/4)
				run(half/10, conc, call) // warm connections
				floorR, subj := alternate(half, func(n int) result { return run(n, conc, floor) }, func(n int) result { return run(n, conc, call) })
				checkErrs(b, st.name, subj)
				checkErrs(b, "floor", floorR)
				c := fmt.Sprintf("c%d", conc)
				b.ReportMetric(subj.perSec(), c+"/s")
				b.ReportMetric(us(subj.pct(50)), c+"-p50-us")
				b.ReportMetric(us(subj.pct(99)), c+"-p99-us")
				b.ReportMetric(us(subj.worst()), c+"-max-us")
				b.ReportMetric(floorR.perSec(), c+"-floor/s")
				fmt.Printf("stack: %-4s c%-2d %7.0f/s p50 %6.0fus p99 %7.0fus max %8.0fus | floor %7.0f/s p50 %5.0fus p99 %6.0fus max %8.0fus | ratio %.3f\n",
					st.name, conc, subj.perSec(), us(subj.pct(50)), us(subj.pct(99)), us(subj.worst()),
					floorR.perSec(), us(floorR.pct(50)), us(floorR.pct(99)), us(floorR.worst()), subj.perSec()/floorR.perSec())
				ratio(b, fmt.Sprintf("3-stack-%s-vs-floor-%s", st.name, c), subj.perSec()/floorR.perSec())
			}
		})
	}
}
