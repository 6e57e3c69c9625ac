// Package kubernetes holds the Kubernetes manifests and the NATS chart's
// values; its tests check what the cluster cannot be asked about here: that
// nats-values.yaml uses only keys the chart is known to read, that its NATS
// configuration gives each program exactly the access its code needs, and
// that every environment variable the manifests set is one the programs read.
// (The manifests' Kubernetes schema is checked by tools/kubecheck.)
package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"gopkg.in/yaml.v3"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	"github.com/shippy/shippy/internal/poll"
)

// valuesKeys are the key paths of nats-values.yaml this repository relies on
// the chart reading (its 1.x values layout); "*" stands for any one key, and
// a path ending in ".**" for any subtree. A key outside this list is most
// likely a typo the chart would silently ignore.
var valuesKeys = []string{
	"config.cluster.enabled",
	"config.cluster.replicas",
	"config.jetstream.enabled",
	"config.jetstream.fileStore.enabled",
	"config.jetstream.fileStore.dir",
	"config.jetstream.fileStore.pvc.enabled",
	"config.jetstream.fileStore.pvc.size",
	"config.jetstream.fileStore.pvc.storageClassName",
	"config.jetstream.fileStore.maxSize",
	"config.jetstream.memoryStore.enabled",
	"config.monitor.enabled",
	"config.monitor.port",
	"config.merge.**", // the NATS configuration itself: checked by nats-server below
	"container.env.*",
	"container.env.*.valueFrom.secretKeyRef.name",
	"container.env.*.valueFrom.secretKeyRef.key",
	"container.merge.resources.requests.cpu",
	"container.merge.resources.requests.memory",
	"container.merge.resources.limits.memory",
	"podTemplate.topologySpreadConstraints.*.maxSkew",
	"podTemplate.topologySpreadConstraints.*.whenUnsatisfiable",
	"podDisruptionBudget.enabled",
	"natsBox.enabled",
}

func readValues(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile("nats-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	// yaml.v3 refuses duplicate keys, which would otherwise hide one value.
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	return v
}

// leafPaths lists the key path of every leaf (a scalar, a list, or an empty
// map) under prefix. Paths are lists: keys such as kubernetes.io/hostname
// hold dots.
func leafPaths(prefix []string, v any, out *[][]string) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		*out = append(*out, prefix)
		return
	}
	for k, sub := range m {
		leafPaths(append(prefix[:len(prefix):len(prefix)], k), sub, out)
	}
}

func keyAllowed(parts []string) bool {
	for _, pattern := range valuesKeys {
		pp := strings.Split(pattern, ".")
		if pp[len(pp)-1] == "**" {
			if len(parts) >= len(pp)-1 && matchParts(parts[:len(pp)-1], pp[:len(pp)-1]) {
				return true
			}
			continue
		}
		if matchParts(parts, pp) {
			return true
		}
	}
	return false
}

func matchParts(parts, pattern []string) bool {
	if len(parts) != len(pattern) {
		return false
	}
	for i := range parts {
		if pattern[i] != "*" && pattern[i] != parts[i] {
			return false
		}
	}
	return true
}

func lookup(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestNATSValuesKeys(t *testing.T) {
	v := readValues(t)
	var paths [][]string
	leafPaths(nil, v, &paths)
	var bad []string
	for _, p := range paths {
		if !keyAllowed(p) {
			bad = append(bad, strings.Join(p, "."))
		}
	}
	sort.Strings(bad)
	for _, p := range bad {
		t.Errorf("nats-values.yaml: key %q is not one the chart is known to read (a typo?); if it is right, add it to valuesKeys", p)
	}

	// What the deployment depends on, with the chart's defaults overridden.
	want := map[string]any{
		"config.cluster.enabled":                 true,
		"config.cluster.replicas":                3,
		"config.jetstream.enabled":               true,
		"config.jetstream.fileStore.enabled":     true,
		"config.jetstream.fileStore.pvc.enabled": true,
		"podDisruptionBudget.enabled":            true,
	}
	for p, w := range want {
		if got := lookup(v, p); got != w {
			t.Errorf("nats-values.yaml: %s = %v; want %v", p, got, w)
		}
	}
}

// TestNATSValuesSecrets checks that every password variable the NATS
// configuration uses is set by container.env from a key of a Secret in
// secrets.example.yaml.
func TestNATSValuesSecrets(t *testing.T) {
	v := readValues(t)
	secrets := exampleSecrets(t)
	env, _ := lookup(v, "container.env").(map[string]any)
	merge, err := json.Marshal(lookup(v, "config.merge"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`<<\s*\$([A-Za-z0-9_]+)\s*>>`).FindAllStringSubmatch(string(merge), -1) {
		name := m[1]
		ref, _ := lookup(env[name], "valueFrom.secretKeyRef").(map[string]any)
		if ref == nil {
			t.Errorf("config.merge uses $%s, but container.env does not set it from a Secret", name)
			continue
		}
		secret, key := fmt.Sprint(ref["name"]), fmt.Sprint(ref["key"])
		if !secrets[secret][key] {
			t.Errorf("container.env.%s reads key %q of Secret %q, which secrets.example.yaml does not have", name, key, secret)
		}
	}
}

// exampleSecrets returns the keys of each Secret in secrets.example.yaml.
func exampleSecrets(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	for _, doc := range yamlDocs(t, "secrets.example.yaml") {
		if doc["kind"] != "Secret" {
			continue
		}
		name := fmt.Sprint(lookup(doc, "metadata.name"))
		out[name] = map[string]bool{}
		for _, field := range []string{"data", "stringData"} {
			m, _ := doc[field].(map[string]any)
			for k := range m {
				out[name][k] = true
			}
		}
	}
	return out
}

func yamlDocs(t *testing.T, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// TestNATSValuesMatchCompose checks that the NATS users of nats-values.yaml
// are those of deploy/nats/shippy.conf (docker-compose.yml, make up): one
// security design, whichever way NATS is run. Both are read by nats-server's
// own configuration parser, with the same passwords in the environment.
func TestNATSValuesMatchCompose(t *testing.T) {
	for _, u := range testUsers {
		t.Setenv(u.passwordVar, u.password)
	}
	compose, err := conf.ParseFile(filepath.Join("..", "nats", "shippy.conf"))
	if err != nil {
		t.Fatalf("deploy/nats/shippy.conf: %v", err)
	}
	values, err := conf.Parse(natsConfig(t, lookup(readValues(t), "config.merge"), "/unused"))
	if err != nil {
		t.Fatalf("nats-values.yaml config.merge: %v", err)
	}
	want, got := flatten("", compose["authorization"]), flatten("", values["authorization"])
	for _, line := range sortedKeys(want) {
		if !got[line] {
			t.Errorf("nats-values.yaml lacks what deploy/nats/shippy.conf has: authorization%s", line)
		}
	}
	for _, line := range sortedKeys(got) {
		if !want[line] {
			t.Errorf("nats-values.yaml has what deploy/nats/shippy.conf lacks: authorization%s", line)
		}
	}
}

// flatten lists a parsed configuration as path=value lines; users are keyed
// by name and allow lists are sets, so the lines read like the file.
func flatten(path string, v any) map[string]bool {
	out := map[string]bool{}
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			for line := range flatten(path+"."+k, sub) {
				out[line] = true
			}
		}
	case []any:
		for _, sub := range v {
			p := path + "[]"
			if m, ok := sub.(map[string]any); ok && m["user"] != nil {
				p = fmt.Sprintf("%s[user=%v]", path, m["user"])
			}
			for line := range flatten(p, sub) {
				out[line] = true
			}
		}
	default:
		out[fmt.Sprintf("%s=%v", path, v)] = true
	}
	return out
}

// natsConfig turns config.merge into a NATS configuration file the way the
// chart does: JSON, with "<< x >>" strings unquoted (variables, sizes).
func natsConfig(t *testing.T, merge any, storeDir string) string {
	t.Helper()
	m, ok := merge.(map[string]any)
	if !ok {
		t.Fatal("nats-values.yaml: config.merge is not a map")
	}
	conf := map[string]any{}
	for k, v := range m {
		conf[k] = v
	}
	conf["listen"] = "127.0.0.1:-1"
	conf["jetstream"] = map[string]any{"store_dir": storeDir}
	// Raw JSON, as the chart's toPrettyRawJson: NATS does not read \u003c.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(conf); err != nil {
		t.Fatal(err)
	}
	return regexp.MustCompile(`"<<\s+(.*?)\s+>>"`).ReplaceAllString(b.String(), "$1")
}

// violations records the permission violations the server logs.
type violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *violations) Noticef(string, ...any) {}
func (v *violations) Warnf(string, ...any)   {}
func (v *violations) Fatalf(f string, a ...any) {
	v.Errorf(f, a...)
}
func (v *violations) Debugf(string, ...any) {}
func (v *violations) Tracef(string, ...any) {}
func (v *violations) Errorf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	if strings.Contains(msg, "Violation") {
		v.mu.Lock()
		v.seen = append(v.seen, msg)
		v.mu.Unlock()
	}
}

func (v *violations) take() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.seen
	v.seen = nil
	return s
}

// The NATS users, with the variables the NATS container gets their
// passwords from, and the test's passwords.
var testUsers = []struct{ user, passwordVar, password string }{
	{"user-service", "NATS_USER_SERVICE_PASSWORD", "pw-user-service-test"},
	{"email-service", "NATS_EMAIL_SERVICE_PASSWORD", "pw-email-service-test"},
	{"cli", "NATS_CLI_PASSWORD", "pw-cli-test"},
	{"ops", "NATS_OPS_PASSWORD", "pw-ops-test"},
}

func password(user string) string {
	for _, u := range testUsers {
		if u.user == user {
			return u.password
		}
	}
	panic("no test user " + user)
}

type natsUsers struct {
	port int
	log  *violations
}

func (u natsUsers) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", u.port) }

// conn connects as user the way the programs do (microenv.NATSOptions).
func (u natsUsers) conn(t *testing.T, user string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(u.url(), append(opts, nats.UserInfo(user, password(user)), nats.CustomInboxPrefix("_INBOX_"+user))...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startValuesServer runs an in-process nats-server with the configuration
// of nats-values.yaml's config.merge (and a JetStream store of the test's).
func startValuesServer(t *testing.T) natsUsers {
	t.Helper()
	for _, u := range testUsers {
		t.Setenv(u.passwordVar, u.password)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(natsConfig(t, lookup(readValues(t), "config.merge"), filepath.Join(dir, "js"))), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats-server refuses config.merge of nats-values.yaml: %v", err)
	}
	opts.NoSigs = true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	log := &violations{}
	srv.SetLogger(log, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready within 10s")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return natsUsers{port: srv.Addr().(*net.TCPAddr).Port, log: log}
}

// TestNATSPermissions loads config.merge into nats-server and runs, as each
// program's user, the code paths that program runs: shippy's JetStream
// broker (stream creation, publish, queue consumer, ack, dead letter), the
// email-service's key-value operations, and shippy's NATS registry. None
// may hit a permission violation; then each user is refused what it must not
// do.
func TestNATSPermissions(t *testing.T) {
	u := startValuesServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("allowed", func(t *testing.T) {
		// Each program's broker and registry, built as its main.go builds
		// them, from the environment it gets on Kubernetes.
		userP := plugins(t, u, "user-service", microenv.AnswerGoMicroLookups())
		emailP := plugins(t, u, "email-service")
		cliP := plugins(t, u, "cli")

		// The user-service creates the streams and publishes.
		pub := userP.Broker
		if err := pub.Connect(); err != nil {
			t.Fatalf("user-service broker: Connect() = %v; want nil", err)
		}
		defer pub.Disconnect()

		// The email-service subscribes in its queue group; an event whose
		// handler fails twice is dead-lettered.
		sub, ok := emailP.Broker.(*jsbroker.Broker)
		if !ok {
			t.Fatalf("email-service broker is %T; want *jsbroker.Broker (MICRO_BROKER=jetstream)", emailP.Broker)
		}
		if err := sub.Init(jsbroker.MaxDeliver(2), jsbroker.Backoff(20*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := sub.Connect(); err != nil {
			t.Fatalf("email-service broker: Connect() = %v; want nil", err)
		}
		defer sub.Disconnect()
		got := make(chan string, 10)
		_, err := sub.Subscribe("user.created", func(e broker.Event) error {
			id := e.Message().Header[jsbroker.HeaderEventID]
			if id == "fail-me" {
				return errors.New("mailer down")
			}
			got <- id
			return nil
		}, broker.Queue("go.micro.srv.email"))
		if err != nil {
			t.Fatalf("email-service: Subscribe() = %v; want nil", err)
		}
		for _, id := range []string{"event-1", "fail-me"} {
			msg := &broker.Message{Header: map[string]string{jsbroker.HeaderEventID: id}, Body: []byte("{}")}
			if err := pub.Publish("user.created", msg); err != nil {
				t.Fatalf("user-service: Publish(%s) = %v; want nil", id, err)
			}
		}
		select {
		case id := <-got:
			if id != "event-1" {
				t.Errorf("email-service received %q; want event-1", id)
			}
		case <-ctx.Done():
			t.Fatal("email-service received no event")
		}
		deadline, _ := ctx.Deadline()
		poll.Until(t, "the failing event is dead-lettered", time.Until(deadline), func() bool { return sub.Stats().DeadLettered == 1 })
		if st := sub.Stats(); st.DeadLetterErrs != 0 || st.Acked != 1 {
			t.Errorf("email-service broker stats = %+v; want 1 acked, 0 dead-letter errors", st)
		}

		// The email-service's record of sent events (sentlog_kv.go's calls).
		kvOps(t, ctx, u.conn(t, "email-service"))

		// An operator's shippy-user-cli events, as ops: tail the events,
		// list the dead letters, replay the one above.
		opsOps(t, ctx, u.conn(t, "ops"))

		// shippy's NATS registry: both services register (the user-service
		// also answers go-micro's stock lookups), the CLI looks the
		// user-service up and watches it, as go-micro's registry cache does.
		user := userP.Registry
		node := &registry.Node{Id: "go.micro.srv.user-1", Address: "10.0.0.7:8080"}
		if err := user.Register(&registry.Service{Name: "go.micro.srv.user", Version: "latest", Nodes: []*registry.Node{node}}); err != nil {
			t.Fatalf("user-service: Register() = %v; want nil", err)
		}
		email := emailP.Registry
		if err := email.Register(&registry.Service{Name: "go.micro.srv.email", Version: "latest", Nodes: []*registry.Node{{Id: "go.micro.srv.email-1", Address: "10.0.0.8:8080"}}}); err != nil {
			t.Fatalf("email-service: Register() = %v; want nil", err)
		}
		cli := cliP.Registry
		w, err := cli.Watch(registry.WatchService("go.micro.srv.user"))
		if err != nil {
			t.Fatalf("cli: Watch() = %v; want nil", err)
		}
		defer w.Stop()
		svcs, err := cli.GetService("go.micro.srv.user")
		if err != nil || len(svcs) != 1 || len(svcs[0].Nodes) != 1 || svcs[0].Nodes[0].Address != node.Address {
			t.Errorf("cli: GetService(go.micro.srv.user) = %v, %v; want the node at %s", svcs, err, node.Address)
		}
		// Register flushed the services' connections, and the lookup went
		// out after the watch on the CLI's and was answered on the
		// user-service's: the server has judged all of the above by now.

		// The server saw every operation above as allowed.
		if v := u.log.take(); len(v) > 0 {
			t.Errorf("permission violations while the programs did their work:\n%s", strings.Join(v, "\n"))
		}
	})

	t.Run("refused", func(t *testing.T) {
		emailDurable := jsbroker.ConsumerName("go.micro.srv.email", "user.created")
		tests := []struct {
			user     string
			pub, sub []string
		}{
			// Nobody but the user-service may publish user.created, or
			// answer lookups of it or announce it (an impostor would
			// receive the callers' passwords); nobody reads another
			// program's replies.
			{"cli",
				[]string{"shippy.events.user.created", "$JS.API.STREAM.INFO.SHIPPY_EVENTS", "$KV.shippy_email_sent.x", "shippy.registry.watch.go.micro.srv.user", "_INBOX_user-service.x"},
				[]string{"shippy.events.>", "shippy.registry.query.go.micro.srv.user", "micro.nats.query", "_INBOX_user-service.>"}},
			{"email-service",
				[]string{"shippy.events.user.created", "$JS.API.STREAM.DELETE.SHIPPY_EVENTS", "$JS.API.STREAM.PURGE.SHIPPY_EVENTS", "$JS.API.CONSUMER.DELETE.SHIPPY_EVENTS.x", "_INBOX_cli.x", "shippy.registry.watch.go.micro.srv.user"},
				[]string{"shippy.events.>", "shippy.registry.query.go.micro.srv.user", "micro.nats.query", "_INBOX_user-service.>"}},
			// ops reads the streams and replays dead letters, but may not
			// remove a stream's or a consumer's state, nor answer lookups.
			{"ops",
				[]string{"$JS.API.STREAM.DELETE.SHIPPY_EVENTS", "$JS.API.STREAM.PURGE.SHIPPY_EVENTS_DLQ", "$JS.API.CONSUMER.DELETE.SHIPPY_EVENTS.x", "$JS.API.STREAM.MSG.DELETE.SHIPPY_EVENTS", "$KV.shippy_email_sent.x", "shippy.deadletter.user.created", "shippy.registry.watch.go.micro.srv.user", "_INBOX_cli.x",
					// The email-service's durable consumer: not to be changed
					// (a filter that matches nothing stops every email) nor
					// pulled from (each pull costs an event a delivery).
					"$JS.API.CONSUMER.CREATE.SHIPPY_EVENTS." + emailDurable, "$JS.API.CONSUMER.CREATE.SHIPPY_EVENTS." + emailDurable + ".shippy.events.user.created",
					"$JS.API.CONSUMER.MSG.NEXT.SHIPPY_EVENTS." + emailDurable},
				[]string{"shippy.events.>", "shippy.registry.query.go.micro.srv.user", "micro.nats.query", "_INBOX_user-service.>"}},
			{"user-service",
				[]string{"$KV.shippy_email_sent.x", "$JS.API.CONSUMER.CREATE.SHIPPY_EVENTS.x", "$JS.API.STREAM.DELETE.SHIPPY_EVENTS", "shippy.deadletter.user.created", "_INBOX_cli.x", "shippy.registry.watch.go.micro.srv.email"},
				[]string{"shippy.events.>", "$KV.shippy_email_sent.>", "shippy.registry.query.go.micro.srv.email", "_INBOX_cli.>"}},
		}
		for _, tt := range tests {
			t.Run(tt.user, func(t *testing.T) {
				errs := make(chan error, 16)
				nc := u.conn(t, tt.user, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
				for _, s := range tt.pub {
					if err := nc.Publish(s, []byte("x")); err != nil {
						t.Fatal(err)
					}
					expectViolation(t, errs, "publish to "+s)
				}
				for _, s := range tt.sub {
					if _, err := nc.SubscribeSync(s); err != nil {
						t.Fatal(err)
					}
					expectViolation(t, errs, "subscribe to "+s)
				}
			})
		}
	})

	t.Run("authentication", func(t *testing.T) {
		for name, opt := range map[string]nats.Option{
			"no credentials": func(*nats.Options) error { return nil },
			"wrong password": nats.UserInfo("user-service", password("cli")),
		} {
			nc, err := nats.Connect(u.url(), opt, nats.MaxReconnects(0))
			if err == nil {
				nc.Close()
				t.Errorf("connect with %s = nil; want an authorization error", name)
			}
		}
	})
}

// plugins builds a program's broker and registry with internal/microenv from
// the MICRO_* variables of deploy/kubernetes/nats-client.yaml, pointed at
// this test's server, logged in as user with NATS_USER and NATS_PASSWORD;
// they are closed when the test ends.
func plugins(t *testing.T, u natsUsers, user string, opts ...microenv.PluginOption) microenv.Plugins {
	t.Helper()
	env := map[string]string{"NATS_USER": user, "NATS_PASSWORD": password(user)}
	for _, d := range yamlDocs(t, "nats-client.yaml") {
		data, _ := d["data"].(map[string]any)
		for k, v := range data {
			if strings.HasPrefix(k, "MICRO_") {
				env[k] = fmt.Sprint(v)
			}
		}
	}
	env["MICRO_BROKER_ADDRESS"], env["MICRO_REGISTRY_ADDRESS"] = u.url(), u.url()
	e, err := microenv.LoadEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("nats-client.yaml: %v", err)
	}
	p, err := e.Plugins(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, ok := p.Registry.(interface{ Close() }); ok {
			c.Close()
		}
	})
	return p
}

func expectViolation(t *testing.T, errs <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("%s: got error %v; want a permissions violation", what, err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s: allowed; want a permissions violation", what)
	}
}

// opsOps runs, as ops, the JetStream calls of shippy-user-cli's events
// commands: ordered consumers on both streams, and a replay (read a dead
// letter, publish its event again, delete it).
func opsOps(t *testing.T, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []struct{ stream, subject string }{
		{"SHIPPY_EVENTS", "shippy.events.user.created"},
		{"SHIPPY_EVENTS_DLQ", "shippy.deadletter.>"},
	} {
		cons, err := js.OrderedConsumer(ctx, st.stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{st.subject}})
		if err != nil {
			t.Fatalf("ops: OrderedConsumer(%s) = %v; want nil", st.stream, err)
		}
		// Messages, not Next: an ordered consumer's Fetch deletes the
		// consumer it replaces, which ops may not do.
		it, err := cons.Messages()
		if err != nil {
			t.Fatalf("ops: Messages(%s) = %v; want nil", st.stream, err)
		}
		msg, err := it.Next()
		it.Stop()
		if err != nil {
			t.Fatalf("ops: first message of %s: %v", st.stream, err)
		}
		if st.stream != "SHIPPY_EVENTS_DLQ" {
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		dlq, err := js.Stream(ctx, st.stream)
		if err != nil {
			t.Fatalf("ops: Stream(%s) = %v; want nil", st.stream, err)
		}
		raw, err := dlq.GetMsg(ctx, md.Sequence.Stream)
		if err != nil {
			t.Fatalf("ops: GetMsg(%d) = %v; want nil", md.Sequence.Stream, err)
		}
		replay := nats.NewMsg("shippy.events.user.created")
		replay.Data, replay.Header = raw.Data, nats.Header{jsbroker.HeaderEventID: []string{"replayed"}}
		if _, err := js.PublishMsg(ctx, replay); err != nil {
			t.Errorf("ops: publish the replayed event = %v; want nil", err)
		}
		if err := dlq.DeleteMsg(ctx, md.Sequence.Stream); err != nil {
			t.Errorf("ops: DeleteMsg(%d) = %v; want nil", md.Sequence.Stream, err)
		}
	}
}

// kvOps runs, as the email-service, the key-value calls of
// shippy-email-service/sentlog_kv.go on its bucket.
func kvOps(t *testing.T, ctx context.Context, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "shippy_email_sent", TTL: time.Hour, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatalf("email-service: CreateOrUpdateKeyValue() = %v; want nil", err)
	}
	rev, err := kv.Create(ctx, "event-1", []byte("sending"))
	if err != nil {
		t.Fatalf("email-service: kv.Create() = %v; want nil", err)
	}
	if _, err := kv.Get(ctx, "event-1"); err != nil {
		t.Errorf("email-service: kv.Get() = %v; want nil", err)
	}
	if rev, err = kv.Update(ctx, "event-1", []byte("sent"), rev); err != nil {
		t.Errorf("email-service: kv.Update() = %v; want nil", err)
	}
	if _, err := kv.Put(ctx, "event-2", []byte("sent")); err != nil {
		t.Errorf("email-service: kv.Put() = %v; want nil", err)
	}
	if err := kv.Delete(ctx, "event-1", jetstream.LastRevision(rev)); err != nil {
		t.Errorf("email-service: kv.Delete() = %v; want nil", err)
	}
}
