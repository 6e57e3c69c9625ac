package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// sinkOptions shape an in-process SMTP server.
type sinkOptions struct {
	startTLS    bool   // offer STARTTLS, with a self-signed certificate
	implicitTLS bool   // TLS from the first byte (smtps)
	user, pass  string // if set, require AUTH PLAIN with these before MAIL
	// mail, rcpt and data, if set, answer the n-th MAIL FROM, RCPT TO or
	// DATA (counted from 1 over the sink's life) instead of accepting it.
	mail func(n int, from string) error
	rcpt func(n int, to string) error
	data func(n int) error
}

// smtpSink is an in-process SMTP server (go-smtp) that records what it is
// sent.
type smtpSink struct {
	opts   sinkOptions
	host   string
	port   int
	caFile string // the server certificate, PEM, for SMTP_CA_FILE

	mu         sync.Mutex
	mails      []sinkMail
	mailCalls  int
	rcptCalls  int
	dataCalls  int
	authFailed int
}

// sinkMail is one message the sink accepted.
type sinkMail struct {
	From     string
	To       []string
	Data     []byte
	TLS      bool
	AuthUser string
}

// startSMTPSink starts a sink on a random loopback port, closed when the test
// ends.
func startSMTPSink(t *testing.T, opts sinkOptions) *smtpSink {
	t.Helper()
	s := &smtpSink{opts: opts}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: s, conn: c}, nil
	}))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)

	var l net.Listener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	if opts.startTLS || opts.implicitTLS {
		cert, certPEM := selfSignedCert(t)
		s.caFile = filepath.Join(t.TempDir(), "smtp-ca.pem")
		if err := os.WriteFile(s.caFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.startTLS {
			srv.TLSConfig = cfg
		}
		if opts.implicitTLS {
			l = tls.NewListener(l, cfg)
		}
	}
	addr := l.Addr().(*net.TCPAddr)
	s.host, s.port = addr.IP.String(), addr.Port
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// addr is the sink's host:port.
func (s *smtpSink) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

func (s *smtpSink) received() []sinkMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkMail(nil), s.mails...)
}

// calls returns how many MAIL FROM, RCPT TO and DATA commands came.
func (s *smtpSink) calls() (mail, rcpt, data int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailCalls, s.rcptCalls, s.dataCalls
}

type sinkSession struct {
	sink     *smtpSink
	conn     *smtp.Conn
	authUser string
	from     string
	to       []string
}

func (ss *sinkSession) AuthMechanisms() []string {
	if ss.sink.opts.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *sinkSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.sink.opts.user || pass != ss.sink.opts.pass {
			ss.sink.mu.Lock()
			ss.sink.authFailed++
			ss.sink.mu.Unlock()
			return smtp.ErrAuthFailed
		}
		ss.authUser = user
		return nil
	}), nil
}

func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s := ss.sink
	if s.opts.user != "" && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.mu.Lock()
	s.mailCalls++
	n := s.mailCalls
	s.mu.Unlock()
	if s.opts.mail != nil {
		if err := s.opts.mail(n, from); err != nil {
			return err
		}
	}
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.sink
	s.mu.Lock()
	s.rcptCalls++
	n := s.rcptCalls
	s.mu.Unlock()
	if s.opts.rcpt != nil {
		if err := s.opts.rcpt(n, to); err != nil {
			return err
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	s := ss.sink
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.dataCalls++
	n := s.dataCalls
	s.mu.Unlock()
	if s.opts.data != nil {
		if err := s.opts.data(n); err != nil {
			return err
		}
	}
	_, isTLS := ss.conn.TLSConnectionState()
	s.mu.Lock()
	s.mails = append(s.mails, sinkMail{From: ss.from, To: ss.to, Data: b, TLS: isTLS, AuthUser: ss.authUser})
	s.mu.Unlock()
	return nil
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }

// smtpReply is an SMTP error reply such as 550 5.1.1.
func smtpReply(code int, enhanced smtp.EnhancedCode, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: msg}
}

// selfSignedCert is a certificate for 127.0.0.1 and localhost that is its
// own CA, and its PEM.
func selfSignedCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "shippy test smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPEM
}

// lockedBuffer is an io.Writer safe for the goroutines of a service, for
// capturing its logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
