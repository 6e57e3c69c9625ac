package natsregistry_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"go-micro.dev/v6/registry"
	natsreg "go-micro.dev/v6/registry/nats"

	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

func newRegistry(t *testing.T, url string, opts ...natsregistry.Option) *natsregistry.Registry {
	t.Helper()
	r := natsregistry.New([]registry.Option{registry.Addrs(url), registry.Timeout(10 * time.Second)}, opts...)
	t.Cleanup(r.Close)
	return r
}

func service(name, version string, nodes ...string) *registry.Service {
	s := &registry.Service{Name: name, Version: version}
	for _, n := range nodes {
		s.Nodes = append(s.Nodes, &registry.Node{Id: n, Address: n + ":8080", Metadata: map[string]string{"k": "v"}})
	}
	return s
}

// nodeIDs lists the node ids of services, sorted, per "name version".
func nodeIDs(services []*registry.Service) map[string][]string {
	out := map[string][]string{}
	for _, s := range services {
		k := s.Name + " " + s.Version
		for _, n := range s.Nodes {
			out[k] = append(out[k], n.Id)
		}
		slices.Sort(out[k])
	}
	return out
}

func TestGetServiceFindsEveryReplica(t *testing.T) {
	ns := natstest.Start(t)
	// Two replicas in two processes' registries, a third registry looks up;
	// a generous grace, since this test is about what is found, not when.
	a, b := newRegistry(t, ns.URL()), newRegistry(t, ns.URL())
	client := newRegistry(t, ns.URL(), natsregistry.Grace(500*time.Millisecond))
	if err := a.Register(service("go.micro.srv.user", "latest", "user-1")); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(service("go.micro.srv.user", "latest", "user-2")); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(service("go.micro.srv.user", "v2", "user-3")); err != nil {
		t.Fatal(err)
	}
	if err := a.Register(service("go.micro.srv.email", "latest", "email-1")); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetService("go.micro.srv.user")
	if err != nil {
		t.Fatalf("GetService(go.micro.srv.user) = %v", err)
	}
	want := map[string][]string{
		"go.micro.srv.user latest": {"user-1", "user-2"},
		"go.micro.srv.user v2":     {"user-3"},
	}
	if g := nodeIDs(got); !mapsEqual(g, want) {
		t.Errorf("GetService(go.micro.srv.user) nodes = %v; want %v", g, want)
	}
	if got[0].Nodes[0].Metadata["k"] != "v" {
		t.Errorf("node metadata = %v; want k=v", got[0].Nodes[0].Metadata)
	}

	list, err := client.ListServices()
	if err != nil {
		t.Fatalf("ListServices() = %v", err)
	}
	if g := nodeIDs(list); len(g) != 3 {
		t.Errorf("ListServices() = %v; want user latest, user v2, email latest", g)
	}
}

func TestGetServiceNotFound(t *testing.T) {
	ns := natstest.Start(t)
	r := newRegistry(t, ns.URL())
	// The registry's timeout is 10 s; nobody listens on the subject, so
	// NATS answers "no responders" and the lookup must not wait for it.
	done := make(chan error, 1)
	go func() {
		_, err := r.GetService("go.micro.srv.missing")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("GetService(missing) = %v; want %v", err, registry.ErrNotFound)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("GetService(missing) waited for its timeout; want NATS's no-responders answer")
	}

	// A deregistered service is gone too.
	if err := r.Register(service("go.micro.srv.user", "latest", "user-1")); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(service("go.micro.srv.user", "latest", "user-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetService("go.micro.srv.user"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("GetService after Deregister = %v; want %v", err, registry.ErrNotFound)
	}
}

func TestDeregisterKeepsOtherNodes(t *testing.T) {
	ns := natstest.Start(t)
	r := newRegistry(t, ns.URL())
	client := newRegistry(t, ns.URL())
	for _, n := range []string{"a", "b"} {
		if err := r.Register(service("go.micro.srv.user", "latest", n)); err != nil {
			t.Fatal(err)
		}
	}
	// go-micro re-registers a node every interval: no duplicate.
	if err := r.Register(service("go.micro.srv.user", "latest", "a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(service("go.micro.srv.user", "latest", "a")); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetService("go.micro.srv.user")
	if err != nil {
		t.Fatal(err)
	}
	if g, want := nodeIDs(got), map[string][]string{"go.micro.srv.user latest": {"b"}}; !mapsEqual(g, want) {
		t.Errorf("nodes after Deregister(a) = %v; want %v", g, want)
	}
}

func TestWatchSeesRegisterAndDeregister(t *testing.T) {
	ns := natstest.Start(t)
	r := newRegistry(t, ns.URL())
	w, err := newRegistry(t, ns.URL()).Watch(registry.WatchService("go.micro.srv.user"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// Another service's events must not reach this watcher.
	if err := r.Register(service("go.micro.srv.email", "latest", "e")); err != nil {
		t.Fatal(err)
	}
	s := service("go.micro.srv.user", "latest", "u")
	if err := r.Register(s); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(s); err != nil {
		t.Fatal(err)
	}
	type next struct {
		res *registry.Result
		err error
	}
	events := make(chan next, 1)
	go func() {
		for {
			res, err := w.Next()
			events <- next{res, err}
			if err != nil {
				return
			}
		}
	}()
	for _, want := range []string{"create", "delete"} {
		var res *registry.Result
		select {
		case n := <-events:
			if n.err != nil {
				t.Fatalf("Next() = %v; want a %s event", n.err, want)
			}
			res = n.res
		case <-time.After(10 * time.Second): // a hang guard, not a timing assertion
			t.Fatalf("no %s event within 10s", want)
		}
		if res.Action != want || res.Service.Name != "go.micro.srv.user" {
			t.Errorf("Next() = %s %s; want %s go.micro.srv.user", res.Action, res.Service.Name, want)
		}
	}
}

// go-micro's tools (micro call) use go-micro's stock NATS registry: with
// AnswerGoMicro they find a service registered here.
func TestAnswerGoMicroLookups(t *testing.T) {
	ns := natstest.Start(t)
	stock := natsreg.NewNatsRegistry(registry.Addrs(ns.URL()), registry.Timeout(500*time.Millisecond))
	for _, tt := range []struct {
		name   string
		answer bool
		want   int
	}{{"answering", true, 1}, {"not answering", false, 0}} {
		t.Run(tt.name, func(t *testing.T) {
			name := "go.micro.srv.compat" + map[bool]string{true: "a", false: "b"}[tt.answer]
			r := newRegistry(t, ns.URL(), natsregistry.AnswerGoMicro(tt.answer))
			if err := r.Register(service(name, "latest", "n1")); err != nil {
				t.Fatal(err)
			}
			got, _ := stock.GetService(name)
			if len(got) != tt.want {
				t.Errorf("go-micro's registry GetService(%s) = %d services; want %d", name, len(got), tt.want)
			}
		})
	}
}

func TestInvalidNames(t *testing.T) {
	r := natsregistry.New(nil)
	for _, name := range []string{"", "go micro", "go.*", "go.>", ".go", "go.", "go..micro"} {
		if err := r.Register(service(name, "latest", "n")); !errors.Is(err, natsregistry.ErrInvalidName) {
			t.Errorf("Register(%q) = %v; want %v", name, err, natsregistry.ErrInvalidName)
		}
		if _, err := r.GetService(name); !errors.Is(err, natsregistry.ErrInvalidName) {
			t.Errorf("GetService(%q) = %v; want %v", name, err, natsregistry.ErrInvalidName)
		}
	}
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// With AskGoMicro a lookup also finds programs on go-micro's stock NATS
// registry (a tutorial-style subscriber), and a node that answers both ways
// is listed once.
func TestAskGoMicroFindsStockPrograms(t *testing.T) {
	ns := natstest.Start(t)
	stock := natsreg.NewNatsRegistry(registry.Addrs(ns.URL()))
	if err := stock.Register(service("micro.http.broker", "ff.http.broadcast", "stock-1")); err != nil {
		t.Fatal(err)
	}
	both := newRegistry(t, ns.URL(), natsregistry.AnswerGoMicro(true))
	if err := both.Register(service("micro.http.broker", "ff.http.broadcast", "shippy-1")); err != nil {
		t.Fatal(err)
	}
	lookup := func(t *testing.T, ask bool) []string {
		t.Helper()
		r := newRegistry(t, ns.URL(), natsregistry.AskGoMicro(ask), natsregistry.Grace(500*time.Millisecond))
		got, err := r.GetService("micro.http.broker")
		if err != nil {
			t.Fatalf("GetService = %v", err)
		}
		return nodeIDs(got)["micro.http.broker ff.http.broadcast"]
	}
	t.Run("asking", func(t *testing.T) {
		// A lookup keeps what answered within the grace after the first
		// answer; on a loaded machine the stock registry can miss one.
		want := []string{"shippy-1", "stock-1"}
		var g []string
		if !poll.For(10*time.Second, func() bool { g = lookup(t, true); return slices.Equal(g, want) }) {
			t.Errorf("GetService nodes = %v; want %v", g, want)
		}
	})
	t.Run("not asking", func(t *testing.T) {
		if g, want := lookup(t, false), []string{"shippy-1"}; !slices.Equal(g, want) {
			t.Errorf("GetService nodes = %v; want %v", g, want)
		}
	})
}
