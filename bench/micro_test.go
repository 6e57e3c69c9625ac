package bench

import (
	"os"
	"testing"

	"github.com/shippy/shippy/internal/microenv"
)

// fromEnv builds, as shippy's programs do, the go-micro parts that the
// current MICRO_* environment names: each call gets parts of its own, as a
// separate process would.
func fromEnv(b testing.TB) (microenv.Env, microenv.Plugins) {
	b.Helper()
	env, err := microenv.LoadEnv(os.Getenv)
	if err != nil {
		b.Fatal(err)
	}
	p, err := env.Plugins()
	if err != nil {
		b.Fatal(err)
	}
	return env, p
}
