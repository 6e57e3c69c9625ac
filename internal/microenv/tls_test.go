package microenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shippy/shippy/internal/tcptap"
)

// testCA writes a CA and a server certificate for dnsNames (and
// 127.0.0.1 when withIP) signed by it into dir: ca.crt, server.crt,
// server.key.
func testCA(t *testing.T, dir string, withIP bool, dnsNames ...string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shippy test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if withIP {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca.crt", "CERTIFICATE", caDER)
	write("server.crt", "CERTIFICATE", der)
	write("server.key", "EC PRIVATE KEY", keyDER)
}

func TestLoadEnvTransportTLS(t *testing.T) {
	dir := t.TempDir()
	testCA(t, dir, false, "user-service")
	f := func(name string) string { return filepath.Join(dir, name) }
	notPEM := f("not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	server := map[string]string{"MICRO_TRANSPORT_TLS_CERT_FILE": f("server.crt"), "MICRO_TRANSPORT_TLS_KEY_FILE": f("server.key")}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    func(TransportTLSEnv) bool
		wantErr string
	}{
		{"none: in clear", nil, func(t TransportTLSEnv) bool { return !t.Server() && !t.Client() }, ""},
		{"server", server, func(t TransportTLSEnv) bool { return t.Server() && !t.Client() }, ""},
		{"client", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f("ca.crt"), "MICRO_TRANSPORT_TLS_SERVER_NAME": "user-service"},
			func(t TransportTLSEnv) bool { return !t.Server() && t.Client() && t.ServerName == "user-service" }, ""},
		{"both", with(server, "MICRO_TRANSPORT_TLS_CA_FILE", f("ca.crt")), func(t TransportTLSEnv) bool { return t.Server() && t.Client() }, ""},
		{"cert without key", map[string]string{"MICRO_TRANSPORT_TLS_CERT_FILE": f("server.crt")}, nil, "MICRO_TRANSPORT_TLS_KEY_FILE"},
		{"key without cert", map[string]string{"MICRO_TRANSPORT_TLS_KEY_FILE": f("server.key")}, nil, "MICRO_TRANSPORT_TLS_CERT_FILE"},
		{"cert missing", with(server, "MICRO_TRANSPORT_TLS_CERT_FILE", f("missing.crt")), nil, "MICRO_TRANSPORT_TLS_CERT_FILE"},
		{"key not matching", with(server, "MICRO_TRANSPORT_TLS_KEY_FILE", notPEM), nil, "MICRO_TRANSPORT_TLS_KEY_FILE"},
		{"CA missing", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f("missing.crt")}, nil, "MICRO_TRANSPORT_TLS_CA_FILE"},
		{"CA not PEM", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": notPEM}, nil, "MICRO_TRANSPORT_TLS_CA_FILE"},
		{"server name alone", map[string]string{"MICRO_TRANSPORT_TLS_SERVER_NAME": "user-service"}, nil, "MICRO_TRANSPORT_TLS_SERVER_NAME"},
		{"with the NATS transport", with(server, "MICRO_TRANSPORT", "nats", "MICRO_TRANSPORT_ADDRESS", "nats://n:4222"), nil, "MICRO_TRANSPORT=nats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := LoadEnv(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("LoadEnv(%v) = %v; want nil", tt.env, err)
			case tt.wantErr == "" && !tt.want(e.TransportTLS):
				t.Errorf("LoadEnv(%v).TransportTLS = %+v; not as wanted", tt.env, e.TransportTLS)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("LoadEnv(%v) = %v; want an error naming %s", tt.env, err, tt.wantErr)
			}
		})
	}
}

// Echo answers with the request's value.
type Echo struct{}

func (Echo) Echo(_ context.Context, req *wrapperspb.StringValue, rsp *wrapperspb.StringValue) error {
	rsp.Value = req.Value
	return nil
}

// A server with a certificate and clients with the CA, through a tap that
// records the bytes: with TLS the secret never crosses in clear and the
// certificate is verified; without TLS on both sides, it does cross in
// clear, and a mismatch fails rather than falling back.
func TestTransportTLS(t *testing.T) {
	dir, otherDir := t.TempDir(), t.TempDir()
	testCA(t, dir, false, "user-service")
	testCA(t, otherDir, false, "user-service")
	f := func(d, name string) string { return filepath.Join(d, name) }
	serverEnv := map[string]string{"MICRO_TRANSPORT_TLS_CERT_FILE": f(dir, "server.crt"), "MICRO_TRANSPORT_TLS_KEY_FILE": f(dir, "server.key")}
	trusting := map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f(dir, "ca.crt"), "MICRO_TRANSPORT_TLS_SERVER_NAME": "user-service"}

	// start runs an echo server configured by env and returns a tap in
	// front of it.
	start := func(t *testing.T, env map[string]string) *tcptap.Tap {
		t.Helper()
		e := load(t, with(env, "MICRO_SERVER_ADDRESS", "127.0.0.1:0"))
		p := plugins(t, e)
		p.Registry, p.Broker = registry.NewMemoryRegistry(), broker.NewMemoryBroker()
		srv := e.NewServer("test.echo", p)
		if err := srv.Handle(srv.NewHandler(Echo{})); err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop() })
		return tcptap.Start(t, srv.Options().Address)
	}
	// call sends secret through tap with a client configured by env.
	call := func(t *testing.T, env map[string]string, tap *tcptap.Tap, secret string) error {
		t.Helper()
		e := load(t, env)
		p := plugins(t, e)
		p.Registry, p.Broker = registry.NewMemoryRegistry(), broker.NewMemoryBroker()
		c := e.NewClient(p, client.Retries(0), client.RequestTimeout(5*time.Second))
		var rsp wrapperspb.StringValue
		err := c.Call(context.Background(), c.NewRequest("test.echo", "Echo.Echo", wrapperspb.String(secret)), &rsp,
			client.WithAddress(tap.Addr()))
		if err == nil && rsp.Value != secret {
			t.Errorf("echo answered %q; want %q", rsp.Value, secret)
		}
		return err
	}

	t.Run("in clear by default", func(t *testing.T) {
		tap := start(t, nil)
		if err := call(t, nil, tap, "secret-in-clear-1"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(tap.Sent(), []byte("secret-in-clear-1")) {
			t.Errorf("without TLS the request does not hold the secret in clear; the capture is broken")
		}
	})

	t.Run("TLS, in parallel", func(t *testing.T) {
		tap := start(t, serverEnv)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := call(t, trusting, tap, "secret-under-tls-"+string(rune('a'+i))); err != nil {
					t.Errorf("call over TLS = %v", err)
				}
			}()
		}
		wg.Wait()
		if sent := tap.Sent(); len(sent) == 0 || bytes.Contains(sent, []byte("secret-under-tls")) || bytes.Contains(tap.Received(), []byte("secret-under-tls")) {
			t.Errorf("over TLS the secret crossed in clear (or nothing crossed: %d bytes)", len(sent))
		}
	})

	refused := []struct {
		name string
		env  map[string]string
	}{
		{"client in clear to a TLS server", nil},
		{"client trusting another CA", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f(otherDir, "ca.crt"), "MICRO_TRANSPORT_TLS_SERVER_NAME": "user-service"}},
		{"client expecting another name", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f(dir, "ca.crt"), "MICRO_TRANSPORT_TLS_SERVER_NAME": "email-service"}},
		// The address dialled is an IP the certificate does not name.
		{"client without a server name", map[string]string{"MICRO_TRANSPORT_TLS_CA_FILE": f(dir, "ca.crt")}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			tap := start(t, serverEnv)
			if err := call(t, tt.env, tap, "secret-refused"); err == nil {
				t.Errorf("call = nil; want it refused")
			}
			if bytes.Contains(tap.Sent(), []byte("secret-refused")) && tt.env != nil {
				t.Errorf("a TLS client sent the secret in clear")
			}
		})
	}

	t.Run("TLS client to a server in clear", func(t *testing.T) {
		tap := start(t, nil)
		if err := call(t, trusting, tap, "secret-downgrade"); err == nil {
			t.Errorf("call = nil; want it refused, not sent in clear")
		}
		if bytes.Contains(tap.Sent(), []byte("secret-downgrade")) {
			t.Errorf("the TLS client sent the secret in clear to a server without TLS")
		}
	})
}

func load(t *testing.T, env map[string]string) Env {
	t.Helper()
	e, err := LoadEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("LoadEnv(%v) = %v", env, err)
	}
	return e
}

func plugins(t *testing.T, e Env) Plugins {
	t.Helper()
	p, err := e.Plugins()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func with(base map[string]string, kv ...string) map[string]string {
	m := map[string]string{}
	for k, v := range base {
		m[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}
