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
			want := len(env)
			for k := range MailSink {
				if _, ok := env[k]; ok {
					want--
					if _, kept := got[k]; kept {
						t.Errorf("Localize kept %s; want compose's mail sink left out", k)
					}
				}
			}
			if len(got) != want {
				t.Errorf("Localize kept %d of %d variables; want %d (all but the mail sink's)", len(got), len(env), want)
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

func TestEnvironGivesOpsServersAFreePort(t *testing.T) {
	t.Setenv("METRICS_ADDRESS", ":9091")
	if env := strings.Join(Environ(nil), "\n"); !strings.Contains(env, "METRICS_ADDRESS=127.0.0.1:0") || strings.Contains(env, ":9091") {
		t.Errorf("Environ(nil) = %s; want METRICS_ADDRESS=127.0.0.1:0 and not the shell's :9091", env)
	}
	if env := strings.Join(Environ(map[string]string{"METRICS_ADDRESS": "off"}), "\n"); !strings.Contains(env, "METRICS_ADDRESS=off") {
		t.Errorf("Environ with METRICS_ADDRESS=off = %s; want it kept", env)
	}
}
