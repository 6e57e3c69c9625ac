package tokenauth_test

import (
	"context"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	merrors "go-micro.dev/v6/errors"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"
	"go-micro.dev/v6/transport"
	natstransport "go-micro.dev/v6/transport/nats"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/tokenauth"
	pb "github.com/shippy/shippy/proto/user"
)

// Who answers with the caller's user id, as the wrapper verified it.
type Who struct{}

func (Who) Me(ctx context.Context, _ *pb.Request, rsp *pb.User) error {
	c, _ := tokenauth.FromContext(ctx)
	rsp.Id = c.Subject
	return nil
}

type oneToken struct{}

func (oneToken) Verify(token string) (tokenauth.Claims, error) {
	if token != "good" {
		return tokenauth.Claims{}, context.DeadlineExceeded // any error
	}
	return tokenauth.Claims{Subject: "ada-id"}, nil
}

// Through a real go-micro server and client, on both transports: the token
// set as go-micro's client or `micro call --metadata` sets it arrives, in
// either case of the key, and a missing one is refused with 401.
func TestOverGoMicro(t *testing.T) {
	transports := map[string]func(t *testing.T) transport.Transport{
		"http": func(*testing.T) transport.Transport { return transport.NewHTTPTransport() },
		"nats": func(t *testing.T) transport.Transport {
			return natstransport.NewTransport(transport.Addrs(natstest.Start(t).URL()))
		},
	}
	for name, newTransport := range transports {
		t.Run(name, func(t *testing.T) {
			p := microenv.Plugins{Broker: broker.NewMemoryBroker(), Registry: registry.NewMemoryRegistry(), Transport: newTransport(t)}
			env := microenv.Env{ServerAddress: "127.0.0.1:0", ClientRetries: -1}
			srv := env.NewServer("test.who", p, server.WrapHandler(
				tokenauth.NewHandlerWrapper(oneToken{}, tokenauth.Policy{"Who.Me": tokenauth.Authenticated})))
			if err := srv.Handle(srv.NewHandler(&Who{})); err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Stop() })
			c := env.NewClient(p, client.RequestTimeout(10*time.Second))
			// go-micro's nats transport subscribes without a flush: the
			// server's subscription may reach NATS after Start returns, and a
			// call before that finds no responders.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var rsp pb.User
				err := c.Call(tokenauth.BearerContext(context.Background(), "good"), c.NewRequest("test.who", "Who.Me", &pb.Request{}), &rsp)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the server did not answer within 10s: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}

			tests := []struct {
				name     string
				md       metadata.Metadata
				wantCode int32
			}{
				{"BearerContext", nil, 0},
				{"micro call style", metadata.Metadata{"Authorization": "Bearer good"}, 0},
				{"lower-case key", metadata.Metadata{"authorization": "Bearer good"}, 0},
				{"no token", metadata.Metadata{}, 401},
				{"bad token", metadata.Metadata{"Authorization": "Bearer bad"}, 401},
			}
			for _, tt := range tests {
				ctx := tokenauth.BearerContext(context.Background(), "good")
				if tt.md != nil {
					ctx = metadata.NewContext(context.Background(), tt.md)
				}
				var rsp pb.User
				err := c.Call(ctx, c.NewRequest("test.who", "Who.Me", &pb.Request{}), &rsp)
				got := int32(0)
				if err != nil {
					got = merrors.FromError(err).Code
				}
				if got != tt.wantCode {
					t.Errorf("%s: call = %v; want code %d", tt.name, err, tt.wantCode)
				}
				if tt.wantCode == 0 && rsp.Id != "ada-id" {
					t.Errorf("%s: handler saw caller %q; want ada-id", tt.name, rsp.Id)
				}
			}
		})
	}
}
