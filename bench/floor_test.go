package bench

// Paced floors: the NATS and JetStream operations of pair 5's path, timed
// in a process of their own, one at a time with a pause between them.
//
// Pair 5 sends one event at a time through three processes that sit idle
// between events; on this kind of machine (a VM with 2 vCPUs) a process
// woken from idle answers several times slower than one kept busy: a KV
// Create takes ~100 µs back to back in one process and ~400 µs with 2 ms
// pauses from another (BENCH.md). A floor measured back to back in the
// benchmark's own process is therefore not the floor of that path; these
// are, at the pipeline's own pace.
//
// For the same reason pair 3 also compares ValidateToken with an Echo served
// by a process of its own (startEchoProcess), not only by this one.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/server"

	"github.com/shippy/shippy/internal/microenv"
)

// helperEnv makes the benchmark binary, started again by pacedFloor or
// startEchoProcess, be that helper instead of running benchmarks (TestMain).
const helperEnv = "SHIPPY_BENCH_HELPER"

// Floors pacedFloor can time.
const (
	floorRTT     = "rtt"     // NATS request/reply to a responder
	floorDeliver = "deliver" // publish into a file stream, to a pull consumer's callback
	floorKV      = "kv"      // KV Create of a new key in a file bucket
)

// pacedFloor times n operations of kind, each gap after the previous one
// ended, from a new process connected to natsURL.
func pacedFloor(b *testing.B, kind, natsURL string, n int, gap time.Duration) result {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+kind, "FLOOR_NATS_URL="+natsURL,
		"FLOOR_N="+strconv.Itoa(n), "FLOOR_GAP="+gap.String())
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("paced floor %s: %v\n%s", kind, err, exitStderr(err))
	}
	var lat []time.Duration
	if err := json.Unmarshal(out, &lat); err != nil {
		b.Fatalf("paced floor %s: %v in %q", kind, err, out)
	}
	slices.Sort(lat)
	return result{ops: len(lat), lat: lat}
}

// backToBackFloor times n operations of kind with no pause, from this
// process: the floor as a hot loop sees it.
func backToBackFloor(b *testing.B, kind, natsURL string, n int) result {
	b.Helper()
	lat, err := timeFloor(context.Background(), kind, natsURL, n, 0)
	if err != nil {
		b.Fatalf("floor %s: %v", kind, err)
	}
	slices.Sort(lat)
	return result{ops: len(lat), lat: lat}
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// echoProcess makes runHelper serve Echo (see startEchoProcess).
const echoProcess = "echo-server"

// startEchoProcess serves Echo, under a service name of its own, from a new
// process with this process's go-micro environment; it returns the name.
func startEchoProcess(b *testing.B, natsURL string) string {
	b.Helper()
	name := echoService + "-process"
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+echoProcess, "FLOOR_SERVICE="+name)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start echo process: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close() // the process stops when its stdin ends
		_ = cmd.Wait()
	})
	waitRegistered(b, natsURL, name, nil)
	return name
}

// serveEcho serves Echo until stdin ends.
func serveEcho() int {
	env, err := microenv.LoadEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo process:", err)
		return 2
	}
	p, err := env.Plugins()
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo process:", err)
		return 2
	}
	srv := env.NewServer(os.Getenv("FLOOR_SERVICE"), p, server.Address("127.0.0.1:0"))
	if err := srv.Handle(srv.NewHandler(Echo{})); err != nil {
		fmt.Fprintln(os.Stderr, "echo process:", err)
		return 1
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "echo process:", err)
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := srv.Stop(); err != nil {
		return 1
	}
	return 0
}

// runHelper is the process pacedFloor starts, which prints the latencies
// as a JSON array of nanoseconds, or the one startEchoProcess starts; it
// returns the exit code.
func runHelper(kind string) int {
	if kind == echoProcess {
		return serveEcho()
	}
	n, err := strconv.Atoi(os.Getenv("FLOOR_N"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FLOOR_N:", err)
		return 2
	}
	gap, err := time.ParseDuration(os.Getenv("FLOOR_GAP"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "FLOOR_GAP:", err)
		return 2
	}
	lat, err := timeFloor(context.Background(), kind, os.Getenv("FLOOR_NATS_URL"), n, gap)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor %s: %v\n", kind, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(lat); err != nil {
		return 1
	}
	return 0
}

func timeFloor(ctx context.Context, kind, natsURL string, n int, gap time.Duration) ([]time.Duration, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	// A second connection, for the other end: the responder or the consumer.
	other, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	defer other.Close()
	op, err := floorOp(ctx, kind, nc, other)
	if err != nil {
		return nil, err
	}
	if _, err := op(-1); err != nil { // warm up
		return nil, err
	}
	lat := make([]time.Duration, 0, n)
	for i := range n {
		if gap > 0 {
			time.Sleep(gap)
		}
		d, err := op(i)
		if err != nil {
			return nil, err
		}
		lat = append(lat, d)
	}
	return lat, nil
}

// floorOp sets kind up on nc (and other, for the far end) and returns one
// timed operation.
func floorOp(ctx context.Context, kind string, nc, other *nats.Conn) (func(i int) (time.Duration, error), error) {
	name := fmt.Sprintf("paced_%s_%d", kind, time.Now().UnixNano())
	switch kind {
	case floorRTT:
		if _, err := other.Subscribe(name, func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			return nil, err
		}
		if err := other.Flush(); err != nil {
			return nil, err
		}
		payload := make([]byte, 200)
		return func(int) (time.Duration, error) {
			t0 := time.Now()
			_, err := nc.Request(name, payload, 5*time.Second)
			return time.Since(t0), err
		}, nil
	case floorKV:
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: name, Storage: jetstream.FileStorage})
		if err != nil {
			return nil, err
		}
		return func(i int) (time.Duration, error) {
			t0 := time.Now()
			_, err := kv.Create(ctx, fmt.Sprintf("key%d", i+1), []byte("sending"))
			return time.Since(t0), err
		}, nil
	case floorDeliver:
		pub, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		sub, err := jetstream.New(other)
		if err != nil {
			return nil, err
		}
		st, err := pub.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}, Storage: jetstream.FileStorage})
		if err != nil {
			return nil, err
		}
		if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "paced", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			return nil, err
		}
		cons, err := sub.Consumer(ctx, name, "paced")
		if err != nil {
			return nil, err
		}
		got := make(chan time.Time, 1)
		if _, err := cons.Consume(func(m jetstream.Msg) {
			got <- time.Now()
			_ = m.Ack()
		}); err != nil {
			return nil, err
		}
		payload := make([]byte, 200)
		return func(int) (time.Duration, error) {
			t0 := time.Now()
			if _, err := pub.Publish(ctx, name, payload); err != nil {
				return 0, err
			}
			select {
			case t1 := <-got:
				return t1.Sub(t0), nil
			case <-time.After(10 * time.Second):
				return 0, fmt.Errorf("published message not delivered within 10s")
			}
		}, nil
	}
	return nil, fmt.Errorf("unknown floor %q", kind)
}
