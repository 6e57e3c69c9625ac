package microenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shippy/shippy/internal/httpbroker"
)

func TestLoadEnv(t *testing.T) {
	passwordFile := filepath.Join(t.TempDir(), "nats-password")
	if err := os.WriteFile(passwordFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    func(Env) bool // checked when no error is wanted
		wantErr string         // substring; "" means valid
	}{
		{"nothing set: http broker, mdns, http transport", nil, func(e Env) bool {
			return e.Broker == BrokerHTTP && e.Registry == RegistryMDNS && e.Transport == TransportHTTP && e.ClientRetries == -1
		}, ""},
		{"nats everywhere", map[string]string{
			"MICRO_BROKER": "nats", "MICRO_BROKER_ADDRESS": "nats://a:4222, b:4222",
			"MICRO_REGISTRY": "nats", "MICRO_REGISTRY_ADDRESS": "tls://a:4222",
			"MICRO_TRANSPORT": "nats",
		}, func(e Env) bool {
			return e.Broker == BrokerNATS && len(e.BrokerAddrs) == 2 && e.BrokerAddrs[1] == "b:4222" &&
				e.Registry == RegistryNATS && e.Transport == TransportNATS
		}, ""},
		{"jetstream", map[string]string{"MICRO_BROKER": "jetstream"}, func(e Env) bool { return e.Broker == BrokerJetStream }, ""},
		{"server and client settings", map[string]string{
			"MICRO_SERVER_ADDRESS": ":8080", "MICRO_SERVER_ADVERTISE": "10.0.0.7:8080",
			"MICRO_REGISTER_TTL": "30s", "MICRO_REGISTER_INTERVAL": "10s", "MICRO_REGISTRY_TIMEOUT": "2s",
			"MICRO_CLIENT_REQUEST_TIMEOUT": "5s", "MICRO_CLIENT_RETRIES": "0", "MICRO_CLIENT_POOL_SIZE": "4", "MICRO_CLIENT_POOL_TTL": "1m",
		}, func(e Env) bool {
			return e.ServerAddress == ":8080" && e.ServerAdvertise == "10.0.0.7:8080" && e.RegisterTTL == 30*time.Second &&
				e.RegisterInterval == 10*time.Second && e.RegistryTimeout == 2*time.Second &&
				e.ClientRequestTimeout == 5*time.Second && e.ClientRetries == 0 && e.ClientPoolSize == 4 && e.ClientPoolTTL == time.Minute
		}, ""},
		{"typo in broker", map[string]string{"MICRO_BROKER": "natz"}, nil, `MICRO_BROKER="natz"`},
		{"a plugin shippy does not link", map[string]string{"MICRO_REGISTRY": "consul"}, nil, `MICRO_REGISTRY="consul"`},
		{"unknown transport", map[string]string{"MICRO_TRANSPORT": "quic"}, nil, `MICRO_TRANSPORT="quic"`},
		{"bad NATS URL", map[string]string{"MICRO_BROKER": "nats", "MICRO_BROKER_ADDRESS": "http://a:4222"}, nil, "MICRO_BROKER_ADDRESS"},
		{"bad duration", map[string]string{"MICRO_REGISTRY_TIMEOUT": "soon"}, nil, `MICRO_REGISTRY_TIMEOUT="soon"`},
		{"negative retries", map[string]string{"MICRO_CLIENT_RETRIES": "-1"}, nil, "MICRO_CLIENT_RETRIES"},
		{"interval not under ttl", map[string]string{"MICRO_REGISTER_TTL": "10s", "MICRO_REGISTER_INTERVAL": "10s"}, nil, "MICRO_REGISTER_INTERVAL"},
		{"a go-micro variable shippy does not read", map[string]string{"MICRO_SELECTOR": "dns"}, nil, "MICRO_SELECTOR is set"},
		{"NATS user and password", map[string]string{"NATS_USER": "user-service", "NATS_PASSWORD": "s3cret"},
			func(e Env) bool { return e.NATSUser == "user-service" && len(e.NATSOptions()) == 2 }, ""},
		{"NATS password from a file", map[string]string{"NATS_USER": "user-service", "NATS_PASSWORD_FILE": passwordFile},
			func(e Env) bool { return e.natsPassword == "from-file" }, ""},
		{"NATS user without a password", map[string]string{"NATS_USER": "user-service"}, nil, "NATS_USER"},
		{"NATS password twice", map[string]string{"NATS_USER": "u", "NATS_PASSWORD": "a", "NATS_PASSWORD_FILE": passwordFile}, nil, "NATS_PASSWORD_FILE"},
		{"NATS password file missing", map[string]string{"NATS_USER": "u", "NATS_PASSWORD_FILE": "/nonexistent/pw"}, nil, "NATS_PASSWORD_FILE"},
		{"NATS CA file missing", map[string]string{"NATS_CA_FILE": "/nonexistent/ca.pem"}, nil, "NATS_CA_FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := LoadEnv(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("LoadEnv(%v) = %v; want nil", tt.env, err)
			case tt.wantErr == "" && !tt.want(e):
				t.Errorf("LoadEnv(%v) = %+v; not what the variables say", tt.env, e)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("LoadEnv(%v) = %v; want an error naming %s", tt.env, err, tt.wantErr)
			}
		})
	}
}

func TestPluginsAreWhatTheEnvironmentNames(t *testing.T) {
	tests := []struct {
		env                   Env
		broker, reg, transprt string // %T of each
	}{
		{Env{Broker: BrokerHTTP, Registry: RegistryMDNS, Transport: TransportHTTP},
			"*httpbroker.Broker", "*microenv.patientMDNS", "microenv.replyBuffer"}, // go-micro's http transport, replies coalesced (replybuf.go)
		{Env{Broker: BrokerNATS, Registry: RegistryNATS, Transport: TransportNATS},
			// go-micro's NATS broker, with its connection's state followed
			// for readiness (BrokerReady).
			"*microenv.natsBrokerState", "*natsregistry.Registry", "*nats.ntport"},
		{Env{Broker: BrokerJetStream, Registry: RegistryMemory, Transport: TransportHTTP},
			"*jsbroker.Broker", "*registry.memRegistry", "microenv.replyBuffer"},
	}
	for _, tt := range tests {
		t.Run(tt.env.Broker+"/"+tt.env.Registry+"/"+tt.env.Transport, func(t *testing.T) {
			p, err := tt.env.Plugins()
			if err != nil {
				t.Fatalf("Plugins() = %v", err)
			}
			for _, got := range []struct{ what, got, want string }{
				{"broker", typeName(p.Broker), tt.broker},
				{"registry", typeName(p.Registry), tt.reg},
				{"transport", typeName(p.Transport), tt.transprt},
			} {
				if got.got != got.want {
					t.Errorf("%s = %s; want %s", got.what, got.got, got.want)
				}
			}
			if nb, ok := p.Broker.(*natsBrokerState); ok && typeName(nb.Broker) != "*nats.natsBroker" {
				t.Errorf("NATS broker wraps %s; want *nats.natsBroker", typeName(nb.Broker))
			}
			if BrokerReady(p.Broker) == nil {
				t.Errorf("BrokerReady(%s) = nil; want a readiness check", typeName(p.Broker))
			}
			// The http broker finds subscribers in the program's registry.
			if hb, ok := p.Broker.(*httpbroker.Broker); ok && hb.Options().Registry != p.Registry {
				t.Errorf("http broker registry = %v; want the program's", hb.Options().Registry)
			}
		})
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// Each client looks services up in its own program's registry: building a
// second client on another registry must not re-point the first, as it
// does when both share go-micro's process-wide default selector.
func TestClientsKeepTheirRegistry(t *testing.T) {
	e := Env{Broker: BrokerHTTP, Registry: RegistryMemory, Transport: TransportHTTP, ClientRetries: -1}
	pa, _ := e.Plugins()
	node := &registry.Service{Name: "shippy.test.target", Version: "latest",
		Nodes: []*registry.Node{{Id: "target-1", Address: "127.0.0.1:1"}}}
	if err := pa.Registry.Register(node); err != nil {
		t.Fatal(err)
	}
	a := e.NewClient(pa)
	pb, _ := e.Plugins()
	b := e.NewClient(pb)
	if _, err := a.Options().Selector.Select(node.Name); err != nil {
		t.Errorf("client a Select(%q) after building client b = %v; want a's registry's node", node.Name, err)
	}
	if _, err := b.Options().Selector.Select(node.Name); err == nil {
		t.Errorf("client b Select(%q) = nil error; want not found (registered in a's registry only)", node.Name)
	}
	if got := a.Options().ContentType; got != ContentType {
		t.Errorf("client content type = %q; want %q", got, ContentType)
	}
}

func TestNewServerTakesTheEnvironment(t *testing.T) {
	e := Env{Broker: BrokerHTTP, Registry: RegistryMemory, Transport: TransportHTTP,
		ServerAddress: "127.0.0.1:0", ServerAdvertise: "10.0.0.7:8080", RegisterTTL: time.Minute, RegisterInterval: 20 * time.Second}
	p, _ := e.Plugins()
	a, b := e.NewServer("shippy.test", p), e.NewServer("shippy.test", p)
	o := a.Options()
	if o.Name != "shippy.test" || o.Address != "127.0.0.1:0" || o.Advertise != "10.0.0.7:8080" ||
		o.RegisterTTL != time.Minute || o.RegisterInterval != 20*time.Second {
		t.Errorf("server options = name %q address %q advertise %q ttl %s interval %s; want the environment's",
			o.Name, o.Address, o.Advertise, o.RegisterTTL, o.RegisterInterval)
	}
	// The server's transport is p's, wrapped to restore Micro-ID (microid.go).
	if tr, ok := o.Transport.(microIDTransport); o.Broker != p.Broker || o.Registry != p.Registry || !ok || tr.Transport != p.Transport {
		t.Error("server does not use the plugins it was given")
	}
	if o.Id == b.Options().Id {
		t.Errorf("two servers share the node id %q; want one each", o.Id)
	}
}

// Through a server and a client built here, on one registry, with the
// default (http) broker: Publish returns once the subscriber's handler ran,
// and with its error.
func TestBuiltinBrokerDelivers(t *testing.T) {
	e := Env{Broker: BrokerHTTP, Registry: RegistryMemory, Transport: TransportHTTP, ServerAddress: "127.0.0.1:0", ClientRetries: -1}
	p, err := e.Plugins()
	if err != nil {
		t.Fatal(err)
	}
	sub := e.NewServer("shippy.test.sub", p)
	var handled atomic.Int64
	fail := errors.New("mailer down")
	var failing atomic.Bool
	if err := sub.Subscribe(sub.NewSubscriber("shippy.test.topic", func(_ context.Context, m *wrapperspb.StringValue) error {
		if failing.Load() {
			return fail
		}
		handled.Add(1)
		return nil
	}, server.SubscriberQueue("q"))); err != nil {
		t.Fatal(err)
	}
	if err := sub.Start(); err != nil {
		t.Fatalf("start subscriber: %v", err)
	}
	t.Cleanup(func() { sub.Stop() })

	// The publisher is another program on the same registry.
	pubPlugins := p
	pubPlugins.Broker = httpbroker.NewBroker(broker.Registry(p.Registry))
	if err := pubPlugins.Broker.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pubPlugins.Broker.Disconnect() })
	c := e.NewClient(pubPlugins)
	publish := func() error {
		return c.Publish(context.Background(), c.NewMessage("shippy.test.topic", wrapperspb.String("hello")))
	}
	if err := publish(); err != nil {
		t.Fatalf("Publish = %v; want nil", err)
	}
	if n := handled.Load(); n != 1 {
		t.Errorf("handler ran %d times when Publish returned; want 1", n)
	}
	failing.Store(true)
	if err := publish(); err == nil || !strings.Contains(err.Error(), fail.Error()) {
		t.Errorf("Publish with a failing handler = %v; want an error with %q", err, fail)
	}
}

func TestRedacted(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"nats://user-service:s3cret@nats:4222,nats://n2:4222"}, "nats://user-service:xxxxx@nats:4222,nats://n2:4222"},
		{[]string{"127.0.0.1:4222", "tls://u:p@h:4222"}, "127.0.0.1:4222,tls://u:xxxxx@h:4222"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := Redacted(tt.in...); got != tt.want || strings.Contains(got, "s3cret") {
			t.Errorf("Redacted(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
