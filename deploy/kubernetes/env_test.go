package kubernetes

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/shippy/shippy/internal/microenv"
)

// plannedEnv are variables the manifests set for features decided but not
// built yet. A name here that the code does not read is logged, not failed;
// once the code reads it, it passes like any other.
var plannedEnv = map[string]string{
	"NATS_USER":          "the program's NATS user",
	"NATS_PASSWORD_FILE": "the file holding the program's NATS password",
}

// goRuntimeEnv are read by the Go runtime, not by shippy's code.
var goRuntimeEnv = map[string]bool{"GOMEMLIMIT": true, "GOGC": true, "GOMAXPROCS": true, "GODEBUG": true}

// deploymentPrograms maps each Deployment to the program directory its
// container runs.
var deploymentPrograms = map[string]string{
	"shippy-user-service":  "shippy-user-service",
	"shippy-email-service": "shippy-email-service",
}

var manifestFiles = []string{"nats-client.yaml", "user-service.yaml", "email-service.yaml"}

// TestManifestEnv checks that every environment variable a Deployment sets
// (directly or from a ConfigMap) is read by the program it runs (its own
// code or internal/, which reads go-micro's MICRO_* variables) or by the Go
// runtime, or is a planned one; and that internal/microenv accepts the
// MICRO_* values.
func TestManifestEnv(t *testing.T) {
	var docs []map[string]any
	for _, f := range manifestFiles {
		docs = append(docs, yamlDocs(t, f)...)
	}
	configMaps := map[string]map[string]any{}
	for _, d := range docs {
		if d["kind"] == "ConfigMap" {
			data, _ := d["data"].(map[string]any)
			configMaps[fmt.Sprint(lookup(d, "metadata.name"))] = data
		}
	}
	seen := 0
	for _, d := range docs {
		if d["kind"] != "Deployment" {
			continue
		}
		name := fmt.Sprint(lookup(d, "metadata.name"))
		dir, ok := deploymentPrograms[name]
		if !ok {
			t.Errorf("Deployment %s: no program known for it; add it to deploymentPrograms", name)
			continue
		}
		seen++
		read := stringLiterals(t, filepath.Join("..", "..", dir), filepath.Join("..", "..", "internal"))
		containers, _ := lookup(d, "spec.template.spec.containers").([]any)
		for _, c := range containers {
			c, _ := c.(map[string]any)
			env := containerEnv(t, name, c, configMaps)
			// The files the *_FILE variables name are mounted Secrets on
			// Kubernetes; here a stand-in with a value.
			local := map[string]string{}
			for k, v := range env {
				local[k] = v
				if strings.HasSuffix(k, "_FILE") {
					f := filepath.Join(t.TempDir(), "secret")
					if err := os.WriteFile(f, []byte("pw-stand-in-0123456789abcdef0123456789"), 0o600); err != nil {
						t.Fatal(err)
					}
					local[k] = f
				}
			}
			if _, err := microenv.LoadEnv(func(k string) string { return local[k] }); err != nil {
				t.Errorf("Deployment %s: %v", name, err)
			}
			values := ""
			for _, v := range env {
				values += v + "\n"
			}
			for _, k := range sortedKeys(env) {
				switch {
				case read[k], goRuntimeEnv[k]:
				case strings.Contains(values, "$("+k+")"):
					// Only a source for $(NAME) in another value (POD_IP).
				case plannedEnv[k] != "":
					t.Logf("Deployment %s: %s is planned, not read by %s yet (%s)", name, k, dir, plannedEnv[k])
				default:
					t.Errorf("Deployment %s sets %s, which neither %s (with internal/) nor the Go runtime reads (a typo?)", name, k, dir)
				}
			}
		}
	}
	if seen != len(deploymentPrograms) {
		t.Errorf("found %d Deployments in %v; want %d", seen, manifestFiles, len(deploymentPrograms))
	}
}

// containerEnv is a container's environment: envFrom ConfigMaps, then env
// (values from fields, Secrets or resources stand as "<from ...>").
func containerEnv(t *testing.T, deployment string, c map[string]any, configMaps map[string]map[string]any) map[string]string {
	t.Helper()
	env := map[string]string{}
	from, _ := c["envFrom"].([]any)
	for _, f := range from {
		ref := fmt.Sprint(lookup(f, "configMapRef.name"))
		data, ok := configMaps[ref]
		if !ok {
			t.Errorf("Deployment %s: envFrom ConfigMap %q is not in %v", deployment, ref, manifestFiles)
		}
		for k, v := range data {
			env[k] = fmt.Sprint(v)
		}
	}
	list, _ := c["env"].([]any)
	for _, e := range list {
		e, _ := e.(map[string]any)
		k := fmt.Sprint(e["name"])
		if v, ok := e["value"]; ok {
			env[k] = fmt.Sprint(v)
		} else {
			env[k] = fmt.Sprintf("<from %v>", e["valueFrom"])
		}
	}
	return env
}

var envName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)

// stringLiterals returns the string constants that look like environment
// variable names in the non-test Go files under dirs: a superset of the
// variables the code reads (getenv("JWT_TTL"), []string{"DB_HOST", ...}).
func stringLiterals(t *testing.T, dirs ...string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && envName.MatchString(s) {
						out[s] = true
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatalf("read %s: %v", dir, err)
		}
	}
	if !out["LOG_LEVEL"] {
		t.Fatalf("found no LOG_LEVEL literal in %v: the scan is broken", dirs)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
