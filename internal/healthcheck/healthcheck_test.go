package healthcheck

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	// A port that was open and is now closed: nothing listens there.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	tests := []struct {
		addr   string
		wantOK bool
	}{
		{"127.0.0.1:" + port, true},
		{":" + port, true},
		{"0.0.0.0:" + port, true},
		{closedAddr, false},
		{"", false},
		{"no-port", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := Check(tt.addr, time.Second)
			if (err == nil) != tt.wantOK {
				t.Errorf("Check(%q) = %v; want ok=%v", tt.addr, err, tt.wantOK)
			}
		})
	}
}

func TestRequested(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"svc", "healthcheck"}, true},
		{[]string{"svc"}, false},
		{[]string{"svc", "healthcheck", "x"}, false},
		{[]string{"svc", "--help"}, false},
	}
	for _, tt := range tests {
		if got := Requested(tt.args); got != tt.want {
			t.Errorf("Requested(%q) = %v; want %v", tt.args, got, tt.want)
		}
	}
}

func TestCheckReady(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, `{"status":"not ready","failed":{"database":"timeout"}}`)
			return
		}
		fmt.Fprintln(w, `{"status":"ready"}`)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	if err := CheckReady(":"+port, time.Second); err != nil {
		t.Errorf("CheckReady(:%s) with a ready server = %v; want nil", port, err)
	}
	ready.Store(false)
	err := CheckReady("0.0.0.0:"+port, time.Second)
	if err == nil || !strings.Contains(err.Error(), "database") {
		t.Errorf("CheckReady with an unready server = %v; want an error naming the failed check", err)
	}
	if err := CheckReady("127.0.0.1:0", time.Second); err == nil {
		t.Error("CheckReady(127.0.0.1:0) = nil; want an error (a random port cannot be checked)")
	}
}

func TestCheckChoosesProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rpc := ln.Addr().String()
	tests := []struct {
		name   string
		env    map[string]string
		wantOK bool
	}{
		// Off: only the RPC port is dialled, and it listens.
		{"metrics off", map[string]string{"METRICS_ADDRESS": "off", "MICRO_SERVER_ADDRESS": rpc}, true},
		// The default ops port of this test is the RPC listener, which
		// does not speak HTTP: /readyz fails.
		{"default ops address", map[string]string{"MICRO_SERVER_ADDRESS": rpc}, false},
		{"bad METRICS_ADDRESS", map[string]string{"METRICS_ADDRESS": "nope"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := check(func(k string) string { return tt.env[k] }, rpc)
			if (err == nil) != tt.wantOK {
				t.Errorf("check(%v) = %v; want ok=%v", tt.env, err, tt.wantOK)
			}
		})
	}
}
