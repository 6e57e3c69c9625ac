package e2e

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	"github.com/shippy/shippy/internal/tcptap"
)

// What crosses the wire between the CLI and the user-service, measured:
// the user-service advertises the address of a TCP tap in front of it, so
// the CLI's requests go through the tap, which records every byte. As
// docker-compose.yml configures them, Create and Auth carry the password in
// clear; with docker-compose.tls.yml (certificates from
// scripts/tls-certs.sh, as its comment says) no byte of it crosses in
// clear and the CLI still works.
func TestPasswordOnTheWire(t *testing.T) {
	certs := t.TempDir()
	if out, err := exec.Command("bash", filepath.Join("..", "scripts", "tls-certs.sh"), certs).CombinedOutput(); err != nil {
		t.Fatalf("scripts/tls-certs.sh: %v\n%s", err, out)
	}
	// docker-compose.tls.yml's environment, its /tls mount made local.
	tlsEnv := func(service string, env map[string]string) {
		for k, v := range composeenv.ServiceIn(t, "docker-compose.tls.yml", service) {
			env[k] = strings.Replace(v, "/tls/", certs+"/", 1)
		}
	}

	for _, mode := range []struct {
		name string
		tls  bool
	}{
		{"docker-compose.yml: in clear", false},
		{"with docker-compose.tls.yml: encrypted", true},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			st := startTapped(t, func(user, cli map[string]string) {
				if mode.tls {
					tlsEnv("user-service", user)
					tlsEnv("user-cli", cli)
				}
			})
			password := "wire-secret-" + randomSuffix(t)
			email := "wire-" + randomSuffix(t) + "@example.com"
			st.cli(t, 0, "create", "--name", "Wire", "--email", email, "--password", password)
			afterCreate := bytes.Count(st.tap.Sent(), []byte(password))
			st.cli(t, 0, "auth", "--email", email, "--password", password)
			sent := st.tap.Sent()
			afterAuth := bytes.Count(sent, []byte(password))
			t.Logf("%s: %d bytes from the CLI; the password in clear %d times in Create, %d in Auth",
				mode.name, len(sent), afterCreate, afterAuth-afterCreate)
			switch {
			case len(sent) == 0:
				t.Fatal("the tap saw no byte: the CLI did not go through it")
			case !mode.tls && (afterCreate < 1 || afterAuth-afterCreate < 1):
				t.Errorf("without TLS: the password appears %d times in Create and %d in Auth; want it in both (the capture works)",
					afterCreate, afterAuth-afterCreate)
			case mode.tls && afterAuth != 0:
				t.Errorf("with TLS: the password crossed in clear %d times", afterAuth)
			case mode.tls && sent[0] != 0x16: // a TLS handshake record
				t.Errorf("with TLS: the first byte from the CLI is %#x; want a TLS handshake (0x16)", sent[0])
			}
		})
	}

	// The server cannot stop a client that has no TLS configured from
	// sending: the request is refused, but its bytes crossed in clear.
	t.Run("a CLI without the CA, against the TLS user-service", func(t *testing.T) {
		t.Parallel()
		st := startTapped(t, func(user, _ map[string]string) { tlsEnv("user-service", user) })
		password := "wire-secret-" + randomSuffix(t)
		st.cli(t, 3, "--timeout", "5s", "create", "--name", "Wire", "--email", "wire-"+randomSuffix(t)+"@example.com", "--password", password)
		if !bytes.Contains(st.tap.Sent(), []byte(password)) {
			t.Errorf("a CLI without TLS did not send the password in clear; SECURITY.md says it does, update it")
		}
	})
}

// tappedStack is the user-service, configured as docker-compose.yml says,
// behind a tap, and a CLI whose calls go through it.
type tappedStack struct {
	*stack
	tap *tcptap.Tap
}

// startTapped starts the user-service with its RPC server on a port of its
// own and the tap's address advertised in its place; configure may change
// the service's and the CLI's environment.
func startTapped(t *testing.T, configure func(user, cli map[string]string)) *tappedStack {
	t.Helper()
	ns := natstest.Start(t)
	user := composeenv.Localize(t, composeenv.Service(t, "user-service"), ns.URL(), pgtest.NewDatabase(t))
	cli := composeenv.Localize(t, composeenv.Service(t, "user-cli"), ns.URL(), "")
	cli["XDG_CONFIG_HOME"] = t.TempDir()
	configure(user, cli)
	server := "127.0.0.1:" + freePort(t)
	tap := tcptap.Start(t, server)
	user["MICRO_SERVER_ADDRESS"], user["MICRO_SERVER_ADVERTISE"] = server, tap.Addr()
	st := &stack{natsURL: ns.URL(), cliEnv: composeenv.Environ(cli)}
	st.user = startProcess(t, "shippy-user-service", composeenv.Environ(user))
	waitRegistered(t, ns.URL(), "go.micro.srv.user", st.user)
	return &tappedStack{stack: st, tap: tap}
}

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}
