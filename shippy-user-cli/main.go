// Command shippy-user-cli creates, lists and authenticates shippy users by
// calling the user-service (go.micro.srv.user), which it finds through the
// go-micro registry configured by the MICRO_* environment variables.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/shippy/shippy/internal/microenv"
	pb "github.com/shippy/shippy/proto/user"
)

// serviceName is the user-service's registry name, as in the tutorial.
const serviceName = "go.micro.srv.user"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin *os.File, stdout, stderr *os.File, getenv func(string) string) int {
	a := &app{
		stdout:  stdout,
		stderr:  stderr,
		getenv:  getenv,
		connect: connect,
		prompt: func(label string) (string, bool, error) {
			fd := int(stdin.Fd())
			if !term.IsTerminal(fd) {
				return "", false, nil
			}
			_, _ = stderr.WriteString(label)
			b, err := term.ReadPassword(fd)
			_, _ = stderr.WriteString("\n")
			return string(b), true, err
		},
	}
	return a.run(ctx, args)
}

// connect builds a go-micro client from the MICRO_* environment; the CLI
// runs no server, it only calls.
func connect() (pb.UserService, error) {
	env, err := microenv.LoadEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	plugins, err := env.Plugins()
	if err != nil {
		return nil, err
	}
	return pb.NewUserService(serviceName, env.NewClient(plugins)), nil
}
