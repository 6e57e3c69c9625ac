package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/transport"

	"github.com/shippy/shippy/internal/microenv"
)

var discardLog = slog.New(slog.DiscardHandler)

// testEnv is go-micro's configuration of the services tests start: a free
// loopback port.
var testEnv = microenv.Env{ServerAddress: "127.0.0.1:0", ClientRetries: -1}

// testPlugins puts b beside a registry of the test's own, for a service
// that needs no other process to find it.
func testPlugins(b broker.Broker) microenv.Plugins {
	return microenv.Plugins{Broker: b, Registry: registry.NewMemoryRegistry(), Transport: transport.NewHTTPTransport()}
}

// mailerFunc adapts a function to Mailer.
type mailerFunc func(ctx context.Context, e WelcomeEmail) error

func (f mailerFunc) Send(ctx context.Context, e WelcomeEmail) error { return f(ctx, e) }

// tally records every send by event id and by replica, so tests can assert
// exactly-once delivery across replicas.
type tally struct {
	mu        sync.Mutex
	byEvent   map[string][]WelcomeEmail
	byReplica map[string]map[string]bool
}

func newTally() *tally {
	return &tally{byEvent: map[string][]WelcomeEmail{}, byReplica: map[string]map[string]bool{}}
}

// mailer returns the fake mailer of one replica.
func (tl *tally) mailer(replica string) Mailer {
	return mailerFunc(func(_ context.Context, e WelcomeEmail) error {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		tl.byEvent[e.EventID] = append(tl.byEvent[e.EventID], e)
		if tl.byReplica[replica] == nil {
			tl.byReplica[replica] = map[string]bool{}
		}
		tl.byReplica[replica][e.EventID] = true
		return nil
	})
}

func (tl *tally) sends(eventID string) []WelcomeEmail {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return append([]WelcomeEmail(nil), tl.byEvent[eventID]...)
}

// total counts the sends of events whose id starts with prefix.
func (tl *tally) total(prefix string) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := 0
	for id, s := range tl.byEvent {
		if strings.HasPrefix(id, prefix) {
			n += len(s)
		}
	}
	return n
}

// replicaSaw reports whether replica handled an event whose id starts with prefix.
func (tl *tally) replicaSaw(replica, prefix string) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for id := range tl.byReplica[replica] {
		if strings.HasPrefix(id, prefix) {
			return true
		}
	}
	return false
}

// waitLimit bounds each poll.Until in this package: a deadline, not a delay.
const waitLimit = 10 * time.Second
