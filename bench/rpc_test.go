package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/server"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// rpcCallers are the concurrent callers of pair 3.
var rpcCallers = []int{1, 16}

// Echo is the framework's floor: a go-micro handler that does nothing but
// answer with its request, the same message type ValidateToken uses.
type Echo struct{}

func (Echo) Echo(_ context.Context, req *pb.Token, rsp *pb.Token) error {
	rsp.Token, rsp.Valid = req.Token, true
	return nil
}

const echoService = "bench.echo"

// startEcho runs Echo in this process as a go-micro server built by
// microenv from the current MICRO_* environment, and returns a client built
// the same way, sending contentType.
func startEcho(b *testing.B, natsURL, contentType string) (client.Client, func()) {
	b.Helper()
	env, p := fromEnv(b)
	srv := env.NewServer(echoService, p, server.Address("127.0.0.1:0"))
	if err := srv.Handle(srv.NewHandler(Echo{})); err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatalf("start echo: %v", err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { srv.Stop() }) }
	b.Cleanup(stop)
	waitRegistered(b, natsURL, echoService, nil)
	cenv, cp := fromEnv(b)
	return cenv.NewClient(cp, client.ContentType(contentType)), stop
}

func echoCall(c client.Client, service, payload string) func(int) error {
	ctx := context.Background()
	return func(int) error {
		req := c.NewRequest(service, "Echo.Echo", &pb.Token{Token: payload})
		rsp := &pb.Token{}
		return c.Call(ctx, req, rsp)
	}
}

// rawNATS is the transport's floor: a nats.go responder echoing the request
// bytes, and a requester on another connection.
func rawNATS(b *testing.B, natsURL string, payload []byte) func(int) error {
	b.Helper()
	srvConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srvConn.Close)
	subject := "bench.raw." + nats.NewInbox()[7:]
	if _, err := srvConn.Subscribe(subject, func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	srvConn.Flush()
	cliConn, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cliConn.Close)
	return func(int) error {
		_, err := cliConn.Request(subject, payload, 5*time.Second)
		return err
	}
}

// setComposeMicroEnv gives this process the MICRO_* variables docker-compose.yml
// gives the user-service, pointed at natsURL.
func setComposeMicroEnv(b *testing.B, natsURL string) {
	b.Helper()
	for k, v := range localEnv(b, "user-service", natsURL, "") {
		if strings.HasPrefix(k, "MICRO_") && k != "MICRO_SERVER_ADDRESS" {
			b.Setenv(k, v)
		}
	}
}

// BenchmarkValidateToken is pair 3: the ValidateToken RPC to the running
// user-service against raw NATS request/reply with the same payload and
// callers, and against the Echo handler, all with docker-compose.yml's
// go-micro configuration.
func BenchmarkValidateToken(b *testing.B) {
	users, _, natsURL := userStack(b, map[string]string{"BCRYPT_COST": "4"})
	ctx := context.Background()
	rsp, err := users.Create(ctx, &pb.User{Name: "Token Bench", Email: "token.bench@example.com", Password: benchPassword})
	if err != nil {
		b.Fatalf("Create: %v", err)
	}
	token := rsp.Token.Token
	payload, _ := proto.Marshal(&pb.Token{Token: token})
	raw := rawNATS(b, natsURL, payload)
	setComposeMicroEnv(b, natsURL)
	echoClient, _ := startEcho(b, natsURL, microenv.ContentType)
	echo := echoCall(echoClient, echoService, token)
	// The same Echo served by a process of its own, as the user-service is:
	// what go-micro costs across a process boundary, with none of the
	// user-service's wrappers.
	echoProc := echoCall(echoClient, startEchoProcess(b, natsURL), token)
	validate := func(int) error {
		r, err := users.ValidateToken(ctx, &pb.Token{Token: token})
		if err == nil && !r.Valid {
			err = fmt.Errorf("token not valid")
		}
		return err
	}
	for _, conc := range rpcCallers {
		half := b.N * 500 * max(1, conc/4)
		run(half/10, conc, validate) // warm connections
		run(half/10, conc, echo)
		rawR, subj := alternate(half, func(n int) result { return run(n, conc, raw) }, func(n int) result { return run(n, conc, validate) })
		_, echoR := alternate(half/2, func(n int) result { return result{} }, func(n int) result { return run(n, conc, echo) })
		run(half/10, conc, echoProc)
		echoProcR, subjP := alternate(half/2, func(n int) result { return run(n, conc, echoProc) }, func(n int) result { return run(n, conc, validate) })
		checkErrs(b, "Echo in a process", echoProcR)
		checkErrs(b, "ValidateToken", subjP)
		checkErrs(b, "ValidateToken", subj)
		checkErrs(b, "Echo", echoR)
		checkErrs(b, "raw NATS", rawR)
		c := fmt.Sprintf("c%d", conc)
		b.ReportMetric(rawR.perSec(), c+"-rawnats/s")
		b.ReportMetric(echoR.perSec(), c+"-echo/s")
		b.ReportMetric(subj.perSec(), c+"-validate/s")
		b.ReportMetric(us(rawR.pct(99)), c+"-rawnats-p99-us")
		b.ReportMetric(us(echoR.pct(99)), c+"-echo-p99-us")
		b.ReportMetric(us(subj.pct(99)), c+"-validate-p99-us")
		b.ReportMetric(us(subj.pct(50)), c+"-validate-p50-us")
		b.ReportMetric(us(rawR.worst()), c+"-rawnats-max-us")
		b.ReportMetric(us(echoR.worst()), c+"-echo-max-us")
		b.ReportMetric(us(subj.worst()), c+"-validate-max-us")
		fmt.Printf("validate: c%-2d ValidateToken %7.0f/s p50 %6.0fus p99 %7.0fus max %8.0fus | echo %7.0f/s p99 %7.0fus max %8.0fus | echo in a process %7.0f/s p99 %7.0fus | raw nats %7.0f/s p99 %6.0fus max %8.0fus\n",
			conc, subj.perSec(), us(subj.pct(50)), us(subj.pct(99)), us(subj.worst()),
			echoR.perSec(), us(echoR.pct(99)), us(echoR.worst()), echoProcR.perSec(), us(echoProcR.pct(99)),
			rawR.perSec(), us(rawR.pct(99)), us(rawR.worst()))
		ratio(b, "3-validate-vs-echo-process-"+c, subjP.perSec()/echoProcR.perSec())
		ratio(b, "3-validate-vs-rawnats-"+c, subj.perSec()/rawR.perSec())
		ratio(b, "3-validate-vs-echo-"+c, subj.perSec()/echoR.perSec())
		ratio(b, "3-validate-p99-vs-rawnats-"+c, float64(rawR.pct(99))/float64(subj.pct(99)))
		ratio(b, "3-validate-max-vs-rawnats-"+c, float64(rawR.worst())/float64(subj.worst()))
	}
}

// BenchmarkTuneEcho is the measurement behind the chosen go-micro
// configuration: the Echo RPC in this process under each candidate, against
// raw NATS request/reply in the same run.
func BenchmarkTuneEcho(b *testing.B) {
	ns := natstest.Start(b)
	payload := strings.Repeat("x", 240) // about a shippy JWT
	wire, _ := proto.Marshal(&pb.Token{Token: payload})
	raw := rawNATS(b, ns.URL(), wire)
	// microenv's default is protobuf; json is go-micro's own default.
	const protoCT, jsonCT = "application/protobuf", "application/json"
	configs := []struct {
		name string
		env  map[string]string
		ct   string
	}{
		{"http-json", map[string]string{}, jsonCT},
		{"http-proto", map[string]string{}, protoCT},
		{"http-pool1-proto", map[string]string{"MICRO_CLIENT_POOL_SIZE": "1"}, protoCT},
		{"nats-json", map[string]string{"MICRO_TRANSPORT": "nats", "MICRO_TRANSPORT_ADDRESS": ns.URL()}, jsonCT},
		{"nats-proto", map[string]string{"MICRO_TRANSPORT": "nats", "MICRO_TRANSPORT_ADDRESS": ns.URL()}, protoCT},
	}
	b.Setenv("MICRO_REGISTRY", "nats")
	b.Setenv("MICRO_REGISTRY_ADDRESS", ns.URL())
	b.Setenv("MICRO_BROKER", "nats")
	b.Setenv("MICRO_BROKER_ADDRESS", ns.URL())
	for _, cfg := range configs {
		b.Run(cfg.name, func(b *testing.B) {
			for _, k := range []string{"MICRO_TRANSPORT", "MICRO_TRANSPORT_ADDRESS", "MICRO_CLIENT_POOL_SIZE"} {
				b.Setenv(k, cfg.env[k])
			}
			echoClient, stop := startEcho(b, ns.URL(), cfg.ct)
			echo := echoCall(echoClient, echoService, payload)
			for _, conc := range rpcCallers {
				half := b.N * 300 * max(1, conc/4)
				run(half/10, conc, echo)
				rawR, subj := alternate(half, func(n int) result { return run(n, conc, raw) }, func(n int) result { return run(n, conc, echo) })
				checkErrs(b, cfg.name, subj)
				c := fmt.Sprintf("%s-c%d", cfg.name, conc)
				b.ReportMetric(subj.perSec(), c+"/s")
				b.ReportMetric(us(subj.pct(99)), c+"-p99-us")
				b.ReportMetric(us(subj.worst()), c+"-max-us")
				fmt.Printf("tune: %-18s c%-2d echo %7.0f/s p50 %6.0fus p99 %7.0fus max %8.0fus | raw nats %7.0f/s p99 %6.0fus max %8.0fus | ratio %.3f\n",
					cfg.name, conc, subj.perSec(), us(subj.pct(50)), us(subj.pct(99)), us(subj.worst()), rawR.perSec(), us(rawR.pct(99)), us(rawR.worst()), subj.perSec()/rawR.perSec())
			}
			stop()
		})
	}
}
