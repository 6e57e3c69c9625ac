// Package tutorial runs code written as in the tutorial ("Microservices in
// Golang, part 5") against the real shippy-user-service: the tutorial's own
// user.proto and generated code (testdata/tutorialpb), its client, and its
// email-service in both forms, as processes of their own.
//
// This package must not link shippy's proto/user: both define
// go.micro.srv.user.User, and the protobuf registry panics on the second.
// That is also the honest setup: a tutorial reader's programs only have the
// tutorial's code.
package tutorial

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/broker"
	natsbroker "go-micro.dev/v6/broker/nats"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	natsreg "go-micro.dev/v6/registry/nats"
	"go-micro.dev/v6/selector"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/e2e/tutorial/testdata/received"
	pb "github.com/shippy/shippy/e2e/tutorial/testdata/tutorialpb"
	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/logbuf"
	"github.com/shippy/shippy/internal/natstest"
)

const topic = "user.created"

// probePrefix starts the ids of the test's own probe events.
const probePrefix = "probe-"

// The tutorial's two email-services (testdata): micro.RegisterSubscriber
// with Process(ctx, *pb.User), and the raw broker with json.Unmarshal.
const (
	microSubscriber  = "email-service"
	brokerSubscriber = "email-service-broker"
)

// bin is the folder the binaries are built into once per test run.
var bin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shippy-tutorial-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./shippy-user-service",
		"./e2e/tutorial/testdata/"+microSubscriber, "./e2e/tutorial/testdata/"+brokerSubscriber)
	build.Dir = filepath.Join("..", "..")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "tutorial: build the binaries:", err)
		return 1
	}
	bin = dir
	return m.Run()
}

// Every way a tutorial reader can receive user.created from shippy gets the
// new user's id, name, company and email in the tutorial's User, and no
// password.
func TestTutorialSubscribersReadUserCreated(t *testing.T) {
	modes := []struct {
		name   string
		broker string // MICRO_BROKER; "" is go-micro's built-in (http) broker
		codec  string // the user-service's EVENTS_CODEC
		// subscriber is the tutorial's email-service to run; "" subscribes
		// in the test to the JetStream subject with a plain NATS client.
		subscriber string
	}{
		{"built-in broker, micro.RegisterSubscriber", "", "proto", microSubscriber},
		{"built-in broker, json events, broker.Subscribe", "", "json", brokerSubscriber},
		{"nats broker, micro.RegisterSubscriber", "nats", "proto", microSubscriber},
		{"nats broker, json events, broker.Subscribe", "nats", "json", brokerSubscriber},
		{"jetstream subject, proto.Unmarshal", "jetstream", "proto", ""},
		{"jetstream subject, json events, json.Unmarshal", "jetstream", "json", ""},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			ns := natstest.Start(t)
			micro := map[string]string{
				"MICRO_REGISTRY":         "nats",
				"MICRO_REGISTRY_ADDRESS": ns.URL(),
				"MICRO_SERVER_ADDRESS":   "127.0.0.1:0",
			}
			if mode.broker != "" {
				micro["MICRO_BROKER"] = mode.broker
				micro["MICRO_BROKER_ADDRESS"] = ns.URL()
			}

			var got inbox
			if mode.subscriber != "" {
				sub := startProcess(t, mode.subscriber, composeenv.Environ(micro))
				got = sub
				waitSubscribed(t, ns.URL(), mode.broker, mode.codec, sub)
			} else {
				got = tapJetStream(t, ns.URL(), mode.codec)
			}

			userEnv := map[string]string{
				"SQLITE_PATH":  filepath.Join(t.TempDir(), "users.db"),
				"EVENTS_CODEC": mode.codec,
				"BCRYPT_COST":  "4", // bcrypt is not under test
			}
			for k, v := range micro {
				userEnv[k] = v
			}
			user := startProcess(t, "shippy-user-service", composeenv.Environ(userEnv))
			waitRegistered(t, ns.URL(), "go.micro.srv.user", user)

			// The tutorial's client, as its user-cli makes it.
			users := pb.NewUserService("go.micro.srv.user", tutorialClient(ns.URL()))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req := &pb.User{Name: "Ewan Valentine", Company: "BBC", Email: "ewan.valentine89@gmail.com", Password: "test123 but longer"}
			res, err := users.Create(ctx, req)
			if err != nil {
				t.Fatalf("Create(%v) = %v", req, err)
			}
			id := res.GetUser().GetId()
			if id == "" {
				t.Fatalf("Create(%v) returned no user id: %v", req, res)
			}

			want := received.User{ID: id, Name: req.Name, Company: req.Company, Email: req.Email}
			if u := waitEvent(t, got); u != want {
				t.Errorf("the tutorial's subscriber read %+v; want %+v", u, want)
			}
		})
	}
}

// tutorialClient is a go-micro client on the test's NATS registry. It sends
// protobuf, go-micro v1's default and so the tutorial's (v6 defaults to JSON).
func tutorialClient(natsURL string) client.Client {
	reg := natsreg.NewNatsRegistry(registry.Addrs(natsURL))
	// A selector of its own: client.Registry would otherwise re-point the
	// process-wide one, shared by the parallel tests.
	return client.NewClient(
		client.Selector(selector.NewSelector()),
		client.Registry(reg),
		client.ContentType("application/protobuf"),
		client.RequestTimeout(20*time.Second),
	)
}

// inbox is what a subscriber has decoded so far.
type inbox interface {
	received() []received.User
}

// waitEvent polls in until it holds an event other than the probes, the one
// the user-service published, and returns it.
func waitEvent(t *testing.T, in inbox) received.User {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, u := range in.received() {
			if !strings.HasPrefix(u.ID, probePrefix) {
				return u
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within 30s; received %+v", topic, in.received())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSubscribed returns once the subscriber process receives user.created.
// With the built-in broker its subscription is a registry node; a NATS
// subscription is invisible, so probes are published until one arrives.
func waitSubscribed(t *testing.T, natsURL, brokerName, codec string, sub *process) {
	t.Helper()
	reg := natsreg.NewNatsRegistry(registry.Addrs(natsURL))
	var probe func(id string) error
	if brokerName == "nats" {
		b := natsbroker.NewNatsBroker(broker.Addrs(natsURL))
		if err := b.Connect(); err != nil {
			t.Fatalf("connect NATS broker: %v", err)
		}
		t.Cleanup(func() { _ = b.Disconnect() })
		probe = func(id string) error { return publishProbe(b, codec, id) }
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if probe == nil && httpSubscribed(reg) {
			return
		}
		if probe != nil {
			id := fmt.Sprintf("%s%d", probePrefix, i)
			if err := probe(id); err != nil {
				t.Fatalf("publish probe: %v", err)
			}
			for _, u := range sub.received() {
				if strings.HasPrefix(u.ID, probePrefix) {
					return
				}
			}
		}
		select {
		case <-sub.exited:
			t.Fatalf("%s exited before it subscribed:\n%s", sub.name, sub.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not receive %s within 30s:\n%s", sub.name, topic, sub.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpSubscribed reports whether go-micro's built-in broker has a node
// subscribed to the topic: it registers one per subscription.
func httpSubscribed(reg registry.Registry) bool {
	svcs, err := reg.GetService("micro.http.broker")
	if err != nil {
		return false
	}
	for _, s := range svcs {
		for _, n := range s.Nodes {
			if n.Metadata["topic"] == topic {
				return true
			}
		}
	}
	return false
}

// publishProbe publishes a User as the user-service would in codec.
func publishProbe(b broker.Broker, codec, id string) error {
	u := &pb.User{Id: id, Name: "probe"}
	var (
		body []byte
		err  error
		ct   = "application/protobuf"
	)
	if codec == "json" {
		body, err = json.Marshal(u)
		ct = "application/json"
	} else {
		body, err = proto.Marshal(u)
	}
	if err != nil {
		return err
	}
	return b.Publish(topic, &broker.Message{Header: map[string]string{"Content-Type": ct, "Micro-Topic": topic}, Body: body})
}

// jetStreamTap decodes what the user-service stores on the JetStream
// subject, as any NATS client on the bus sees it: the body alone.
type jetStreamTap struct {
	mu    sync.Mutex
	users []received.User
}

func tapJetStream(t *testing.T, natsURL, codec string) *jetStreamTap {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	tap := &jetStreamTap{}
	subject := jsbroker.DefaultSubjectPrefix + "." + topic
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var user *pb.User
		var err error
		if codec == "json" {
			err = json.Unmarshal(m.Data, &user)
		} else {
			user = &pb.User{}
			err = proto.Unmarshal(m.Data, user)
		}
		tap.mu.Lock()
		defer tap.mu.Unlock()
		if err != nil {
			// waitEvent returns it, and the comparison shows the error.
			tap.users = append(tap.users, received.User{ID: fmt.Sprintf("undecodable %q: %v", m.Data, err)})
			return
		}
		tap.users = append(tap.users, received.User{ID: user.Id, Name: user.Name, Company: user.Company, Email: user.Email, Password: user.Password})
	}); err != nil {
		t.Fatalf("subscribe to %s: %v", subject, err)
	}
	// Once the server has answered, the subscription is in place.
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return tap
}

func (j *jetStreamTap) received() []received.User {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]received.User(nil), j.users...)
}

// waitRegistered polls the NATS registry until service has a node; a lookup
// through a go-micro client would cache a miss for 5 s.
func waitRegistered(t *testing.T, natsURL, service string, p *process) {
	t.Helper()
	reg := natsreg.NewNatsRegistry(registry.Addrs(natsURL))
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, err := reg.GetService(service)
		if err == nil && len(svcs) > 0 && len(svcs[0].Nodes) > 0 {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("%s exited before it registered:\n%s", p.name, p.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not register within 30s (last error %v):\n%s", service, err, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type process struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *logbuf.Buffer
	exited         chan struct{}
}

func startProcess(t *testing.T, name string, env []string) *process {
	t.Helper()
	p := &process{name: name, stdout: &logbuf.Buffer{}, stderr: &logbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(bin, name))
	p.cmd.Env = env
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10s of SIGINT", name)
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout, name, p.stderr)
		}
	})
	return p
}

// received parses the lines the tutorial's email-service printed.
func (p *process) received() []received.User {
	var out []received.User
	for _, line := range strings.Split(p.stdout.String(), "\n") {
		rest, ok := strings.CutPrefix(line, received.Prefix)
		if !ok {
			continue
		}
		var u received.User
		if err := json.Unmarshal([]byte(rest), &u); err == nil {
			out = append(out, u)
		}
	}
	return out
}
