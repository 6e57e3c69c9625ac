package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// An email-service started while its NATS cluster has no quorum waits for
// JetStream to create its 3-replica bucket instead of exiting.
func TestKVSentLogWaitsForAClusterWithoutQuorum(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	for _, s := range c.Servers[1:] {
		s.Stop()
	}
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	type opened struct {
		sent  *kvSentLog
		close func()
		err   error
	}
	done := make(chan opened, 1)
	go func() {
		s, closeNATS, err := dialKVSentLog(context.Background(), log, c.Servers[0].URL(),
			kvBucket{Name: defaultSentBucket, Replicas: 3}, testLease)
		done <- opened{s, closeNATS, err}
	}()

	poll.Until(t, "the bucket's creation to be retried", waitLimit, func() bool {
		return strings.Contains(logs.String(), "JetStream not ready; retrying")
	})
	select {
	case o := <-done:
		t.Fatalf("dialKVSentLog without quorum = %v; want it to wait", o.err)
	default:
	}
	for _, s := range c.Servers[1:] {
		s.Restart()
	}
	select {
	case o := <-done:
		if o.err != nil {
			t.Fatalf("dialKVSentLog = %v; want nil once the cluster has quorum", o.err)
		}
		t.Cleanup(o.close)
		if err := o.sent.Ready(context.Background()); err != nil {
			t.Errorf("Ready() = %v; want nil", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("dialKVSentLog did not return within 2 min of the cluster getting quorum")
	}
}
