package microenv

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// recordConn counts the writes that reach the connection.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

func TestCoalescingConnWritesOneReplyAtOnce(t *testing.T) {
	body := "hello"
	rsp := &http.Response{
		Status: "200 OK", StatusCode: 200, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Micro-Id": {"1"}, "Content-Type": {"application/protobuf"}, "Micro-Endpoint": {"X.Y"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}
	for _, tc := range []struct {
		name      string
		write     func(io.Writer) error
		wantCalls int
	}{
		{"one response", func(w io.Writer) error { return rsp.Write(w) }, 1},
		{"HTTP/2 bytes pass through", func(w io.Writer) error {
			_, err := w.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
			return err
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rsp.Body = io.NopCloser(strings.NewReader(body))
			rec := &recordConn{}
			c := &coalescingConn{Conn: rec}
			if err := tc.write(c); err != nil {
				t.Fatal(err)
			}
			if len(rec.writes) != tc.wantCalls {
				t.Fatalf("writes reaching the connection = %d; want %d", len(rec.writes), tc.wantCalls)
			}
			if tc.name == "one response" {
				got, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(rec.writes[0])), nil)
				if err != nil {
					t.Fatalf("ReadResponse: %v", err)
				}
				b, _ := io.ReadAll(got.Body)
				if string(b) != body || got.Header.Get("Micro-Id") != "1" {
					t.Fatalf("reply = %q, Micro-Id %q; want %q, 1", b, got.Header.Get("Micro-Id"), body)
				}
			}
		})
	}
}
