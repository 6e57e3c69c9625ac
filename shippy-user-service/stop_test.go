package main

import (
	"context"
	"testing"
	"time"

	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	pb "github.com/shippy/shippy/proto/user"
)

// A graceful stop with a Create in flight: serve waits for it, the caller
// gets its user, and the event it committed is published before the broker
// disconnects, leaving nothing pending in the outbox.
func TestStopWaitsForCreateInFlight(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			store := b.open(t)
			reg := registry.NewMemoryRegistry()
			jsb := jsbroker.New(broker.Addrs(ns.URL()), jsbroker.Logger(discardLog))

			// Create blocks in a handler wrapper until released, so that it is
			// surely in flight when the stop begins.
			entered, release := make(chan struct{}), make(chan struct{})
			hold := func(next server.HandlerFunc) server.HandlerFunc {
				return func(ctx context.Context, req server.Request, rsp interface{}) error {
					if req.Endpoint() == "UserService.Create" {
						close(entered)
						<-release
					}
					return next(ctx, req, rsp)
				}
			}
			svc, err := newService(testCfg(codecProto), store, discardLog,
				micro.Registry(reg), micro.Broker(jsb), micro.Address("127.0.0.1:0"), micro.WrapHandler(hold))
			if err != nil {
				t.Fatalf("newService = %v", err)
			}
			stop := serveInBackground(t, svc)
			waitNodes(t, reg, 1)

			users := newUserClientOn(reg, client.RequestTimeout(30*time.Second))
			type result struct {
				res *pb.Response
				err error
			}
			created := make(chan result, 1)
			go func() {
				res, err := users.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse"})
				created <- result{res, err}
			}()
			select {
			case <-entered:
			case <-time.After(15 * time.Second): // a hang guard
				t.Fatal("Create did not reach the handler within 15s")
			}

			stopped := make(chan error, 1)
			go func() { stopped <- stop() }()
			waitNodes(t, reg, 0) // the stop has begun: deregistered
			// serve must still be waiting for the Create. Observed for a
			// while, since a wait cannot be seen directly: without
			// server.Wait, serve returns within milliseconds of the
			// deregistration.
			select {
			case err := <-stopped:
				t.Fatalf("serve returned (%v) with a Create in flight; want it to wait for the Create", err)
			case <-time.After(500 * time.Millisecond):
			}
			close(release)

			var r result
			select {
			case r = <-created:
			case <-time.After(30 * time.Second): // a hang guard
				t.Fatal("Create did not return within 30s of its release")
			}
			if r.err != nil || r.res.GetUser().GetId() == "" {
				t.Fatalf("Create during the stop = %v, %v; want the created user", r.res, r.err)
			}
			if err := <-stopped; err != nil {
				t.Fatalf("serve = %v; want nil", err)
			}
			// Published before the broker went away: nothing pending, and the
			// event is in the stream.
			if n, err := svc.relay.Pending(context.Background()); err != nil || n != 0 {
				t.Errorf("Pending() after the stop = %d, %v; want 0 (the relay drains before the broker disconnects)", n, err)
			}
			waitStreamed(t, ns.URL(), []string{r.res.User.Id})
		})
	}
}
