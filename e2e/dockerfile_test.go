package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The images' promises, checked in the Dockerfile (make compose-test builds
// and runs the images for real): each program's image is a final stage that
// is distroless (no shell, no package manager), runs as a non-root user and
// executes nothing at build time.
func TestDockerfileImageStages(t *testing.T) {
	stages := dockerfileStages(t, filepath.Join("..", "Dockerfile"))
	for _, target := range []string{"user-service", "email-service", "user-cli"} {
		t.Run(target, func(t *testing.T) {
			stage, ok := stages[target]
			if !ok {
				t.Fatalf("Dockerfile has no stage %q", target)
			}
			from := strings.Fields(stage[0])
			if len(from) < 2 || !strings.HasPrefix(from[1], "gcr.io/distroless/static") || !strings.HasSuffix(from[1], ":nonroot") {
				t.Errorf("stage %s: %q; want FROM gcr.io/distroless/static...:nonroot (no shell, no package manager)", target, stage[0])
			}
			var user, entrypoint string
			for _, line := range stage[1:] {
				word := strings.ToUpper(strings.Fields(line)[0])
				switch word {
				case "USER":
					user = strings.Fields(line)[1]
				case "RUN":
					t.Errorf("stage %s runs %q; the image has no shell to run it", target, line)
				case "ENTRYPOINT":
					entrypoint = line
				}
			}
			if user != "nonroot" && user != "65532" {
				t.Errorf("stage %s: USER = %q; want nonroot", target, user)
			}
			if want := `ENTRYPOINT ["/shippy-` + target + `"]`; entrypoint != want {
				t.Errorf("stage %s: %q; want %s (exec form: the image has no shell)", target, entrypoint, want)
			}
		})
	}
}

// docker-compose.yml builds each program from its own stage of the one
// Dockerfile, so that the build stage is shared (and cached) between them.
func TestComposeBuildsDockerfileTargets(t *testing.T) {
	stages := dockerfileStages(t, filepath.Join("..", "Dockerfile"))
	raw, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]struct {
			Build *struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
				Target     string `yaml:"target"`
			} `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	for _, svc := range []string{"user-service", "email-service", "user-cli"} {
		b := file.Services[svc].Build
		if b == nil {
			t.Errorf("service %s has no build section", svc)
			continue
		}
		if b.Context != "." || (b.Dockerfile != "" && b.Dockerfile != "Dockerfile") || b.Target != svc {
			t.Errorf("service %s builds %+v; want context ., the Dockerfile, target %s", svc, *b, svc)
		}
		if _, ok := stages[b.Target]; !ok {
			t.Errorf("service %s builds target %q, which the Dockerfile lacks", svc, b.Target)
		}
	}
}

// dockerfileStages returns each named stage's instructions, FROM first.
func dockerfileStages(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string][]string{}
	var name string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if strings.EqualFold(fields[0], "FROM") {
			name = ""
			if n := len(fields); n >= 4 && strings.EqualFold(fields[n-2], "AS") {
				name = fields[n-1]
			}
		}
		if name != "" {
			stages[name] = append(stages[name], line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stages) == 0 {
		t.Fatalf("%s has no named stage", file)
	}
	return stages
}
