package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"google.golang.org/protobuf/proto"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// brokerPublisher hands outbox rows to the JetStream broker as the
// user-service does (protobuf body, event id header), without go-micro's
// client around it.
type brokerPublisher struct{ b *jsbroker.Broker }

func (p brokerPublisher) Publish(ctx context.Context, m outbox.Message) error {
	return p.b.Publish(m.Topic, &broker.Message{
		Header: map[string]string{"Content-Type": "application/protobuf", "Micro-Topic": m.Topic, jsbroker.HeaderEventID: m.EventID},
		Body:   m.Payload,
	}, broker.PublishContext(ctx))
}

// PublishBatch is the user-service's batch path: asynchronous publishes,
// one wait for all the acks.
func (p brokerPublisher) PublishBatch(ctx context.Context, ms []outbox.Message) []error {
	out := make([]jsbroker.Outgoing, len(ms))
	for i, m := range ms {
		out[i] = jsbroker.Outgoing{Topic: m.Topic, Message: &broker.Message{
			Header: map[string]string{"Content-Type": "application/protobuf", "Micro-Topic": m.Topic, jsbroker.HeaderEventID: m.EventID},
			Body:   m.Payload,
		}}
	}
	return p.b.PublishBatch(ctx, out)
}

// syncPublisher hides PublishBatch: the relay then runs a goroutine per
// in-flight event, each waiting for its own ack.
type syncPublisher struct{ p brokerPublisher }

func (s syncPublisher) Publish(ctx context.Context, m outbox.Message) error {
	return s.p.Publish(ctx, m)
}

type nopPublisher struct{}

func (nopPublisher) Publish(context.Context, outbox.Message) error { return nil }

func openBenchDB(b *testing.B, dsn string) *gorm.DB {
	b.Helper()
	db, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: gormlogger.Discard})
	if err != nil {
		b.Fatal(err)
	}
	sqlDB, _ := db.DB()
	sqlDB.SetMaxOpenConns(20) // as the user-service's pool
	b.Cleanup(func() { sqlDB.Close() })
	return db
}

// BenchmarkOutboxRelay (issues 14.3 and 13.2): events/s of the outbox relay
// from PostgreSQL into the JetStream stream (each publish acked by the
// stream, each row marked published), one event per row as Create writes
// them, against raw JetStream async publish of as many messages. Subjects:
// the relay publishing in order (in-flight 1, the package default); 100 in
// flight as a goroutine each, waiting for its own ack; the user-service's
// relay (in-flight 100 through PublishBatch: asynchronous publishes, one
// wait); two such relays on their own pools, as two user-service replicas
// (the lines say how many events each published, so a starving replica
// shows); and the relay with a publisher that does nothing, the database's
// share.
func BenchmarkOutboxRelay(b *testing.B) {
	ns := natstest.Start(b)
	dsn := pgtest.NewDatabase(b)
	ctx := context.Background()
	seed := openBenchDB(b, dsn)
	if err := outbox.Migrate(ctx, seed); err != nil {
		b.Fatal(err)
	}
	br := jsbroker.New(broker.Addrs(ns.URL()))
	if err := br.Connect(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Disconnect() })
	payload, _ := proto.Marshal(sampleEvent(0))

	var seq int
	// fill commits n rows (in transactions of 100, outside the measurement).
	fill := func(n int) {
		for done := 0; done < n; {
			k := min(100, n-done)
			err := seed.Transaction(func(tx *gorm.DB) error {
				for range k {
					seq++
					m := outbox.Message{EventID: fmt.Sprintf("relay-%d-%d", time.Now().UnixNano(), seq), Topic: pb.TopicUserCreated, Payload: payload}
					if err := outbox.Enqueue(ctx, tx, m); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			done += k
		}
	}
	relayRun := func(replicas, inFlight int, pub outbox.Publisher) func(n int) result {
		relays := make([]*outbox.Relay, replicas)
		for i := range relays {
			relays[i] = outbox.New(openBenchDB(b, dsn), pub, outbox.WithMaxInFlight(inFlight),
				outbox.WithSweepInterval(time.Hour))
		}
		return func(n int) result {
			fill(n)
			before := make([]uint64, replicas)
			for i, r := range relays {
				before[i] = r.Stats().Published
			}
			t0 := time.Now()
			errs := make(chan error, replicas)
			for _, r := range relays {
				go func() { errs <- r.Drain(ctx) }()
			}
			nerr := 0
			for range relays {
				if err := <-errs; err != nil {
					nerr++
					b.Logf("drain: %v", err)
				}
			}
			dur := time.Since(t0)
			shares := make([]uint64, replicas)
			var total uint64
			for i, r := range relays {
				shares[i] = r.Stats().Published - before[i]
				total += shares[i]
			}
			if total != uint64(n) {
				b.Fatalf("relays published %v = %d events; want %d (exactly once)", shares, total, n)
			}
			if replicas > 1 {
				fmt.Printf("relay: %d replicas, in-flight %d: %d events split %v\n", replicas, inFlight, n, shares)
			}
			return result{ops: n, errs: nerr, dur: dur}
		}
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	raw := func(n int) result {
		t0 := time.Now()
		for i := range n {
			if _, err := js.PublishAsync(br.Subject(pb.TopicUserCreated), payload, jetstream.WithMsgID(fmt.Sprintf("raw-%d-%d", time.Now().UnixNano(), i))); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			b.Fatal("raw async publishes not acked within 60s")
		}
		return result{ops: n, dur: time.Since(t0)}
	}
	js2 := brokerPublisher{br}
	for _, tc := range []struct {
		name               string
		replicas, inFlight int
		pub                outbox.Publisher
	}{
		{"in-order", 1, 1, js2},
		{"goroutines", 1, 100, syncPublisher{js2}},
		{"async-batch", 1, 100, js2},
		{"async-batch-2-replicas", 2, 100, js2},
		// The database's share: the same relay with a publisher that
		// does nothing (claim, mark, commit only).
		{"postgres-only", 1, 100, nopPublisher{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			half := b.N * 2000
			rawR, subj := alternate(half, raw, relayRun(tc.replicas, tc.inFlight, tc.pub))
			checkErrs(b, "relay", subj)
			b.ReportMetric(rawR.perSec(), "rawjs-events/s")
			b.ReportMetric(subj.perSec(), "relay-events/s")
			fmt.Printf("relay: %s: %.0f events/s vs raw JetStream async publish %.0f/s\n", tc.name, subj.perSec(), rawR.perSec())
			ratio(b, "relay-"+tc.name+"-vs-rawjs-publish", subj.perSec()/rawR.perSec())
		})
	}
}
