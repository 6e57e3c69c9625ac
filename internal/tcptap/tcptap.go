// Package tcptap is a TCP proxy for tests. It forwards each connection to a
// target and records the bytes in both directions, so a test can see what
// crosses the wire (a password in clear, or TLS records); and it can dial
// the target from a chosen local address (127.0.0.2 on Linux's loopback),
// so the target sees a caller other than the test's other clients.
package tcptap

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Tap is a running proxy.
type Tap struct {
	ln     net.Listener
	target string
	dialer net.Dialer

	mu       sync.Mutex
	sent     bytes.Buffer // client to target
	received bytes.Buffer // target to client
	conns    map[net.Conn]bool
	closed   bool
	wg       sync.WaitGroup
}

// Option configures a Tap.
type Option func(*Tap)

// DialFrom makes the tap connect to the target from ip (port chosen by the
// system), so the target sees ip as the caller.
func DialFrom(ip string) Option {
	return func(t *Tap) { t.dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ip)} }
}

// Start listens on a free loopback port and forwards to target until the
// test ends.
func Start(t testing.TB, target string, opts ...Option) *Tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcptap: listen: %v", err)
	}
	tap := &Tap{ln: ln, target: target, dialer: net.Dialer{Timeout: 5 * time.Second}, conns: map[net.Conn]bool{}}
	for _, o := range opts {
		o(tap)
	}
	tap.wg.Add(1)
	go tap.accept(t)
	t.Cleanup(tap.close)
	return tap
}

// Addr is the address clients connect to.
func (t *Tap) Addr() string { return t.ln.Addr().String() }

// Sent returns a copy of everything clients sent to the target so far.
func (t *Tap) Sent() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.sent.Bytes())
}

// Received returns a copy of everything the target answered so far.
func (t *Tap) Received() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return bytes.Clone(t.received.Bytes())
}

func (t *Tap) accept(tb testing.TB) {
	defer t.wg.Done()
	for {
		client, err := t.ln.Accept()
		if err != nil {
			return // closed
		}
		server, err := t.dialer.Dial("tcp", t.target)
		if err != nil {
			tb.Logf("tcptap: dial %s: %v", t.target, err)
			client.Close()
			continue
		}
		if !t.track(client, server) {
			return
		}
		t.wg.Add(2)
		go t.copy(server, client, &t.sent)
		go t.copy(client, server, &t.received)
	}
}

// track records the pair for close; false when the tap closed meanwhile.
func (t *Tap) track(conns ...net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		t.conns[c] = true
	}
	return true
}

// copy forwards src to dst, recording into rec, and then ends the write
// side of dst so that half-closes travel through.
func (t *Tap) copy(dst, src net.Conn, rec *bytes.Buffer) {
	defer t.wg.Done()
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			t.mu.Lock()
			rec.Write(buf[:n])
			t.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
				src.Close()
				return
			}
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (t *Tap) close() {
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.ln.Close()
	t.wg.Wait()
}
