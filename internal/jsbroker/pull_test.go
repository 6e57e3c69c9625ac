package jsbroker

import (
	"encoding/json"
	"testing"
	"time"

	"go-micro.dev/v6/broker"

	"github.com/shippy/shippy/internal/natstest"
)

// Subscribers pull with pullExpiry, not nats.go's 30 s: a pull lost with
// the server that held it is noticed after two missed heartbeats (half the
// expiry each), so this bounds how long deliveries stall after the
// consumer's leader dies (e2e/consumer_failover_test.go measures it).
func TestPullRequestsExpireAfterPullExpiry(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL())
	nc, _ := jsClient(t, srv.URL())
	pulls, err := nc.SubscribeSync("$JS.API.CONSUMER.MSG.NEXT." + DefaultStream + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	subscribe(t, b, "pull.test", rec.handle, broker.Queue("q"))
	msg, err := pulls.NextMsg(waitLimit)
	if err != nil {
		t.Fatalf("no pull request seen: %v", err)
	}
	var req struct {
		Expires   time.Duration `json:"expires"`
		Heartbeat time.Duration `json:"idle_heartbeat"`
	}
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		t.Fatalf("pull request %q: %v", msg.Data, err)
	}
	if req.Expires != pullExpiry || req.Heartbeat == 0 || req.Heartbeat > pullExpiry/2 {
		t.Errorf("pull request expires %v, heartbeat %v; want %v and at most half of it", req.Expires, req.Heartbeat, pullExpiry)
	}
}
