// Package natstest runs an in-process NATS server with JetStream for tests,
// on a random port and a temporary store, never the standard port 4222.
package natstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is a running in-process nats-server that can be stopped and started
// again on the same port and store directory, as a broker outage would.
type Server struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// Start starts a server with JetStream enabled and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, opts: server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	s.start()
	// Keep the port the first start picked so a restart reuses it.
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

// StartConfig starts a server from a nats-server configuration file, as
// shippy's deployments run it, with vars defined before the file's own
// content (the passwords it reads from the environment), on a random
// loopback port and a temporary store.
func StartConfig(t testing.TB, file string, vars map[string]string) *Server {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("natstest: read %s: %v", file, err)
	}
	var conf strings.Builder
	for k, v := range vars {
		fmt.Fprintf(&conf, "%s: %q\n", k, v)
	}
	conf.Write(raw)
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("natstest: %s: %v", file, err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s := &Server{t: t, opts: *opts}
	s.start()
	s.opts.Port = s.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	opts := s.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		s.t.Fatalf("natstest: new server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		s.t.Fatalf("natstest: server on port %d not ready within 10s", s.opts.Port)
	}
	s.srv = srv
}

// URL is the client URL, e.g. nats://127.0.0.1:41234.
func (s *Server) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
}

// Stop shuts the server down and waits until it has; calling it twice is fine.
func (s *Server) Stop() {
	if s.srv == nil {
		return
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	s.srv = nil
}

// Restart starts a stopped server again on the same port and store directory,
// so JetStream streams and their messages survive.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}
