package microenv

import (
	"context"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/metadata"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport"
	"go-micro.dev/v6/transport/headers"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// RequestID answers with the request id go-micro's server keyed the
// request's pseudo-socket by (the Micro-ID header it looks up).
type RequestID struct{}

func (RequestID) ID(ctx context.Context, _ *wrapperspb.StringValue, rsp *wrapperspb.StringValue) error {
	md, _ := metadata.FromContext(ctx)
	rsp.Value = md[headers.ID]
	return nil
}

// Over the http transport, calls on one pooled connection reach the server
// with ids of their own. go-micro's server reads Micro-ID, which net/http
// hands it as Micro-Id: without withMicroID every id is "", and a request
// that arrives before the previous one's pseudo-socket is released is lost
// (the client waits out its 5 s connection timeout).
func TestServerSeesEachRequestsID(t *testing.T) {
	p := Plugins{Broker: broker.NewMemoryBroker(), Registry: registry.NewMemoryRegistry(), Transport: transport.NewHTTPTransport()}
	env := Env{ServerAddress: "127.0.0.1:0", ClientRetries: -1}
	srv := env.NewServer("test.requestid", p)
	if err := srv.Handle(srv.NewHandler(RequestID{})); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	c := env.NewClient(p, client.PoolSize(1), client.Retries(0))
	seen := map[string]bool{}
	for i := range 5 {
		rsp := &wrapperspb.StringValue{}
		if err := c.Call(context.Background(), c.NewRequest("test.requestid", "RequestID.ID", &wrapperspb.StringValue{}), rsp); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if rsp.Value == "" || seen[rsp.Value] {
			t.Fatalf("call %d: server saw request id %q (ids so far %v); want a new, non-empty id per request", i, rsp.Value, seen)
		}
		seen[rsp.Value] = true
	}
}

// Deadline keeps the context of the request it last served.
type Deadline struct {
	last chan context.Context
}

func (d Deadline) Keep(ctx context.Context, _ *wrapperspb.StringValue, rsp *wrapperspb.StringValue) error {
	rsp.Value, _ = metadata.Get(ctx, deadlineHeader)
	d.last <- ctx
	return nil
}

// A request's context has its caller's deadline (go-micro's client sends
// its connection timeout as the request's Timeout) while the handler runs and
// is done once the reply is out. go-micro's server cancels it only when the
// connection closes, so every request's context stays in memory until then
// (about 1 KiB each: 250 MB a minute at 16 callers).
func TestServerEndsEachRequestsContextWithItsReply(t *testing.T) {
	p := Plugins{Broker: broker.NewMemoryBroker(), Registry: registry.NewMemoryRegistry(), Transport: transport.NewHTTPTransport()}
	env := Env{ServerAddress: "127.0.0.1:0", ClientRetries: -1}
	srv := env.NewServer("test.deadline", p)
	h := Deadline{last: make(chan context.Context, 1)}
	if err := srv.Handle(srv.NewHandler(h)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	const timeout = 3 * time.Second
	c := env.NewClient(p, client.PoolSize(1), client.Retries(0), client.ConnectionTimeout(timeout))
	for i := range 3 { // one pooled connection, so the connection outlives each call
		start := time.Now()
		rsp := &wrapperspb.StringValue{}
		if err := c.Call(context.Background(), c.NewRequest("test.deadline", "Deadline.Keep", &wrapperspb.StringValue{}), rsp); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		ctx := <-h.last
		deadline, ok := ctx.Deadline()
		if !ok || deadline.Before(start) || deadline.After(start.Add(timeout+time.Second)) {
			t.Errorf("call %d: handler's deadline = %v, %v; want about %s after the call began", i, deadline, ok, timeout)
		}
		if rsp.Value != "" {
			t.Errorf("call %d: handler's metadata has %s = %q; want it taken out", i, deadlineHeader, rsp.Value)
		}
		if ctx.Err() == nil {
			t.Errorf("call %d: the request's context is still live after its reply; want it cancelled", i)
		}
	}
}
