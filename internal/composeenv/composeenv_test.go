package composeenv

import (
	"strings"
	"testing"
)

// The services' compose environment becomes local without losing a variable.
func TestLocalizeKeepsEveryVariable(t *testing.T) {
	for _, svc := range []string{"user-service", "email-service", "user-cli"} {
		t.Run(svc, func(t *testing.T) {
			env := Service(t, svc)
			if env["MICRO_REGISTRY"] != "nats" {
				t.Fatalf("Service(%q)[MICRO_REGISTRY] = %q; want the x-micro-env anchor merged in (nats)", svc, env["MICRO_REGISTRY"])
			}
			got := Localize(t, env, "nats://127.0.0.1:1234", "postgres://u:p@127.0.0.1:5433/db1?sslmode=disable")
			if len(got) != len(env) {
				t.Errorf("Localize kept %d of %d variables", len(got), len(env))
			}
			if got["MICRO_REGISTRY_ADDRESS"] != "nats://127.0.0.1:1234" {
				t.Errorf("MICRO_REGISTRY_ADDRESS = %q; want the local NATS URL", got["MICRO_REGISTRY_ADDRESS"])
			}
			if _, ok := env["DB_HOST"]; ok {
				want := map[string]string{"DB_HOST": "127.0.0.1", "DB_PORT": "5433", "DB_USER": "u", "DB_PASSWORD": "p", "DB_NAME": "db1"}
				for k, v := range want {
					if got[k] != v {
						t.Errorf("%s = %q; want %q", k, got[k], v)
					}
				}
			}
		})
	}
}

func TestEnvironDropsShippySettings(t *testing.T) {
	t.Setenv("MICRO_BROKER", "http")
	t.Setenv("BCRYPT_COST", "31")
	t.Setenv("SHIPPY_COMPOSEENV_UNRELATED", "kept")
	env := strings.Join(Environ(map[string]string{"MICRO_BROKER": "jetstream"}), "\n")
	for _, want := range []string{"MICRO_BROKER=jetstream", "SHIPPY_COMPOSEENV_UNRELATED=kept"} {
		if !strings.Contains(env, want) {
			t.Errorf("Environ lacks %s", want)
		}
	}
	for _, unwanted := range []string{"MICRO_BROKER=http", "BCRYPT_COST=31"} {
		if strings.Contains(env, unwanted) {
			t.Errorf("Environ kept the shell's %s", unwanted)
		}
	}
}
