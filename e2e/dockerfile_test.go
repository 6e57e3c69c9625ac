package e2e

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// No Docker engine runs in CI, so the images' promises are checked in their
// Dockerfiles: the final stage is distroless (no shell, no package manager),
// runs as a non-root user and executes nothing at build time.
func TestDockerfilesFinalStage(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "shippy-*", "Dockerfile"))
	if err != nil || len(files) != 3 {
		t.Fatalf("Glob(shippy-*/Dockerfile) = %v, %v; want the three programs' Dockerfiles", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(filepath.Dir(file)), func(t *testing.T) {
			final := finalStage(t, file)
			from := strings.Fields(final[0])
			if len(from) < 2 || !strings.HasPrefix(from[1], "gcr.io/distroless/static") || !strings.HasSuffix(from[1], ":nonroot") {
				t.Errorf("final stage %q; want FROM gcr.io/distroless/static...:nonroot (no shell, no package manager)", final[0])
			}
			var user string
			for _, line := range final[1:] {
				word := strings.ToUpper(strings.Fields(line)[0])
				switch word {
				case "USER":
					user = strings.Fields(line)[1]
				case "RUN":
					t.Errorf("final stage runs %q; the runtime image has no shell to run it", line)
				case "ENTRYPOINT":
					if !strings.Contains(line, "[") {
						t.Errorf("%q is in shell form; the image has no shell", line)
					}
				}
			}
			if user != "nonroot" && user != "65532" {
				t.Errorf("final stage USER = %q; want nonroot", user)
			}
		})
	}
}

// finalStage returns the instructions of the last build stage, FROM first.
func finalStage(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stage []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(strings.ToUpper(line), "FROM ") {
			stage = nil
		}
		stage = append(stage, line)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(stage) == 0 {
		t.Fatalf("%s has no FROM", file)
	}
	return stage
}
