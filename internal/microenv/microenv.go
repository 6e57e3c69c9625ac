// Package microenv builds shippy's go-micro servers and clients from
// go-micro's own MICRO_* environment variables, read once and validated.
//
// It assembles go-micro's parts (server, client, broker, registry,
// transport) itself instead of calling micro.NewService: go-micro's service
// parses os.Args with urfave/cli and exits on flags it does not know (the
// CLI has its own), and it links go-micro's cmd package, which imports every
// plugin go-micro ships (consul, etcd, redis, rabbitmq, gRPC, AI clients).
// The programs only use the plugins named below; the rest stay out of the
// binaries.
//
//	MICRO_BROKER       http (default: shippy's synchronous httpbroker, on
//	                   go-micro's wire format), nats, jetstream (shippy's
//	                   durable jsbroker)
//	MICRO_REGISTRY     mdns (default), nats (shippy's natsregistry), memory
//	MICRO_TRANSPORT    http (default), nats
//	MICRO_*_ADDRESS    the plugin's addresses, comma-separated
package microenv

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"go-micro.dev/v6/broker"
	natsbroker "go-micro.dev/v6/broker/nats"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/selector"
	"go-micro.dev/v6/server"
	"go-micro.dev/v6/transport"
	natstransport "go-micro.dev/v6/transport/nats"

	"github.com/shippy/shippy/internal/httpbroker"
	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natslog"
	"github.com/shippy/shippy/internal/natsregistry"
)

// Plugin names, as MICRO_BROKER, MICRO_REGISTRY and MICRO_TRANSPORT take them.
const (
	BrokerHTTP      = "http"
	BrokerNATS      = "nats"
	BrokerJetStream = "jetstream"

	RegistryMDNS   = "mdns"
	RegistryNATS   = "nats"
	RegistryMemory = "memory"

	TransportHTTP = "http"
	TransportNATS = "nats"
)

// ContentType is the content type this package's clients send requests and
// events in. go-micro's client defaults to JSON; protobuf measured 1.1 to
// 1.5 times the Echo RPC rate of JSON with one caller on both transports
// (bench: BenchmarkTuneEcho, BENCH.md). Servers answer in the caller's
// content type, so JSON clients still work.
const ContentType = "application/protobuf"

// Env is go-micro's configuration of one program.
type Env struct {
	Broker, Registry, Transport                string
	BrokerAddrs, RegistryAddrs, TransportAddrs []string
	// RegistryTimeout bounds a lookup (MICRO_REGISTRY_TIMEOUT; default 3s
	// on NATS, where a lookup returns once the service answered, and 1s on
	// mdns, asked in growing windows).
	RegistryTimeout time.Duration
	// ServerAddress is where the RPC server listens (MICRO_SERVER_ADDRESS,
	// default ":0", a free port); ServerAdvertise the address other
	// programs are told (MICRO_SERVER_ADVERTISE, e.g. a pod's IP and port).
	ServerAddress, ServerAdvertise string
	// RegisterTTL and RegisterInterval: how long a registration lives and
	// how often the server renews it (MICRO_REGISTER_TTL,
	// MICRO_REGISTER_INTERVAL; go-micro's defaults when 0).
	RegisterTTL, RegisterInterval time.Duration
	// Client settings (MICRO_CLIENT_REQUEST_TIMEOUT, MICRO_CLIENT_RETRIES,
	// MICRO_CLIENT_POOL_SIZE, MICRO_CLIENT_POOL_TTL); go-micro's defaults
	// when 0, or Retries < 0.
	ClientRequestTimeout time.Duration
	ClientRetries        int
	ClientPoolSize       int
	ClientPoolTTL        time.Duration
	// NATSUser names the program to NATS (NATS_USER); its password comes
	// from NATS_PASSWORD or, for container secrets, NATS_PASSWORD_FILE. They
	// apply to every NATS connection the program opens.
	NATSUser     string
	natsPassword string
	// NATSCAFile is a PEM file of CAs to trust for tls:// NATS servers
	// (NATS_CA_FILE).
	NATSCAFile string
	// JetStream is how the jetstream broker's streams are stored
	// (JETSTREAM_*); only with MICRO_BROKER=jetstream.
	JetStream JetStreamEnv
	// TransportTLS is TLS on the http transport (MICRO_TRANSPORT_TLS_*,
	// tls.go).
	TransportTLS TransportTLSEnv
}

// JetStreamEnv is the storage of the event stream SHIPPY_EVENTS and its
// dead-letter stream SHIPPY_EVENTS_DLQ. Every program on the jetstream
// broker reads it, so that a program creating a missing stream creates it
// as configured; only the stream's owner (OwnStreams: the user-service,
// which publishes) updates an existing one.
type JetStreamEnv struct {
	// Replicas is JETSTREAM_REPLICAS (default 1, at most 5): how many
	// servers of a NATS cluster hold each stream, and the email-service's
	// key-value bucket.
	Replicas int
	// Events are JETSTREAM_EVENTS_MAX_AGE and JETSTREAM_EVENTS_MAX_BYTES
	// (default 168h, 1GiB); DeadLetters JETSTREAM_DEADLETTER_MAX_AGE and
	// JETSTREAM_DEADLETTER_MAX_BYTES (default 720h, 256MiB). 0 is no limit.
	Events, DeadLetters jsbroker.Limits
}

// jetStreamVars are read only with MICRO_BROKER=jetstream.
var jetStreamVars = []string{
	"JETSTREAM_REPLICAS",
	"JETSTREAM_EVENTS_MAX_AGE", "JETSTREAM_EVENTS_MAX_BYTES",
	"JETSTREAM_DEADLETTER_MAX_AGE", "JETSTREAM_DEADLETTER_MAX_BYTES",
}

func loadJetStream(getenv func(string) string, broker string) (JetStreamEnv, error) {
	js := JetStreamEnv{
		Replicas:    jsbroker.DefaultReplicas,
		Events:      jsbroker.Limits{MaxAge: jsbroker.DefaultMaxAge, MaxBytes: jsbroker.DefaultMaxBytes},
		DeadLetters: jsbroker.Limits{MaxAge: jsbroker.DefaultDeadLetterMaxAge, MaxBytes: jsbroker.DefaultDeadLetterMaxBytes},
	}
	if broker != BrokerJetStream {
		for _, v := range jetStreamVars {
			if getenv(v) != "" {
				return JetStreamEnv{}, fmt.Errorf("%s is set but MICRO_BROKER=%s: it configures the jetstream broker's streams only", v, broker)
			}
		}
		return js, nil
	}
	if v := strings.TrimSpace(getenv("JETSTREAM_REPLICAS")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jsbroker.MaxReplicas {
			return JetStreamEnv{}, fmt.Errorf("JETSTREAM_REPLICAS=%q: want 1 to %d, and at most the number of NATS servers in the cluster", v, jsbroker.MaxReplicas)
		}
		js.Replicas = n
	}
	var err error
	for _, l := range []struct {
		name string
		into *time.Duration
	}{
		{"JETSTREAM_EVENTS_MAX_AGE", &js.Events.MaxAge},
		{"JETSTREAM_DEADLETTER_MAX_AGE", &js.DeadLetters.MaxAge},
	} {
		if v := getenv(l.name); v != "" {
			if *l.into, err = ParseMaxAge(l.name, v); err != nil {
				return JetStreamEnv{}, err
			}
		}
	}
	for _, l := range []struct {
		name string
		into *int64
	}{
		{"JETSTREAM_EVENTS_MAX_BYTES", &js.Events.MaxBytes},
		{"JETSTREAM_DEADLETTER_MAX_BYTES", &js.DeadLetters.MaxBytes},
	} {
		if v := getenv(l.name); v != "" {
			if *l.into, err = ParseMaxBytes(l.name, v); err != nil {
				return JetStreamEnv{}, err
			}
		}
	}
	return js, nil
}

// unsupported are go-micro variables that its cmd package reads and shippy's
// programs do not: setting one must not look as if it worked.
var unsupported = []string{
	"MICRO_AUTH", "MICRO_AUTH_ID", "MICRO_AUTH_NAMESPACE", "MICRO_AUTH_PRIVATE_KEY",
	"MICRO_AUTH_PUBLIC_KEY", "MICRO_AUTH_SECRET", "MICRO_CLIENT", "MICRO_CONFIG",
	"MICRO_DEBUG_PROFILE", "MICRO_PROFILE", "MICRO_SELECTOR", "MICRO_SERVER",
	"MICRO_SERVER_ID", "MICRO_SERVER_METADATA", "MICRO_SERVER_NAME", "MICRO_SERVER_VERSION",
	"MICRO_STORE", "MICRO_STORE_ADDRESS", "MICRO_STORE_DATABASE", "MICRO_STORE_TABLE",
	"MICRO_TRACER", "MICRO_TRACER_ADDRESS",
}

// LoadEnv reads and validates the MICRO_* variables; getenv is os.Getenv
// outside tests. Every error names its variable.
func LoadEnv(getenv func(string) string) (Env, error) {
	for _, v := range unsupported {
		if getenv(v) != "" {
			return Env{}, fmt.Errorf("%s is set, but shippy's programs do not read it (they build go-micro from MICRO_BROKER, MICRO_REGISTRY, MICRO_TRANSPORT, their *_ADDRESS, MICRO_SERVER_ADDRESS, MICRO_SERVER_ADVERTISE, MICRO_REGISTER_*, MICRO_REGISTRY_TIMEOUT and MICRO_CLIENT_*): unset it", v)
		}
	}
	e := Env{ClientRetries: -1}
	var err error
	if e.Broker, err = choice(getenv, "MICRO_BROKER", BrokerHTTP, BrokerHTTP, BrokerNATS, BrokerJetStream); err != nil {
		return Env{}, err
	}
	if e.Registry, err = choice(getenv, "MICRO_REGISTRY", RegistryMDNS, RegistryMDNS, RegistryNATS, RegistryMemory); err != nil {
		return Env{}, err
	}
	if e.Transport, err = choice(getenv, "MICRO_TRANSPORT", TransportHTTP, TransportHTTP, TransportNATS); err != nil {
		return Env{}, err
	}
	if e.BrokerAddrs, err = addrs(getenv, "MICRO_BROKER_ADDRESS", e.Broker != BrokerHTTP); err != nil {
		return Env{}, err
	}
	if e.RegistryAddrs, err = addrs(getenv, "MICRO_REGISTRY_ADDRESS", e.Registry == RegistryNATS); err != nil {
		return Env{}, err
	}
	if e.TransportAddrs, err = addrs(getenv, "MICRO_TRANSPORT_ADDRESS", e.Transport == TransportNATS); err != nil {
		return Env{}, err
	}
	e.ServerAddress, e.ServerAdvertise = getenv("MICRO_SERVER_ADDRESS"), getenv("MICRO_SERVER_ADVERTISE")
	for _, d := range []struct {
		name string
		into *time.Duration
	}{
		{"MICRO_REGISTRY_TIMEOUT", &e.RegistryTimeout},
		{"MICRO_REGISTER_TTL", &e.RegisterTTL},
		{"MICRO_REGISTER_INTERVAL", &e.RegisterInterval},
		{"MICRO_CLIENT_REQUEST_TIMEOUT", &e.ClientRequestTimeout},
		{"MICRO_CLIENT_POOL_TTL", &e.ClientPoolTTL},
	} {
		if *d.into, err = duration(getenv, d.name); err != nil {
			return Env{}, err
		}
	}
	for _, n := range []struct {
		name string
		into *int
	}{
		{"MICRO_CLIENT_RETRIES", &e.ClientRetries},
		{"MICRO_CLIENT_POOL_SIZE", &e.ClientPoolSize},
	} {
		v := getenv(n.name)
		if v == "" {
			continue
		}
		i, err := strconv.Atoi(v)
		if err != nil || i < 0 {
			return Env{}, fmt.Errorf("%s=%q: want a whole number, 0 or more", n.name, v)
		}
		*n.into = i
	}
	if err := e.loadNATSAuth(getenv); err != nil {
		return Env{}, err
	}
	if e.JetStream, err = loadJetStream(getenv, e.Broker); err != nil {
		return Env{}, err
	}
	if e.TransportTLS, err = loadTransportTLS(getenv, e.Transport); err != nil {
		return Env{}, err
	}
	if e.RegisterTTL > 0 && e.RegisterInterval >= e.RegisterTTL {
		return Env{}, fmt.Errorf("MICRO_REGISTER_INTERVAL=%s: want less than MICRO_REGISTER_TTL=%s, or registrations expire between renewals", e.RegisterInterval, e.RegisterTTL)
	}
	return e, nil
}

func (e *Env) loadNATSAuth(getenv func(string) string) error {
	e.NATSUser = getenv("NATS_USER")
	pass, file := getenv("NATS_PASSWORD"), getenv("NATS_PASSWORD_FILE")
	switch {
	case pass != "" && file != "":
		return errors.New("NATS_PASSWORD and NATS_PASSWORD_FILE are both set: set one")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("NATS_PASSWORD_FILE: %w", err)
		}
		pass = strings.TrimRight(string(b), "\r\n")
		if pass == "" {
			return fmt.Errorf("NATS_PASSWORD_FILE=%q is empty", file)
		}
	}
	if (e.NATSUser == "") != (pass == "") {
		return errors.New("NATS_USER and its password (NATS_PASSWORD or NATS_PASSWORD_FILE) go together: set both or neither")
	}
	e.natsPassword = pass
	if f := getenv("NATS_CA_FILE"); f != "" {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("NATS_CA_FILE: %w", err)
		}
		e.NATSCAFile = f
	}
	return nil
}

// NATSOptions are the options every NATS connection of the program takes:
// its credentials and trusted CAs.
func (e Env) NATSOptions() []nats.Option {
	var opts []nats.Option
	if e.NATSUser != "" {
		// Replies come to an inbox prefix of the user's own, which NATS
		// permissions let only that user read (deploy/nats/shippy.conf).
		opts = append(opts, nats.UserInfo(e.NATSUser, e.natsPassword), nats.CustomInboxPrefix("_INBOX_"+e.NATSUser))
	}
	if e.NATSCAFile != "" {
		opts = append(opts, nats.RootCAs(e.NATSCAFile))
	}
	return opts
}

// WithNATSPassword returns e with a NATS password, for tests that build an
// Env by hand.
func (e Env) WithNATSPassword(p string) Env {
	e.natsPassword = p
	return e
}

func choice(getenv func(string) string, name, def string, known ...string) (string, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	for _, k := range known {
		if v == k {
			return v, nil
		}
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return "", fmt.Errorf("%s=%q: shippy's programs know %s", name, v, strings.Join(sorted, ", "))
}

// addrs splits a comma-separated address list. NATS addresses must be
// URLs or host:port pairs; others (the http broker's listen address) are
// taken as they are.
func addrs(getenv func(string) string, name string, natsURLs bool) ([]string, error) {
	v := getenv(name)
	if v == "" {
		return nil, nil
	}
	var out []string
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return nil, fmt.Errorf("%s=%q: an empty address in the list", name, v)
		}
		if natsURLs {
			u := a
			if !strings.Contains(u, "://") {
				u = "nats://" + u
			}
			p, err := url.Parse(u)
			if err != nil || p.Host == "" {
				return nil, fmt.Errorf("%s=%q: want NATS URLs such as nats://host:4222, comma-separated", name, v)
			}
			switch p.Scheme {
			case "nats", "tls", "ws", "wss":
			default:
				return nil, fmt.Errorf("%s=%q: scheme %q: want nats, tls, ws or wss", name, v, p.Scheme)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func duration(getenv func(string) string, name string) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 5s", name, v)
	}
	return d, nil
}

// Plugins are the broker, registry and transport a program's server and
// client share. Tests build them directly (a memory registry, say).
type Plugins struct {
	Broker    broker.Broker
	Registry  registry.Registry
	Transport transport.Transport
}

// PluginOption changes how Plugins builds the parts.
type PluginOption func(*pluginConfig)

type pluginConfig struct {
	answerGoMicro bool
	ownStreams    bool
	natsOptions   []nats.Option
	log           *slog.Logger
}

// Logger is where the plugins log their connections' events (NATS
// disconnects, reconnects, permission violations) and the jetstream
// broker its own; default slog.Default().
func Logger(l *slog.Logger) PluginOption { return func(c *pluginConfig) { c.log = l } }

// OwnStreams makes the jetstream broker update existing streams to
// JETSTREAM_*; without it the broker creates missing streams only and
// warns when existing ones differ. Give it to one program: the one that
// publishes (see jsbroker.UpdateStreams).
func OwnStreams() PluginOption { return func(c *pluginConfig) { c.ownStreams = true } }

// AnswerGoMicroLookups makes the NATS registry also answer go-micro's stock
// NATS registry lookups for this program's services, so go-micro's own
// tools (micro call, micro api) find them.
func AnswerGoMicroLookups() PluginOption { return func(c *pluginConfig) { c.answerGoMicro = true } }

// NATSOptions are added to every NATS connection the plugins open
// (credentials, TLS).
func NATSOptions(opts ...nats.Option) PluginOption {
	return func(c *pluginConfig) { c.natsOptions = append(c.natsOptions, opts...) }
}

// Plugins builds the parts the environment names; nothing connects yet.
func (e Env) Plugins(opts ...PluginOption) (Plugins, error) {
	c := pluginConfig{natsOptions: e.NATSOptions(), log: slog.Default()}
	for _, o := range opts {
		o(&c)
	}
	reg := e.registry(c)
	var p Plugins
	p.Registry = reg
	switch e.Broker {
	case BrokerNATS:
		st := &natsBrokerState{}
		logged := append(natslog.StateOptions(c.log.With("broker", "nats"), &st.State), c.natsOptions...)
		nopts, err := natsOptions(e.BrokerAddrs, logged)
		if err != nil {
			return Plugins{}, fmt.Errorf("MICRO_BROKER=nats: %w", err)
		}
		st.Broker = natsbroker.NewNatsBroker(broker.Addrs(e.BrokerAddrs...), broker.Registry(reg), natsbroker.Options(nopts))
		p.Broker = st
	case BrokerJetStream:
		p.Broker = jsbroker.New(broker.Addrs(e.BrokerAddrs...),
			jsbroker.NatsOptions(c.natsOptions...),
			jsbroker.Logger(c.log),
			jsbroker.Replicas(e.JetStream.Replicas),
			jsbroker.EventLimits(e.JetStream.Events),
			jsbroker.DeadLetterLimits(e.JetStream.DeadLetters),
			jsbroker.UpdateStreams(c.ownStreams))
	default:
		p.Broker = httpbroker.NewBroker(broker.Addrs(e.BrokerAddrs...), broker.Registry(reg))
	}
	switch e.Transport {
	case TransportNATS:
		nopts, err := natsOptions(e.TransportAddrs, append(natslog.Options(c.log.With("transport", "nats")), c.natsOptions...))
		if err != nil {
			return Plugins{}, fmt.Errorf("MICRO_TRANSPORT=nats: %w", err)
		}
		p.Transport = natstransport.NewTransport(transport.Addrs(e.TransportAddrs...), natstransport.Options(nopts))
	default:
		p.Transport = e.httpTransport()
	}
	return p, nil
}

func (e Env) registry(c pluginConfig) registry.Registry {
	switch e.Registry {
	case RegistryNATS:
		ropts := []registry.Option{registry.Addrs(e.RegistryAddrs...)}
		if e.RegistryTimeout > 0 {
			ropts = append(ropts, registry.Timeout(e.RegistryTimeout))
		}
		return natsregistry.New(ropts,
			natsregistry.AnswerGoMicro(c.answerGoMicro),
			// Programs on go-micro's stock registry (a subscriber written
			// as in the tutorial) are found too.
			natsregistry.AskGoMicro(true),
			natsregistry.NatsOptions(c.natsOptions...),
			natsregistry.Logger(c.log))
	case RegistryMemory:
		return registry.NewMemoryRegistry()
	default:
		return newPatientMDNS(e.RegistryTimeout)
	}
}

// natsOptions is go-micro's struct form of the connection options, which
// its NATS broker and transport take.
func natsOptions(addrs []string, extra []nats.Option) (nats.Options, error) {
	o := nats.GetDefaultOptions()
	o.Servers = addrs
	for _, opt := range extra {
		if err := opt(&o); err != nil {
			return nats.Options{}, err
		}
	}
	return o, nil
}

// NewServer returns go-micro's RPC server named name on p, configured by
// the environment; opts come last and win. It waits for requests in flight
// when stopped (server.Wait: go-micro's rpc server reads it once, when
// built).
func (e Env) NewServer(name string, p Plugins, opts ...server.Option) server.Server {
	sopts := []server.Option{
		server.Name(name),
		// go-micro's default id is one per process: two servers of a test
		// process would register the same node.
		server.Id(uuid.NewString()),
		server.Version("latest"),
		server.Broker(p.Broker),
		server.Registry(p.Registry),
		// Each request's Micro-ID as go-micro's server reads it: without
		// it, a call on a reused connection can stall for 5 s (microid.go).
		server.Transport(withMicroID(p.Transport)),
		// The caller's deadline, applied per request (microid.go); first,
		// so that it bounds every other wrapper too.
		server.WrapHandler(requestDeadline),
		server.Wait(nil),
	}
	if e.ServerAddress != "" {
		sopts = append(sopts, server.Address(e.ServerAddress))
	}
	if e.ServerAdvertise != "" {
		sopts = append(sopts, server.Advertise(e.ServerAdvertise))
	}
	if e.RegisterTTL > 0 {
		sopts = append(sopts, server.RegisterTTL(e.RegisterTTL))
	}
	if e.RegisterInterval > 0 {
		sopts = append(sopts, server.RegisterInterval(e.RegisterInterval))
	}
	return server.NewRPCServer(append(sopts, opts...)...)
}

// NewClient returns go-micro's RPC client on p, with a selector of its own
// (go-micro's default selector is shared by the whole process, and a
// registry option re-points it), sending protobuf; opts come last and win.
func (e Env) NewClient(p Plugins, opts ...client.Option) client.Client {
	copts := []client.Option{
		client.Broker(p.Broker),
		client.Transport(p.Transport),
		client.Selector(selector.NewSelector(selector.Registry(p.Registry))),
		client.ContentType(ContentType),
	}
	if e.ClientRequestTimeout > 0 {
		copts = append(copts, client.RequestTimeout(e.ClientRequestTimeout))
	}
	if e.ClientRetries >= 0 {
		copts = append(copts, client.Retries(e.ClientRetries))
	}
	if e.ClientPoolSize > 0 {
		copts = append(copts, client.PoolSize(e.ClientPoolSize))
	}
	if e.ClientPoolTTL > 0 {
		copts = append(copts, client.PoolTTL(e.ClientPoolTTL))
	}
	return client.NewClient(append(copts, opts...)...)
}

// Redacted returns addresses (comma-separated URLs or host:port pairs) fit
// for a log line: a password in a URL (nats://user:password@host) is
// replaced by xxxxx.
func Redacted(addrs ...string) string {
	out := make([]string, 0, len(addrs))
	for _, list := range addrs {
		for _, a := range strings.Split(list, ",") {
			if u, err := url.Parse(strings.TrimSpace(a)); err == nil && u.User != nil {
				a = u.Redacted()
			}
			out = append(out, a)
		}
	}
	return strings.Join(out, ",")
}
