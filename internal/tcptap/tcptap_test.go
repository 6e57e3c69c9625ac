package tcptap

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// An echo server that answers each line with the caller's address.
func TestTapForwardsRecordsAndDialsFrom(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				c.Write([]byte(strings.TrimSpace(line) + " from " + host + "\n"))
			}()
		}
	}()

	for _, from := range []string{"", "127.0.0.2"} {
		var opts []Option
		if from != "" {
			opts = append(opts, DialFrom(from))
		}
		tap := Start(t, ln.Addr().String(), opts...)
		c, err := net.Dial("tcp", tap.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello secret\n"))
		answer, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		want := "127.0.0.1"
		if from != "" {
			want = from
		}
		if err != nil || answer != "hello secret from "+want+"\n" {
			t.Errorf("through a tap dialing from %q: answer %q, %v; want the line back from %s", from, answer, err, want)
		}
		if string(tap.Sent()) != "hello secret\n" || string(tap.Received()) != answer {
			t.Errorf("tap recorded sent %q, received %q; want the request and the answer", tap.Sent(), tap.Received())
		}
	}
}
