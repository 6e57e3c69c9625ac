package bench

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go-micro.dev/v6/client"
	"go-micro.dev/v6/logger"
	"go-micro.dev/v6/registry"

	"github.com/shippy/shippy/internal/composeenv"
	"github.com/shippy/shippy/internal/natsregistry"
	pb "github.com/shippy/shippy/proto/user"
)

// The services are `package main`: they run as processes, built once per
// benchmark binary, exactly as deployed.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	// go-micro's start/stop lines in this process would bury the results.
	logger.DefaultLogger = logger.NewLogger(logger.WithLevel(logger.WarnLevel))
	// Nor the NATS connections' reconnect warnings when a benchmark's
	// nats-server stops before its clients.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	if kind := os.Getenv(helperEnv); kind != "" {
		os.Exit(runHelper(kind)) // started by pacedFloor or startEchoProcess
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func binaries(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "shippy-bench-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator),
			"./shippy-user-service", "./shippy-email-service", "./shippy-user-cli")
		cmd.Dir = ".."
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		buildErr = cmd.Run()
	})
	if buildErr != nil {
		b.Fatalf("build the services: %v", buildErr)
	}
	return binDir
}

// localEnv is a service's docker-compose.yml environment made local: the
// benchmarks measure the shipped defaults.
func localEnv(b *testing.B, service, natsURL, dbURL string) map[string]string {
	b.Helper()
	env := composeenv.Localize(b, composeenv.Service(b, service), natsURL, dbURL)
	env["LOG_LEVEL"] = "warn" // one JSON line per event on stderr is not what is measured
	return env
}

type process struct {
	name   string
	cmd    *exec.Cmd
	stderr *tailBuffer
	exited chan struct{}
	lines  chan stampedLine // stdout lines with their arrival time
}

type stampedLine struct {
	at   time.Time
	text string
}

// startProcess runs a service binary. Its stdout is read line by line and
// each line is stamped with the time the benchmark process received it.
func startProcess(b *testing.B, name string, env map[string]string) *process {
	b.Helper()
	return startProcessLogging(b, name, env, nil)
}

// startProcessLogging is startProcess with the whole of the process's
// stderr (its log) also written to logs, when not nil.
func startProcessLogging(b *testing.B, name string, env map[string]string, logs io.Writer) *process {
	b.Helper()
	p := &process{name: name, stderr: &tailBuffer{}, exited: make(chan struct{}), lines: make(chan stampedLine, 1<<16)}
	p.cmd = exec.Command(filepath.Join(binaries(b), name))
	p.cmd.Env = composeenv.Environ(env)
	p.cmd.Dir = b.TempDir()
	p.cmd.Stderr = p.stderr
	if logs != nil {
		p.cmd.Stderr = io.MultiWriter(p.stderr, logs)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := stampedLine{at: time.Now(), text: sc.Text()}
			select {
			case p.lines <- l:
			default: // nobody is listening: drop rather than block the service
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { p.cmd.Wait(); close(p.exited) }()
	b.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
		if b.Failed() {
			b.Logf("%s stderr (tail):\n%s", name, p.stderr)
		}
	})
	return p
}

// rssKiB reads VmRSS from the process's own statistics.
func (p *process) rssKiB(b *testing.B) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatalf("read %s status: %v", p.name, err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatalf("parse %q: %v", line, err)
			}
			return n
		}
	}
	b.Fatalf("%s: no VmRSS in /proc status", p.name)
	return 0
}

// waitRegistered polls the NATS registry until service has a node; asking
// through a go-micro client first would cache the miss for 5 s.
func waitRegistered(b *testing.B, natsURL, service string, p *process) {
	b.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(natsURL)}, natsregistry.AskGoMicro(true))
	deadline := time.Now().Add(60 * time.Second)
	for {
		svcs, err := reg.GetService(service)
		if err == nil && len(svcs) > 0 && len(svcs[0].Nodes) > 0 {
			return
		}
		if p != nil {
			select {
			case <-p.exited:
				b.Fatalf("%s exited before it registered:\n%s", p.name, p.stderr)
			default:
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s did not register within 60s (last error %v)", service, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clientEnv sets, for this benchmark, the MICRO_* variables a client of the
// services gets in docker-compose.yml (the CLI's), and returns a go-micro
// client built by microenv from them, as the CLI builds its own.
func clientEnv(b *testing.B, natsURL string) client.Client {
	b.Helper()
	for k, v := range localEnv(b, "user-cli", natsURL, "") {
		if strings.HasPrefix(k, "MICRO_") && k != "MICRO_SERVER_ADDRESS" {
			b.Setenv(k, v)
		}
	}
	env, p := fromEnv(b)
	return env.NewClient(p)
}

func userClient(b *testing.B, natsURL string) pb.UserService {
	return pb.NewUserService("go.micro.srv.user", clientEnv(b, natsURL))
}

// tailBuffer keeps the last 64 KiB written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 64<<10 {
		t.b = t.b[len(t.b)-64<<10:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
