package jsbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

func TestTransient(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("create stream: %w", nats.ErrTimeout), true},
		{&jetstream.APIError{ErrorCode: errCodeClusterNotAvailable, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{ErrorCode: errCodeNoSuitablePeers, Description: "no suitable peers for placement"}, true},
		{&jetstream.APIError{ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{nats.ErrNoResponders, false}, // no JetStream on that server
		{context.Canceled, false},
		{errors.New("authorization violation"), false},
	}
	for _, tt := range tests {
		if got := Transient(tt.err); got != tt.want {
			t.Errorf("Transient(%v) = %v; want %v", tt.err, got, tt.want)
		}
	}
}

// A service started while its NATS cluster has no quorum (two of three
// servers still starting) waits for JetStream instead of failing: Connect
// returns once the others are up, with the streams on three servers.
func TestConnectWaitsForAClusterWithoutQuorum(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	for _, s := range c.Servers[1:] {
		s.Stop()
	}
	logs := &logbuf.Buffer{}
	b := New(broker.Addrs(c.Servers[0].URL()), Replicas(3), PublishTimeout(time.Second), StartTimeout(2*time.Minute),
		Logger(slog.New(slog.NewTextHandler(logs, nil))))
	connected := make(chan error, 1)
	go func() { connected <- b.Connect() }()
	t.Cleanup(func() { _ = b.Disconnect() })

	poll.Until(t, "Connect to retry", waitLimit, func() bool { return strings.Contains(logs.String(), "JetStream not ready; retrying") })
	select {
	case err := <-connected:
		t.Fatalf("Connect() without quorum = %v; want it to wait", err)
	default:
	}
	// Meanwhile the readiness check answers: not connected.
	ready := make(chan error, 1)
	go func() { ready <- b.Ready(context.Background()) }()
	select {
	case err := <-ready:
		if !errors.Is(err, ErrNotConnected) {
			t.Errorf("Ready() while Connect waits = %v; want %v", err, ErrNotConnected)
		}
	case <-time.After(waitLimit):
		t.Fatalf("Ready() still blocked %v into Connect's wait for JetStream", waitLimit)
	}
	for _, s := range c.Servers[1:] {
		s.Restart()
	}
	select {
	case err := <-connected:
		if err != nil {
			t.Fatalf("Connect() = %v; want nil once the cluster has quorum", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("Connect() did not return within 2 min of the cluster getting quorum")
	}
	if r := streamInfo(t, c.URLs(), DefaultStream).Config.Replicas; r != 3 {
		t.Errorf("stream replicas = %d; want 3", r)
	}
}

// What cannot pass by itself fails at once: three replicas on a lone server.
func TestConnectFailsAtOnceOnAConfigurationError(t *testing.T) {
	t.Parallel()
	ns := natstest.Start(t)
	b := New(broker.Addrs(ns.URL()), Replicas(3), Logger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	err := b.Connect()
	if err == nil {
		_ = b.Disconnect()
		t.Fatal("Connect() with 3 replicas on one server = nil; want an error")
	}
	if Transient(err) {
		t.Errorf("Connect() = %v; want an error that is not transient", err)
	}
}
