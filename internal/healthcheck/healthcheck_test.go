package healthcheck

import (
	"net"
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
