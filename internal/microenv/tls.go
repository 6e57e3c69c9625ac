package microenv

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"go-micro.dev/v6/transport"
)

// TLS on the http transport: the RPC between programs (the CLI and the
// user-service), which otherwise carries requests, passwords included, in
// clear.
//
//	MICRO_TRANSPORT_TLS_CERT_FILE, MICRO_TRANSPORT_TLS_KEY_FILE
//	    the RPC server's certificate chain and key (PEM): the server
//	    listens with TLS only.
//	MICRO_TRANSPORT_TLS_CA_FILE
//	    CAs (PEM) the program's client trusts: its calls use TLS and
//	    verify the server's certificate; no system CAs are added.
//	MICRO_TRANSPORT_TLS_SERVER_NAME
//	    the name the server's certificate must carry; by default the host
//	    of the address dialled, which is the registered address, often an
//	    IP (a container's, a pod's).
//
// go-micro's own switch, transport.Secure(true) without a configuration,
// makes the server a self-signed certificate that no client verifies
// (go-micro's client verifies against the system's CAs and fails); shippy
// does not use it. Nothing here skips verification.

// TransportTLSEnv is the MICRO_TRANSPORT_TLS_* configuration.
type TransportTLSEnv struct {
	CertFile, KeyFile, CAFile, ServerName string

	cert  *tls.Certificate
	roots *x509.CertPool
}

// Server reports whether the RPC server listens with TLS.
func (t TransportTLSEnv) Server() bool { return t.cert != nil }

// Client reports whether the program's calls use TLS.
func (t TransportTLSEnv) Client() bool { return t.roots != nil }

var transportTLSVars = []string{
	"MICRO_TRANSPORT_TLS_CERT_FILE", "MICRO_TRANSPORT_TLS_KEY_FILE",
	"MICRO_TRANSPORT_TLS_CA_FILE", "MICRO_TRANSPORT_TLS_SERVER_NAME",
}

func loadTransportTLS(getenv func(string) string, transportName string) (TransportTLSEnv, error) {
	t := TransportTLSEnv{
		CertFile: getenv("MICRO_TRANSPORT_TLS_CERT_FILE"), KeyFile: getenv("MICRO_TRANSPORT_TLS_KEY_FILE"),
		CAFile: getenv("MICRO_TRANSPORT_TLS_CA_FILE"), ServerName: getenv("MICRO_TRANSPORT_TLS_SERVER_NAME"),
	}
	if transportName != TransportHTTP {
		for _, v := range transportTLSVars {
			if getenv(v) != "" {
				return TransportTLSEnv{}, fmt.Errorf("%s is set but MICRO_TRANSPORT=%s: it configures the http transport; the NATS transport's TLS is its NATS connection's (tls:// URLs, NATS_CA_FILE)", v, transportName)
			}
		}
		return t, nil
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return TransportTLSEnv{}, errors.New("MICRO_TRANSPORT_TLS_CERT_FILE and MICRO_TRANSPORT_TLS_KEY_FILE go together: set both or neither")
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return TransportTLSEnv{}, fmt.Errorf("MICRO_TRANSPORT_TLS_CERT_FILE=%q, MICRO_TRANSPORT_TLS_KEY_FILE=%q: %w", t.CertFile, t.KeyFile, err)
		}
		t.cert = &cert
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return TransportTLSEnv{}, fmt.Errorf("MICRO_TRANSPORT_TLS_CA_FILE: %w", err)
		}
		t.roots = x509.NewCertPool()
		if !t.roots.AppendCertsFromPEM(pem) {
			return TransportTLSEnv{}, fmt.Errorf("MICRO_TRANSPORT_TLS_CA_FILE=%q holds no PEM certificate", t.CAFile)
		}
	}
	if t.ServerName != "" && t.CAFile == "" {
		return TransportTLSEnv{}, errors.New("MICRO_TRANSPORT_TLS_SERVER_NAME is set without MICRO_TRANSPORT_TLS_CA_FILE: it names the certificate a TLS client expects")
	}
	return t, nil
}

// httpTransport is go-micro's http transport with TLS where configured:
// on the server's side with a certificate, on the client's with CAs.
func (e Env) httpTransport() transport.Transport {
	plain := transport.NewHTTPTransport(transport.Addrs(e.TransportAddrs...))
	t := e.TransportTLS
	if !t.Server() && !t.Client() {
		return replyBuffer{plain}
	}
	tt := &tlsTransport{Transport: plain, addrs: e.TransportAddrs}
	if t.Server() {
		tt.listen = transport.NewHTTPTransport(transport.Addrs(e.TransportAddrs...), transport.TLSConfig(&tls.Config{
			Certificates: []tls.Certificate{*t.cert},
			MinVersion:   tls.VersionTLS12,
		}))
	}
	if t.Client() {
		tt.client = &tls.Config{RootCAs: t.roots, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	}
	return tt
}

// tlsTransport listens through listen (TLS) when set and dials with client
// (TLS) when set; otherwise the plain transport does.
type tlsTransport struct {
	transport.Transport
	listen transport.Transport
	client *tls.Config
	addrs  []string
}

func (t *tlsTransport) Listen(addr string, opts ...transport.ListenOption) (transport.Listener, error) {
	if t.listen == nil {
		return t.Transport.Listen(addr, opts...)
	}
	return t.listen.Listen(addr, opts...)
}

func (t *tlsTransport) Dial(addr string, opts ...transport.DialOption) (transport.Client, error) {
	if t.client == nil {
		return t.Transport.Dial(addr, opts...)
	}
	// go-micro's Dial writes NextProtos into the configuration it holds:
	// a transport and a copy per dial keep parallel dials from racing.
	return transport.NewHTTPTransport(transport.Addrs(t.addrs...), transport.TLSConfig(t.client.Clone())).Dial(addr, opts...)
}
