package e2e

import (
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/registry"
	natsreg "go-micro.dev/v6/registry/nats"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// NATS as deploy/nats/shippy.conf runs it (docker-compose.yml and make up):
// the stack works with each program's own credentials, and a connection
// without credentials, or with the email-service's or the CLI's, can neither
// publish user.created nor answer as go.micro.srv.user.
func TestNATSPermissions(t *testing.T) {
	t.Parallel()
	passwords := map[string]string{
		"user-service":  "user-" + randomSuffix(t) + randomSuffix(t),
		"email-service": "email-" + randomSuffix(t) + randomSuffix(t),
		"cli":           "cli-" + randomSuffix(t) + randomSuffix(t),
	}
	ns := natstest.StartConfig(t, filepath.Join("..", "deploy", "nats", "shippy.conf"), map[string]string{
		"NATS_USER_SERVICE_PASSWORD":  passwords["user-service"],
		"NATS_EMAIL_SERVICE_PASSWORD": passwords["email-service"],
		"NATS_CLI_PASSWORD":           passwords["cli"],
		"NATS_OPS_PASSWORD":           "ops-" + randomSuffix(t) + randomSuffix(t),
	})
	db := pgtest.NewDatabase(t)
	env := func(service, user string) []string {
		e := composeenv.Localize(t, composeenv.Service(t, service), ns.URL(), db)
		e["NATS_USER"], e["NATS_PASSWORD"] = user, passwords[user]
		return composeenv.Environ(e)
	}
	user := startProcess(t, "shippy-user-service", env("user-service", "user-service"))
	email := startProcess(t, "shippy-email-service", env("email-service", "email-service"))
	cliEnv := env("user-cli", "cli")
	cliReg := natsregistry.New([]registry.Option{registry.Addrs(ns.URL())},
		natsregistry.NatsOptions(nats.UserInfo("cli", passwords["cli"]), nats.CustomInboxPrefix("_INBOX_cli")))
	t.Cleanup(cliReg.Close)
	waitUntil(t, "both services registered", 30*time.Second, func() bool {
		return len(nodes(cliReg, userServiceName)) > 0 && len(nodes(cliReg, emailServiceName)) > 0
	})
	realUser := nodes(cliReg, userServiceName)

	// The stack works with credentials: a user created through the CLI gets
	// its email.
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "shippy-user-cli"), args...)
		cmd.Env = cliEnv
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("shippy-user-cli %q: %v\n%s\nuser-service:\n%s", args, err, out, user.stderr)
		}
		return string(out)
	}
	suffix := randomSuffix(t)
	cli("create", "--name", "Authorised "+suffix, "--email", "authorised-"+suffix+"@example.com", "--password", "correct horse battery staple")
	email.waitFor(t, "Sending email to: Authorised "+suffix, 30*time.Second)

	t.Run("no credentials", func(t *testing.T) {
		nc, err := nats.Connect(ns.URL())
		if err == nil {
			nc.Close()
			t.Fatal("nats.Connect without credentials succeeded; want an authorization error")
		}
		if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("nats.Connect without credentials = %v; want an authorization error", err)
		}
	})

	forged := "Mallory " + suffix
	for _, who := range []string{"email-service", "cli"} {
		t.Run("as "+who, func(t *testing.T) {
			denied := &violations{}
			nc, err := nats.Connect(ns.URL(), nats.UserInfo(who, passwords[who]),
				nats.CustomInboxPrefix("_INBOX_"+who), nats.ErrorHandler(denied.record))
			if err != nil {
				t.Fatalf("connect as %s: %v", who, err)
			}
			t.Cleanup(nc.Close)

			// A forged event, as the user-service's relay publishes one.
			ev, _ := proto.Marshal(&pb.UserCreated{Id: "forged", Name: forged, Email: "mallory@example.com", EventId: "forged-" + who + suffix})
			msg := nats.NewMsg(jsbroker.DefaultSubjectPrefix + "." + pb.TopicUserCreated)
			msg.Data = ev
			msg.Header.Set("Content-Type", "application/protobuf")
			msg.Header.Set("Micro-Topic", pb.TopicUserCreated)
			if err := nc.PublishMsg(msg); err != nil {
				t.Fatal(err)
			}
			// Answering lookups of go.micro.srv.user, on shippy's subject and
			// on go-micro's, with a node of its own.
			for _, subject := range []string{natsregistry.DefaultPrefix + ".query." + userServiceName, natsregistry.GoMicroQuerySubject} {
				if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
					b, _ := jsonService(userServiceName, "impostor-"+who)
					_ = m.Respond(b)
				}); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			want := []string{
				`publish to "shippy.events.user.created"`,
				`subscription to "shippy.registry.query.go.micro.srv.user"`,
				`subscription to "micro.nats.query"`,
			}
			waitUntil(t, "NATS to refuse "+strings.Join(want, ", "), 10*time.Second, func() bool { return denied.all(want) })

			// Lookups, shippy's and go-micro's own, find only the user-service.
			if got := nodes(cliReg, userServiceName); !slices.Equal(got, realUser) {
				t.Errorf("shippy registry lookup of %s = %v; want only the user-service's %v", userServiceName, got, realUser)
			}
			stock := natsreg.NewNatsRegistry(registry.Addrs(ns.URL()), natsreg.NatsOptions(natsOptions(t, "cli", passwords["cli"])))
			svcs, err := stock.GetService(userServiceName)
			if err != nil {
				t.Fatalf("go-micro registry lookup of %s = %v", userServiceName, err)
			}
			var stockNodes []string
			for _, s := range svcs {
				for _, n := range s.Nodes {
					stockNodes = append(stockNodes, n.Id)
				}
			}
			if slices.Sort(stockNodes); !slices.Equal(stockNodes, realUser) {
				t.Errorf("go-micro registry lookup of %s = %v; want only the user-service's %v", userServiceName, stockNodes, realUser)
			}
		})
	}

	// The forged events never reached the email-service: a user created
	// after them is mailed, they are not.
	cli("create", "--name", "Sentinel "+suffix, "--email", "sentinel-"+suffix+"@example.com", "--password", "correct horse battery staple")
	email.waitFor(t, "Sending email to: Sentinel "+suffix, 30*time.Second)
	if strings.Contains(email.stdout.String(), forged) {
		t.Errorf("the email-service mailed the forged user %q", forged)
	}
}

// nodes lists the node ids reg finds for service, sorted.
func nodes(reg registry.Registry, service string) []string {
	svcs, err := reg.GetService(service)
	if err != nil {
		return nil
	}
	var ids []string
	for _, s := range svcs {
		for _, n := range s.Nodes {
			ids = append(ids, n.Id)
		}
	}
	slices.Sort(ids)
	return ids
}

func jsonService(name, node string) ([]byte, error) {
	return json.Marshal(&registry.Service{Name: name, Version: "latest",
		Nodes: []*registry.Node{{Id: node, Address: "127.0.0.1:1"}}})
}

// natsOptions is the struct form go-micro's stock registry takes.
func natsOptions(t *testing.T, user, password string) nats.Options {
	t.Helper()
	o := nats.GetDefaultOptions()
	if err := nats.UserInfo(user, password)(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

// violations records the permission errors NATS reports on a connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) record(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, strings.ToLower(err.Error()))
}

// all reports whether every want is in some recorded error.
func (v *violations) all(want []string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, w := range want {
		if !slices.ContainsFunc(v.errs, func(e string) bool { return strings.Contains(e, strings.ToLower(w)) }) {
			return false
		}
	}
	return true
}
