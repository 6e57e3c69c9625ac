package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// A restarted server keeps its URL, so clients reconnect to it.
func TestRestartKeepsURL(t *testing.T) {
	s := Start(t)
	url := s.URL()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("Connect(%q) = %v; want a connection", url, err)
	}
	nc.Close()

	s.Restart()
	if s.URL() != url {
		t.Fatalf("URL after Restart = %q; want %q", s.URL(), url)
	}
	nc, err = nats.Connect(url)
	if err != nil {
		t.Fatalf("Connect(%q) after Restart = %v; want a connection", url, err)
	}
	nc.Close()
}
