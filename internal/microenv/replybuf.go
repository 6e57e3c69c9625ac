package microenv

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"

	"go-micro.dev/v6/transport"
)

// go-micro's http transport writes each reply with http.Response.Write
// straight onto the hijacked connection (transport/http_socket.go,
// sendHTTP1): every header line is a write(2) and a TCP segment of its own.
// In BenchmarkStacks that was half the CPU of a ValidateToken call, and
// 16 callers got less done than one (BENCH.md, issue 14). replyBuffer gives
// the http transport a listener whose connections gather one HTTP/1 reply
// and write it at once when its body is complete. Anything else written on
// a connection (HTTP/2, a reply without Content-Length) goes out as is.

// replyBuffer is the plain (no TLS) http transport with coalesced replies.
type replyBuffer struct{ transport.Transport }

func (t replyBuffer) Listen(addr string, opts ...transport.ListenOption) (transport.Listener, error) {
	// A port range ("host:8000-8080") is go-micro's to resolve.
	if _, port, err := net.SplitHostPort(addr); err != nil || strings.Contains(port, "-") {
		return t.Transport.Listen(addr, opts...)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return t.Transport.Listen(addr, append(opts, transport.NetListener(coalescingListener{l}))...)
}

type coalescingListener struct{ net.Listener }

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c}, nil
}

// coalescingConn holds the writes of an HTTP/1 response until its headers
// and Content-Length bytes of body are in, then writes them together.
type coalescingConn struct {
	net.Conn
	mu   sync.Mutex
	buf  []byte
	want int // total length of the held response, once its headers are in; 0 before
}

var headerEnd = []byte("\r\n\r\n")

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.buf) == 0 && !bytes.HasPrefix(p, []byte("HTTP/1.")) {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if c.want == 0 {
		end := bytes.Index(c.buf, headerEnd)
		if end < 0 {
			if len(c.buf) > 64<<10 { // not a reply we understand
				return len(p), c.flush()
			}
			return len(p), nil
		}
		n, ok := contentLength(c.buf[:end])
		if !ok {
			return len(p), c.flush()
		}
		c.want = end + len(headerEnd) + n
	}
	if len(c.buf) >= c.want {
		return len(p), c.flush()
	}
	return len(p), nil
}

// flush writes what is held; c.mu must be held. An error is the
// connection's, as an unbuffered write would have met it.
func (c *coalescingConn) flush() error {
	b := c.buf
	c.buf, c.want = c.buf[:0], 0
	_, err := c.Conn.Write(b)
	return err
}

func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if len(c.buf) > 0 {
		_ = c.flush()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// contentLength finds the Content-Length header of an HTTP/1 response head.
func contentLength(head []byte) (int, bool) {
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || !strings.EqualFold(string(k), "Content-Length") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(v)))
		return n, err == nil && n >= 0
	}
	return 0, false
}
