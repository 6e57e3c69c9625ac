package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shippy/shippy/internal/natstest"
)

const testLease = 30 * time.Second

// clock is a settable time source for leases.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// replicaLogs returns, on each call, the sent log one replica would use:
// all of them share what they record.
type replicaLogs func() sentLog

// sentLogImpls are the sentLog implementations every contract test runs on.
func sentLogImpls() map[string]func(t *testing.T, c *clock) replicaLogs {
	return map[string]func(t *testing.T, c *clock) replicaLogs{
		"memory": func(t *testing.T, c *clock) replicaLogs {
			m := newMemorySentLog(100, testLease)
			m.now = c.now
			return func() sentLog { return m }
		},
		"jetstream kv": func(t *testing.T, c *clock) replicaLogs {
			url := natstest.Start(t).URL()
			return func() sentLog {
				s := openKVSentLog(t, url, defaultSentBucket)
				s.now = c.now
				return s
			}
		},
	}
}

func dedup(m Mailer, s sentLog) *dedupMailer {
	return newDedupMailer(m, s, testLease, discardLog)
}

func welcome(id string) WelcomeEmail {
	return WelcomeEmail{EventID: id, UserID: "user-" + id, Name: "Name " + id, Email: id + "@example.com"}
}

func TestDedupMailer(t *testing.T) {
	for name, impl := range sentLogImpls() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("redelivery through either replica sends once", func(t *testing.T) {
				tl := newTally()
				logs := impl(t, &clock{})
				r1, r2 := dedup(tl.mailer("r1"), logs()), dedup(tl.mailer("r2"), logs())
				for i, r := range []*dedupMailer{r1, r2, r1, r2} {
					if err := r.Send(context.Background(), welcome("ev-1")); err != nil {
						t.Fatalf("delivery %d: Send(ev-1) = %v; want nil", i+1, err)
					}
				}
				if n := len(tl.sends("ev-1")); n != 1 {
					t.Errorf("4 deliveries of ev-1 sent %d emails; want 1", n)
				}
			})

			t.Run("different ids both send", func(t *testing.T) {
				tl := newTally()
				logs := impl(t, &clock{})
				d := dedup(tl.mailer("r1"), logs())
				for _, id := range []string{"ev-a", "ev-b"} {
					if err := d.Send(context.Background(), welcome(id)); err != nil {
						t.Fatalf("Send(%s) = %v; want nil", id, err)
					}
				}
				for _, id := range []string{"ev-a", "ev-b"} {
					if n := len(tl.sends(id)); n != 1 {
						t.Errorf("sends for %s = %d; want 1", id, n)
					}
				}
			})

			t.Run("failed send records nothing and the retry sends", func(t *testing.T) {
				tl := newTally()
				logs := impl(t, &clock{})
				smtpDown := errors.New("smtp: 421 service not available")
				failing := mailerFunc(func(context.Context, WelcomeEmail) error { return smtpDown })
				if err := dedup(failing, logs()).Send(context.Background(), welcome("ev-1")); !errors.Is(err, smtpDown) {
					t.Fatalf("Send(ev-1) with a failing mailer = %v; want %v", err, smtpDown)
				}
				// The retry may come to another replica, at once.
				if err := dedup(tl.mailer("r2"), logs()).Send(context.Background(), welcome("ev-1")); err != nil {
					t.Fatalf("retry Send(ev-1) = %v; want nil", err)
				}
				if n := len(tl.sends("ev-1")); n != 1 {
					t.Errorf("sends for ev-1 after a failure and a retry = %d; want 1", n)
				}
			})

			t.Run("permanent failure releases the claim, so a replay sends", func(t *testing.T) {
				tl := newTally()
				logs := impl(t, &clock{})
				refused := fmt.Errorf("%w: smtp: 550 5.1.1 no such user", errPermanent)
				failing := mailerFunc(func(context.Context, WelcomeEmail) error { return refused })
				if err := dedup(failing, logs()).Send(context.Background(), welcome("ev-1")); !errors.Is(err, errPermanent) {
					t.Fatalf("Send(ev-1) with a permanently failing mailer = %v; want %v", err, errPermanent)
				}
				// The dead letter replayed by an operator, once the address is fixed.
				if err := dedup(tl.mailer("r2"), logs()).Send(context.Background(), welcome("ev-1")); err != nil {
					t.Fatalf("replayed Send(ev-1) = %v; want nil", err)
				}
				if n := len(tl.sends("ev-1")); n != 1 {
					t.Errorf("sends for ev-1 after a permanent failure and a replay = %d; want 1", n)
				}
			})

			t.Run("concurrent delivery waits for the one sending", func(t *testing.T) {
				tl := newTally()
				logs := impl(t, &clock{})
				started, release := make(chan struct{}), make(chan struct{})
				slow := mailerFunc(func(ctx context.Context, e WelcomeEmail) error {
					close(started)
					<-release
					return tl.mailer("r1").Send(ctx, e)
				})
				done := make(chan error, 1)
				go func() { done <- dedup(slow, logs()).Send(context.Background(), welcome("ev-1")) }()
				<-started

				r2 := dedup(tl.mailer("r2"), logs())
				if err := r2.Send(context.Background(), welcome("ev-1")); !errors.Is(err, errSendInProgress) {
					t.Errorf("Send(ev-1) while another delivery sends = %v; want %v", err, errSendInProgress)
				}
				close(release)
				if err := <-done; err != nil {
					t.Fatalf("first Send(ev-1) = %v; want nil", err)
				}
				// The broker redelivers the refused copy.
				if err := r2.Send(context.Background(), welcome("ev-1")); err != nil {
					t.Errorf("redelivered Send(ev-1) = %v; want nil", err)
				}
				if n := len(tl.sends("ev-1")); n != 1 {
					t.Errorf("sends for ev-1 = %d; want 1", n)
				}
			})

			t.Run("the lease of a delivery that died is taken over once", func(t *testing.T) {
				tl := newTally()
				c := &clock{}
				logs := impl(t, c)
				// A replica claims and dies before sending.
				if _, ok, err := logs().Claim(context.Background(), "ev-1"); !ok || err != nil {
					t.Fatalf("Claim(ev-1) = %v, %v; want true, nil", ok, err)
				}
				r2, r3 := dedup(tl.mailer("r2"), logs()), dedup(tl.mailer("r3"), logs())
				if err := r2.Send(context.Background(), welcome("ev-1")); !errors.Is(err, errSendInProgress) {
					t.Errorf("Send(ev-1) within the lease = %v; want %v", err, errSendInProgress)
				}
				c.advance(testLease + time.Second)
				for _, r := range []*dedupMailer{r2, r3} {
					if err := r.Send(context.Background(), welcome("ev-1")); err != nil {
						t.Errorf("Send(ev-1) after the lease = %v; want nil", err)
					}
				}
				if n := len(tl.sends("ev-1")); n != 1 {
					t.Errorf("sends for ev-1 = %d; want 1", n)
				}
			})

			t.Run("a late Release leaves the lease that took over", func(t *testing.T) {
				ctx := context.Background()
				c := &clock{}
				logs := impl(t, c)
				r1, r2, r3 := logs(), logs(), logs()
				late, ok, err := r1.Claim(ctx, "ev-1")
				if !ok || err != nil {
					t.Fatalf("Claim(ev-1) = %v, %v; want true, nil", ok, err)
				}
				c.advance(testLease + time.Second)
				current, ok, err := r2.Claim(ctx, "ev-1")
				if !ok || err != nil {
					t.Fatalf("Claim(ev-1) after the lease = %v, %v; want true, nil", ok, err)
				}
				// Back to the time of r2's claim: its lease is live.
				c.advance(-(testLease + time.Second))
				// r1's send failed after its lease had run out.
				if err := r1.Release(ctx, late); err != nil {
					t.Fatalf("late Release(ev-1) = %v; want nil", err)
				}
				if _, ok, err := r3.Claim(ctx, "ev-1"); ok || !errors.Is(err, errSendInProgress) {
					t.Errorf("Claim(ev-1) after a late Release = %v, %v; want false, %v", ok, err, errSendInProgress)
				}
				if err := r2.Sent(ctx, current); err != nil {
					t.Fatalf("Sent(ev-1) by the lease's holder = %v; want nil", err)
				}
				if _, ok, err := r3.Claim(ctx, "ev-1"); ok || err != nil {
					t.Errorf("Claim(ev-1) after Sent = %v, %v; want false, nil", ok, err)
				}
			})

			t.Run("a late Sent records the event and reports the lost lease", func(t *testing.T) {
				ctx := context.Background()
				c := &clock{}
				logs := impl(t, c)
				r1, r2, r3 := logs(), logs(), logs()
				late, ok, err := r1.Claim(ctx, "ev-1")
				if !ok || err != nil {
					t.Fatalf("Claim(ev-1) = %v, %v; want true, nil", ok, err)
				}
				c.advance(testLease + time.Second)
				current, ok, err := r2.Claim(ctx, "ev-1")
				if !ok || err != nil {
					t.Fatalf("Claim(ev-1) after the lease = %v, %v; want true, nil", ok, err)
				}
				// r1's send succeeded after its lease had run out.
				if err := r1.Sent(ctx, late); !errors.Is(err, errClaimLost) {
					t.Errorf("late Sent(ev-1) = %v; want %v", err, errClaimLost)
				}
				if _, ok, err := r3.Claim(ctx, "ev-1"); ok || err != nil {
					t.Errorf("Claim(ev-1) after a late Sent = %v, %v; want false, nil", ok, err)
				}
				// The delivery that took over fails its send: the event stays sent.
				if err := r2.Release(ctx, current); err != nil {
					t.Fatalf("Release(ev-1) by the lease's holder = %v; want nil", err)
				}
				if _, ok, err := r3.Claim(ctx, "ev-1"); ok || err != nil {
					t.Errorf("Claim(ev-1) after the other delivery's Release = %v, %v; want false, nil", ok, err)
				}
			})
		})
	}
}

// failingLog is a sentLog whose methods fail as configured.
type failingLog struct {
	sentLog
	claimErr, sentErr error
}

func (f failingLog) Claim(ctx context.Context, id string) (claim, bool, error) {
	if f.claimErr != nil {
		return claim{}, false, f.claimErr
	}
	return f.sentLog.Claim(ctx, id)
}

func (f failingLog) Sent(ctx context.Context, c claim) error {
	if f.sentErr != nil {
		return f.sentErr
	}
	return f.sentLog.Sent(ctx, c)
}

func TestDedupMailerLogFailures(t *testing.T) {
	unreachable := errors.New("nats: no servers available")
	tests := []struct {
		name      string
		log       failingLog
		wantErr   error
		wantSends int
	}{
		// Returned to the broker, which redelivers: nothing is lost.
		{"claim fails: nothing sent", failingLog{claimErr: unreachable}, unreachable, 0},
		// The email is out; an error would have it sent again.
		{"record fails after the send: success", failingLog{sentErr: unreachable}, nil, 1},
		{"lease lost during the send: success", failingLog{sentErr: errClaimLost}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally()
			tt.log.sentLog = newMemorySentLog(10, testLease)
			err := dedup(tl.mailer("r1"), tt.log).Send(context.Background(), welcome("ev-1"))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Send(ev-1) = %v; want %v", err, tt.wantErr)
			}
			if n := len(tl.sends("ev-1")); n != tt.wantSends {
				t.Errorf("sends for ev-1 = %d; want %d", n, tt.wantSends)
			}
		})
	}
}

func TestMemorySentLogKeepsTheLastMax(t *testing.T) {
	ctx := context.Background()
	m := newMemorySentLog(3, testLease)
	for i := range 5 {
		id := fmt.Sprintf("ev-%d", i)
		c, ok, err := m.Claim(ctx, id)
		if !ok || err != nil {
			t.Fatalf("Claim(%s) = %v, %v; want true, nil", id, ok, err)
		}
		if err := m.Sent(ctx, c); err != nil {
			t.Fatalf("Sent(%s) = %v; want nil", id, err)
		}
	}
	for i, wantClaim := range []bool{true, true, false, false, false} {
		id := fmt.Sprintf("ev-%d", i)
		if _, ok, err := m.Claim(ctx, id); ok != wantClaim || err != nil {
			t.Errorf("Claim(%s) after 5 sends with max 3 = %v, %v; want %v, nil", id, ok, err, wantClaim)
		}
	}
	if len(m.sent) != 3 || len(m.ring) != 3 {
		t.Errorf("memory log holds %d ids (ring %d); want 3", len(m.sent), len(m.ring))
	}
}
