package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/registry"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/natsregistry"
	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/pgtest"
	pb "github.com/shippy/shippy/proto/user"
)

// cpuSeconds is the user+system CPU pid has used, from /proc/<pid>/stat.
func cpuSeconds(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// postgresCPU is the CPU of every postgres process on the machine: the
// server and all backends, other users' included, by pid.
func postgresCPU() map[int]float64 {
	out := map[int]float64{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		out[pid] = cpuSeconds(pid)
	}
	return out
}

// postgresSince is the postgres CPU used since before: by the processes
// alive at both samples, and all of a backend started meanwhile.
func postgresSince(before map[int]float64) float64 {
	var total float64
	for pid, now := range postgresCPU() {
		total += now - before[pid]
	}
	return total
}

func procSelfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// cpuShare is CPU seconds as a share of one core over d.
func cpuShare(sec float64, d time.Duration) string {
	return fmt.Sprintf("%.0f%%", 100*sec/d.Seconds())
}

// waitNodeCount polls the NATS registry until service has n nodes.
func waitNodeCount(b *testing.B, natsURL, service string, n int) {
	b.Helper()
	reg := natsregistry.New([]registry.Option{registry.Addrs(natsURL)}, natsregistry.AskGoMicro(true))
	deadline := time.Now().Add(60 * time.Second)
	for {
		svcs, _ := reg.GetService(service)
		got := 0
		for _, s := range svcs {
			got += len(s.Nodes)
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s has %d nodes after 60s; want %d", service, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scalePoint is one measured configuration.
type scalePoint struct {
	label string
	rate  float64
	cpu   string
}

// BenchmarkScaling (issue 14.4): processes on this machine, as deployed
// (docker-compose.yml's environment: JetStream broker, NATS registry, the
// sent log in a JetStream KV bucket, PostgreSQL):
//   - events/s through 1 email-service replica handling one event at a time
//     (EMAIL_CONCURRENCY=1, as before it was configurable), and 1, 2, 3
//     replicas at the default 8: 3,000 user.created
//     events published into the stream at once (as the user-service's relay
//     does, asynchronously), timed until every replica's mailer line arrived;
//   - creates/s through 1 and 2 user-service replicas (BCRYPT_COST=4, so the
//     path and not the hash is measured: at cost 10 a core does about 16
//     hashes/s whatever the replicas), 16 callers, 1,000 creates, each also
//     published and emailed by one email-service.
//
// It prints the CPU each process used over the measurement (100% = one
// core), and writes bench/scaling.png.
func BenchmarkScaling(b *testing.B) {
	ctx := context.Background()
	var events, creates []scalePoint
	for _, sc := range []struct{ replicas, concurrency int }{{1, 1}, {1, 8}, {2, 8}, {3, 8}} {
		replicas := sc.replicas
		ns := natstest.Start(b)
		procs := make([]*process, replicas)
		for i := range procs {
			env := localEnv(b, "email-service", ns.URL(), "")
			env["EMAIL_CONCURRENCY"] = strconv.Itoa(sc.concurrency)
			procs[i] = startProcess(b, "shippy-email-service", env)
		}
		waitNodeCount(b, ns.URL(), "go.micro.srv.email", replicas)
		br := jsbroker.New(broker.Addrs(ns.URL()))
		if err := br.Connect(); err != nil {
			b.Fatal(err)
		}
		n := 3000 * b.N
		msgs := make([]jsbroker.Outgoing, n)
		for i := range msgs {
			ev := sampleEvent(i)
			ev.Name = fmt.Sprintf("Scale User %d", i)
			body, _ := proto.Marshal(ev)
			msgs[i] = jsbroker.Outgoing{Topic: pb.TopicUserCreated, Message: &broker.Message{
				Header: map[string]string{"Content-Type": "application/protobuf", "Micro-Topic": pb.TopicUserCreated, jsbroker.HeaderEventID: ev.EventId},
				Body:   body,
			}}
		}
		cpu0 := make([]float64, replicas)
		for i, p := range procs {
			cpu0[i] = cpuSeconds(p.cmd.Process.Pid)
		}
		self0, pg0 := procSelfCPU(), postgresCPU()
		t0 := time.Now()
		for start := 0; start < n; start += 500 {
			for _, err := range br.PublishBatch(ctx, msgs[start:min(start+500, n)]) {
				if err != nil {
					b.Fatalf("publish: %v", err)
				}
			}
		}
		per := make([]int, replicas)
		got := 0
		deadline := time.After(120 * time.Second)
		for got < n {
			for i, p := range procs {
			drain:
				for {
					select {
					case l := <-p.lines:
						if strings.HasPrefix(l.text, "Sending email to: Scale User ") {
							per[i]++
							got++
						}
					default:
						break drain
					}
				}
			}
			select {
			case <-deadline:
				b.Fatalf("%d of %d emails within 120s (per replica %v)", got, n, per)
			case <-time.After(100 * time.Microsecond):
			}
		}
		d := time.Since(t0)
		cpus := make([]string, replicas)
		for i, p := range procs {
			cpus[i] = cpuShare(cpuSeconds(p.cmd.Process.Pid)-cpu0[i], d)
		}
		rate := float64(n) / d.Seconds()
		cpu := fmt.Sprintf("email-services %v, bench+nats-server %s, postgres (all) %s", cpus, cpuShare(procSelfCPU()-self0, d), cpuShare(postgresSince(pg0), d))
		fmt.Printf("scaling: events, %d email-service replicas, EMAIL_CONCURRENCY=%d: %.0f events/s (emails per replica %v); CPU: %s\n",
			replicas, sc.concurrency, rate, per, cpu)
		b.ReportMetric(rate, fmt.Sprintf("events/s-%d-email-c%d", replicas, sc.concurrency))
		events = append(events, scalePoint{fmt.Sprintf("%dx c%d", replicas, sc.concurrency), rate, cpu})
		br.Disconnect()
	}
	for _, replicas := range []int{1, 2} {
		ns := natstest.Start(b)
		db := pgtest.NewDatabase(b)
		users := make([]*process, replicas)
		for i := range users {
			env := localEnv(b, "user-service", ns.URL(), db)
			env["BCRYPT_COST"] = "4"
			users[i] = startProcess(b, "shippy-user-service", env)
			// One at a time: replicas migrating a fresh database at once
			// race in CREATE TABLE.
			waitNodeCount(b, ns.URL(), "go.micro.srv.user", i+1)
		}
		email := startProcess(b, "shippy-email-service", localEnv(b, "email-service", ns.URL(), db))
		waitNodeCount(b, ns.URL(), "go.micro.srv.user", replicas)
		waitNodeCount(b, ns.URL(), "go.micro.srv.email", 1)
		client := userClient(b, ns.URL())
		all := append(append([]*process(nil), users...), email)
		cpu0 := make([]float64, len(all))
		for i, p := range all {
			cpu0[i] = cpuSeconds(p.cmd.Process.Pid)
		}
		self0, pg0 := procSelfCPU(), postgresCPU()
		n := 1000 * b.N
		r := run(n, 16, func(i int) error {
			_, err := client.Create(ctx, &pb.User{Name: fmt.Sprintf("Scale Creator %d", i), Email: fmt.Sprintf("scale%d@example.com", i), Password: benchPassword})
			return err
		})
		checkErrs(b, "Create", r)
		cpus := make([]string, len(all))
		for i, p := range all {
			cpus[i] = cpuShare(cpuSeconds(p.cmd.Process.Pid)-cpu0[i], r.dur)
		}
		cpu := fmt.Sprintf("user-services %v, email-service %s, bench client+nats-server %s, postgres (all) %s",
			cpus[:replicas], cpus[replicas], cpuShare(procSelfCPU()-self0, r.dur), cpuShare(postgresSince(pg0), r.dur))
		fmt.Printf("scaling: creates, %d user-service replicas: %.0f creates/s at 16 callers (p50 %.1f ms, p99 %.1f ms); CPU: %s\n",
			replicas, r.perSec(), ms(r.pct(50)), ms(r.pct(99)), cpu)
		b.ReportMetric(r.perSec(), fmt.Sprintf("creates/s-%d-user", replicas))
		creates = append(creates, scalePoint{fmt.Sprintf("%d user", replicas), r.perSec(), cpu})
	}
	if err := writeBarChart("scaling.png", []barGroup{
		{"EVENTS/S: EMAIL-SERVICE REPLICAS X CONCURRENCY", events},
		{"CREATES/S BY USER-SERVICE REPLICAS (COST 4)", creates},
	}); err != nil {
		b.Errorf("write scaling.png: %v", err)
	}
}
