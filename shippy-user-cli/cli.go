package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shippy/shippy/internal/requestid"
	pb "github.com/shippy/shippy/proto/user"
)

const prog = "shippy-user-cli"

// Exit codes, documented in the usage text.
const (
	exitOK          = 0
	exitRejected    = 1 // the service said no (4xx) or the token is not valid
	exitUsage       = 2 // bad flags, missing values, bad MICRO_* configuration
	exitUnavailable = 3 // service not found, unreachable, timed out or failed (5xx)
)

const defaultTimeout = 10 * time.Second

const usageText = `Usage: shippy-user-cli [--json] [--timeout 10s] <command> [flags]

Talks to the shippy user-service (go.micro.srv.user), found through the
go-micro registry configured by MICRO_REGISTRY, MICRO_REGISTRY_ADDRESS, ...

Commands:
  create    --name N --email E [--company C] [--password P]   create a user; prints "Created: <id>"
  get       --id ID                                           show one user: your own, or any for an admin
  list                                                        list all users (admins only)
  auth      --email E [--password P] [--no-save]              print a token for the user and save it
  validate  [--token T]                                       exit 0 when the token is valid, 1 when not
  logout                                                      remove the saved token
  demo                                                        the tutorial's sequence: create a sample
                                                              user, list users, authenticate, print the token
  events tail [--from-start] [--count N]                      print each user.created event as it happens
  events dead-letters [--replay ID]                           list the dead-lettered events; --replay publishes
                                                              one again and removes it from the dead letters

Global flags (before or after the command):
  --json           machine-readable JSON on stdout
  --timeout D      bound for each call to the service (default 10s)
  --token T        the token to send (get, list, demo) or check (validate)
  --request-id ID  the request id sent with each call of the command (default:
                   a new random one; up to 64 letters, digits, - _ . :); the
                   services log it, so an operator can follow the command
  --verbose        print the request id on stderr (errors always end with it)

Passwords: --password, else SHIPPY_PASSWORD, else a no-echo prompt when stdin
is a terminal. Prefer SHIPPY_PASSWORD or the prompt: flags are visible in ps.

Tokens: get and list need one. auth saves it (unless --no-save) in
$XDG_CONFIG_HOME/shippy/token, or ~/.config/shippy/token, readable by you
only; commands send --token, else SHIPPY_TOKEN, else that file. logout
removes the file.

Events: the events commands read the broker's NATS, not the user-service:
MICRO_BROKER=jetstream (tail also takes nats) and MICRO_BROKER_ADDRESS, as
the services have them, logged in as the NATS user ops (NATS_USER=ops and
NATS_PASSWORD or NATS_PASSWORD_FILE): the CLI's own user may not read events.

Environment:
  SHIPPY_PASSWORD          password for create and auth
  SHIPPY_TOKEN             token for get, list, validate and demo
  MICRO_REGISTRY           go-micro registry (mdns by default; nats, ...)
  MICRO_REGISTRY_ADDRESS   registry address, e.g. nats://127.0.0.1:4222
  MICRO_TRANSPORT          go-micro transport; must match the service's
  MICRO_BROKER, MICRO_BROKER_ADDRESS   the broker's NATS (events)
  NATS_USER, NATS_PASSWORD (or NATS_PASSWORD_FILE)   NATS login
  (and every other MICRO_* variable go-micro reads)

Exit codes:
  0  success
  1  rejected: invalid input, wrong credentials, not found, already exists
     (a 4xx answer from the service), or validate: the token is not valid
  2  usage or configuration error (bad flags, missing value, bad MICRO_* value)
  3  the user-service is not reachable: not registered, no answer within
     --timeout, or it failed (5xx); for events: NATS or its stream

Errors are printed to stderr as one line, with --json too:
  shippy-user-cli: <command>: <message> (<code the service answered>); request id: <id>
The request id (once the service was called) names the services' log lines
about the command: give it to whoever reads them.
`

// app is the CLI with its outside world injected, so tests can run it
// against a fake UserService and capture its output.
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// connect builds the user-service client; called only once flags are valid.
	connect func() (pb.UserService, error)
	// prompt asks for a secret without echo; ok is false when there is no terminal.
	prompt func(label string) (secret string, ok bool, err error)

	json    bool
	timeout time.Duration
	// token is --token: sent by get, list and demo, checked by validate.
	token string
	// requestID is --request-id, or the one made for the command's first
	// call (newRequestID, or requestid.New when nil); every call of the
	// command sends it (X-Request-Id), and errors after a call end with it.
	requestID    string
	newRequestID func() string
	verbose      bool
	// called is true once a call to the service was made.
	called bool
}

// exitError is an error that decides the exit code itself. An empty msg
// means the command already printed its answer (validate: not valid).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, a ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, a...)}
}

// errHelp reports that usage was printed on request: exit 0.
var errHelp = errors.New("help requested")

type command struct {
	name string
	run  func(ctx context.Context, a *app, args []string) error
}

var commands = []command{
	{"create", runCreate},
	{"get", runGet},
	{"list", runList},
	{"auth", runAuth},
	{"validate", runValidate},
	{"logout", runLogout},
	{"demo", runDemo},
	{"events", runEvents},
}

func (a *app) run(ctx context.Context, args []string) int {
	a.timeout = defaultTimeout
	global := flag.NewFlagSet(prog, flag.ContinueOnError)
	global.SetOutput(io.Discard)
	a.globalFlags(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, usageText)
			return exitOK
		}
		return a.fail("", usageErrorf("%v (see %s --help)", err, prog))
	}
	rest := global.Args()
	if len(rest) == 0 {
		return a.fail("", usageErrorf("no command given (see %s --help)", prog))
	}
	if rest[0] == "help" {
		fmt.Fprint(a.stdout, usageText)
		return exitOK
	}
	for _, c := range commands {
		if c.name == rest[0] {
			return a.fail(c.name, c.run(ctx, a, rest[1:]))
		}
	}
	return a.fail("", usageErrorf("unknown command %q (see %s --help)", rest[0], prog))
}

func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.BoolVar(&a.json, "json", a.json, "machine-readable JSON output")
	fs.DurationVar(&a.timeout, "timeout", a.timeout, "bound for each call to the service")
	fs.StringVar(&a.token, "token", a.token, "the token to send (else SHIPPY_TOKEN, else the saved one)")
	fs.StringVar(&a.requestID, "request-id", a.requestID, "the request id to send (default: a new random one)")
	fs.BoolVar(&a.verbose, "verbose", a.verbose, "print the request id on stderr")
}

// parse parses a command's flags (plus the global ones) and rejects
// positional arguments.
func (a *app) parse(fs *flag.FlagSet, args []string) error {
	a.globalFlags(fs)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(a.stdout, "Usage: %s %s [flags]\n\nFlags:\n", prog, fs.Name())
			fs.SetOutput(a.stdout)
			fs.PrintDefaults()
			return errHelp
		}
		return usageErrorf("%v (see %s %s --help)", err, prog, fs.Name())
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q (see %s %s --help)", fs.Arg(0), prog, fs.Name())
	}
	if a.timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %s", a.timeout)
	}
	if a.requestID != "" && !requestid.Valid(a.requestID) {
		return usageErrorf("--request-id must be 1 to %d letters, digits, '-', '_', '.' or ':'", requestid.MaxLen)
	}
	return nil
}

// required returns a usage error naming the first empty flag.
func required(flags ...[2]string) error {
	for _, f := range flags {
		if strings.TrimSpace(f[1]) == "" {
			return usageErrorf("--%s is required", f[0])
		}
	}
	return nil
}

// password takes the password from the flag, SHIPPY_PASSWORD or a terminal
// prompt, in that order.
func (a *app) password(fromFlag string) (string, error) {
	if fromFlag != "" {
		return fromFlag, nil
	}
	if p := a.getenv("SHIPPY_PASSWORD"); p != "" {
		return p, nil
	}
	if a.prompt != nil {
		p, ok, err := a.prompt("Password: ")
		if err != nil {
			return "", usageErrorf("read password: %v", err)
		}
		if ok && p != "" {
			return p, nil
		}
	}
	return "", usageErrorf("a password is required: --password, SHIPPY_PASSWORD or a terminal prompt")
}

// client connects to the user-service; a bad MICRO_* value is a configuration error.
func (a *app) client() (pb.UserService, error) {
	svc, err := a.connect()
	if err != nil {
		return nil, usageErrorf("configure go-micro client: %v", err)
	}
	return svc, nil
}

// call runs one RPC bounded by --timeout. The registry lookup inside the
// go-micro client ignores the context, so the bound is enforced here too.
func (a *app) call(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx = requestid.Outgoing(ctx, a.requestIDForCall())
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &exitError{code: exitUnavailable, msg: fmt.Sprintf("no answer from %s within %s (--timeout)", serviceName, a.timeout)}
		}
		return &exitError{code: exitUnavailable, msg: "interrupted"}
	}
}

// fail prints err as one line on stderr and returns its exit code.
func (a *app) fail(cmd string, err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	code, msg := classify(err)
	if msg == "" {
		return code
	}
	prefix := prog + ": "
	if cmd != "" {
		prefix += cmd + ": "
	}
	msg = oneLine(msg)
	if a.called {
		// For an operator: the services logged the calls under this id.
		msg += "; request id: " + a.requestID
	}
	fmt.Fprintln(a.stderr, prefix+msg)
	return code
}

// requestIDForCall returns the command's request id, made on its first
// call unless --request-id gave one, and prints it once with --verbose.
func (a *app) requestIDForCall() string {
	if a.requestID == "" {
		a.requestID = requestid.New()
		if a.newRequestID != nil {
			a.requestID = a.newRequestID()
		}
	}
	if !a.called && a.verbose {
		fmt.Fprintf(a.stderr, "%s: request id: %s\n", prog, a.requestID)
	}
	a.called = true
	return a.requestID
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
