package main

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

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
			svc, err := newService(testCfg(codecProto), store, discardLog, testPlugins(reg, jsb), server.WrapHandler(hold))
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

// switchBroker is a broker whose publishes fail while down is set, counting
// those that went through.
type switchBroker struct {
	broker.Broker
	down      atomic.Bool
	published atomic.Int64
}

func (b *switchBroker) Publish(topic string, m *broker.Message, opts ...broker.PublishOption) error {
	if b.down.Load() {
		return errors.New("switch broker: down")
	}
	if err := b.Broker.Publish(topic, m, opts...); err != nil {
		return err
	}
	b.published.Add(1)
	return nil
}

// A stop just after the broker came back, while the relay is backing off
// for longer than the stop's drain bound: the relay ignores Notify then,
// so the stop's own drain must publish the event.
func TestStopRightAfterBrokerRecoveredLeavesNothingPending(t *testing.T) {
	for _, b := range storeBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			store := b.open(t)
			reg := registry.NewMemoryRegistry()
			sb := &switchBroker{Broker: broker.NewMemoryBroker()}
			svc, err := newService(testCfg(codecProto), store, discardLog, testPlugins(reg, sb))
			if err != nil {
				t.Fatalf("newService = %v", err)
			}
			stop := serveInBackground(t, svc)
			waitNodes(t, reg, 1)

			sb.down.Store(true)
			if err := svc.handler.Create(context.Background(), &pb.User{Name: "Ada", Email: "ada@example.com", Password: "correct horse"}, &pb.Response{}); err != nil {
				t.Fatalf("Create with the broker down = %v; want nil", err)
			}
			// After 7 failures the relay's backoff (100 ms doubling, with
			// jitter down to half) is at least 3.2 s, past outboxDrainTimeout.
			deadline := time.Now().Add(30 * time.Second)
			for svc.relay.Stats().Failed < 7 {
				if time.Now().After(deadline) {
					t.Fatalf("relay failed %d publishes in 30s; want 7", svc.relay.Stats().Failed)
				}
				time.Sleep(20 * time.Millisecond) // poll interval
			}
			sb.down.Store(false)
			if err := stop(); err != nil {
				t.Fatalf("serve = %v; want nil", err)
			}
			if n, err := svc.relay.Pending(context.Background()); err != nil || n != 0 {
				t.Errorf("Pending() after a stop with the broker up = %d, %v; want 0", n, err)
			}
			if n := sb.published.Load(); n != 1 {
				t.Errorf("broker got %d publishes; want 1", n)
			}
		})
	}
}
