// Package microenv builds go-micro services configured only by go-micro's own
// MICRO_* environment variables (MICRO_BROKER, MICRO_REGISTRY, ...).
//
// go-micro's Service.Init parses os.Args with urfave/cli and exits on any flag
// it does not know, which breaks programs with their own flags (the CLI) and
// code under `go test`. NewService hides the arguments from it, so only the
// environment is read, and checks the plugin names first so that a typo is
// reported with the variable's name instead of go-micro's bare exit.
//
// Importing it also registers shippy's durable broker, so MICRO_BROKER=jetstream
// works in every program like go-micro's built-in choices.
package microenv

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"go-micro.dev/v6"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/cmd"
	"go-micro.dev/v6/selector"

	_ "github.com/shippy/shippy/internal/jsbroker" // MICRO_BROKER=jetstream
)

// argsMu serialises the os.Args swap and every read of os.Args while a
// service is built: several services may start in one test binary.
var argsMu sync.Mutex

// NewService returns a go-micro service named name, initialised from the
// environment. opts are applied before the environment, so MICRO_* variables
// win, as they do for any go-micro service.
func NewService(name string, opts ...micro.Option) (micro.Service, error) {
	if err := Validate(os.Getenv); err != nil {
		return nil, err
	}
	// Building the service reads os.Args too (urfave/cli's NewApp), so it
	// happens under the same lock as the swap below.
	argsMu.Lock()
	defer argsMu.Unlock()
	srv := micro.NewService(name, append(ownClient(), opts...)...)

	saved := os.Args
	os.Args = os.Args[:1]
	defer func() { os.Args = saved }()
	srv.Init()
	return srv, nil
}

// ContentType is the content type this package's clients send requests and
// events in. go-micro's client defaults to JSON and has no MICRO_* variable
// for it; protobuf measured 1.1 to 1.5 times the Echo RPC rate of JSON with
// one caller on both transports (bench: BenchmarkTuneEcho, BENCH.md).
// Servers answer in the caller's content type, so JSON clients still work.
const ContentType = "application/protobuf"

// ownClient gives the service a client with a selector of its own, also
// handed to go-micro's cmd, which re-points the selector it holds when
// MICRO_REGISTRY is set. Both default to the process-wide
// selector.DefaultSelector, and a registry option re-points the selector
// it is given (client.Registry calls Selector.Init): services, and parallel
// tests, with different registries in one process would otherwise look each
// other's services up in the wrong registry ("service ...: not found").
func ownClient() []micro.Option {
	sel := selector.NewSelector()
	return []micro.Option{
		micro.Client(client.NewClient(client.Selector(sel), client.ContentType(ContentType))),
		micro.Cmd(cmd.NewCmd(cmd.Selector(&sel))),
	}
}

// plugins names the variables that select a go-micro plugin by name, with the
// names go-micro knows for each. The built-in defaults (http broker, mdns
// registry, http transport) are not in go-micro's maps but are valid values.
func plugins() map[string][]string {
	return map[string][]string{
		"MICRO_BROKER":    append(keys(cmd.DefaultBrokers), "http"),
		"MICRO_REGISTRY":  append(keys(cmd.DefaultRegistries), "mdns"),
		"MICRO_TRANSPORT": append(keys(cmd.DefaultTransports), "http"),
	}
}

// Validate checks that every plugin-selecting MICRO_* variable names a plugin
// that this binary has. getenv is os.Getenv outside tests.
func Validate(getenv func(string) string) error {
	all := plugins()
	vars := make([]string, 0, len(all))
	for v := range all {
		vars = append(vars, v)
	}
	sort.Strings(vars)
	for _, v := range vars {
		val := getenv(v)
		if val == "" {
			continue
		}
		known := uniqueSorted(all[v])
		if !contains(known, val) {
			return fmt.Errorf("%s=%q is not a known go-micro plugin; use one of: %s", v, val, strings.Join(known, ", "))
		}
	}
	return nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func uniqueSorted(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
