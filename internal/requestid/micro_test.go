package requestid_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"
	"go-micro.dev/v6/transport"
	natstransport "go-micro.dev/v6/transport/nats"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/requestid"
)

// Echo answers with the request id the wrapper gave the handler.
type Echo struct{}

func (Echo) ID(ctx context.Context, _ *wrapperspb.StringValue, rsp *wrapperspb.StringValue) error {
	rsp.Value = requestid.FromContext(ctx)
	return nil
}

// Through a real go-micro server and client, on both transports: the id a
// client sends with Outgoing, or as `micro call --metadata` sends it in
// either case, reaches the handler; none, or a bad one, is replaced.
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
			srv := env.NewServer("test.echo", p, server.WrapHandler(requestid.NewHandlerWrapper()))
			if err := srv.Handle(srv.NewHandler(&Echo{})); err != nil {
				t.Fatal(err)
			}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Stop() })
			c := env.NewClient(p, client.RequestTimeout(10*time.Second))
			// go-micro's nats transport subscribes without a flush: a call
			// right after Start may find no responders.
			deadline := time.Now().Add(10 * time.Second)
			for {
				var rsp wrapperspb.StringValue
				err := c.Call(context.Background(), c.NewRequest("test.echo", "Echo.ID", &wrapperspb.StringValue{}), &rsp)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the server did not answer within 10s: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}

			tests := []struct {
				name string
				ctx  context.Context
				keep string // "" wants a new id
			}{
				{"Outgoing", requestid.Outgoing(context.Background(), "cli-0af7651916cd43dd"), "cli-0af7651916cd43dd"},
				{"lower-case key", metadata.NewContext(context.Background(), metadata.Metadata{"x-request-id": "abc"}), "abc"},
				{"none", context.Background(), ""},
				{"too long", requestid.Outgoing(context.Background(), strings.Repeat("a", requestid.MaxLen+1)), ""},
				{"bad charset", requestid.Outgoing(context.Background(), "a<script>"), ""},
			}
			for _, tt := range tests {
				var rsp wrapperspb.StringValue
				if err := c.Call(tt.ctx, c.NewRequest("test.echo", "Echo.ID", &wrapperspb.StringValue{}), &rsp); err != nil {
					t.Fatalf("%s: call = %v", tt.name, err)
				}
				switch {
				case tt.keep != "" && rsp.Value != tt.keep:
					t.Errorf("%s: handler saw id %q; want %q", tt.name, rsp.Value, tt.keep)
				case tt.keep == "" && (len(rsp.Value) != 16 || !requestid.Valid(rsp.Value)):
					t.Errorf("%s: handler saw id %q; want a new one", tt.name, rsp.Value)
				}
			}
		})
	}
}
