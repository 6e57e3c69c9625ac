package jsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go-micro.dev/v6/broker"
	merrors "go-micro.dev/v6/errors"

	"github.com/shippy/shippy/internal/natstest"
	"github.com/shippy/shippy/internal/poll"
)

// goMicroFlattened is what go-micro v6.3.10's router hands the broker when
// the subscribers of a topic returned errs (server/rpc_router.go).
func goMicroFlattened(errs ...error) error {
	var texts []string
	for _, e := range errs {
		texts = append(texts, e.Error())
	}
	return merrors.InternalServerError("go.micro.server", "subscriber error: %v", strings.Join(texts, "\n"))
}

func TestIsPermanent(t *testing.T) {
	cause := errors.New("550 5.1.1 no such user")
	tests := []struct {
		name       string
		err        error
		want       bool
		wantReason string
	}{
		{"nil", nil, false, ""},
		{"plain error", cause, false, "550 5.1.1 no such user"},
		{"permanent", Permanent(cause), true, "550 5.1.1 no such user"},
		{"permanent, wrapped", fmt.Errorf("send: %w", Permanent(cause)), true, "send: 550 5.1.1 no such user"},
		{"permanent twice is once", Permanent(Permanent(cause)), true, "550 5.1.1 no such user"},
		{"go-micro error with the id", merrors.New(PermanentErrorID, "bad address", 422), true, "bad address"},
		{"through go-micro", goMicroFlattened(fmt.Errorf("send: %w", Permanent(cause))), true,
			"subscriber error: send: 550 5.1.1 no such user"},
		{"through go-micro, not permanent", goMicroFlattened(errors.New("451 try later")), false,
			"subscriber error: 451 try later"},
		{"through go-micro, two handlers, one permanent", goMicroFlattened(Permanent(cause), errors.New("451 try later")), false,
			"subscriber error: 550 5.1.1 no such user\n451 try later"},
		{"through go-micro, two handlers, both permanent", goMicroFlattened(Permanent(cause), Permanent(errors.New("bad name"))), true,
			"subscriber error: 550 5.1.1 no such user\nbad name"},
		{"through go-micro, wrapped with text after it", goMicroFlattened(fmt.Errorf("send: %w (after 1 try)", Permanent(cause))), true,
			"subscriber error: send: 550 5.1.1 no such user (after 1 try)"},
		{"through go-micro, a multi-line error", goMicroFlattened(errors.Join(errors.New("context"), Permanent(cause))), false,
			"subscriber error: context\n550 5.1.1 no such user"},
		{"other go-micro error", merrors.InternalServerError("x", "boom"), false, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPermanent(tt.err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v; want %v", tt.err, got, tt.want)
			}
			if tt.err == nil {
				return
			}
			if got := readableReason(tt.err); got != tt.wantReason {
				t.Errorf("readableReason(%v) = %q; want %q", tt.err, got, tt.wantReason)
			}
		})
	}
	if !errors.Is(Permanent(cause), cause) {
		t.Errorf("errors.Is(Permanent(cause), cause) = false; want true (the cause stays reachable)")
	}
	if Permanent(nil) != nil {
		t.Errorf("Permanent(nil) = %v; want nil", Permanent(nil))
	}
}

// A handler's Permanent error dead-letters the message after its one
// delivery, with the reason; the message is terminated, not retried.
func TestPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	srv := natstest.Start(t)
	b := newBroker(t, srv.URL(), MaxDeliver(5))
	nc, js := jsClient(t, srv.URL())
	dead := watchDeadLetters(t, nc, b, "user.created")

	rec := &recorder{fail: func(body string, _ int) error {
		if body == "refused" {
			return fmt.Errorf("send: %w", Permanent(errors.New("550 5.1.1 no such user")))
		}
		return nil
	}}
	subscribe(t, b, "user.created", rec.handle, broker.Queue("email-service"))
	publish(t, b, "user.created", "refused", map[string]string{HeaderEventID: "ev-refused"})
	publish(t, b, "user.created", "fine", nil)

	msg, err := dead.NextMsg(waitLimit)
	if err != nil {
		t.Fatalf("no dead letter on %s: %v", b.DeadLetterSubject("user.created"), err)
	}
	for k, want := range map[string]string{
		HeaderDeadLetterReason:     "send: 550 5.1.1 no such user",
		HeaderDeadLetterDeliveries: "1",
		HeaderEventID:              "ev-refused",
	} {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("dead letter header %s = %q; want %q", k, got, want)
		}
	}
	poll.Until(t, "the consumer to settle", waitLimit, func() bool {
		return settled(t, js, ConsumerName("email-service", "user.created")) && len(rec.bodies()) == 1
	})
	if got := rec.triesOf("refused"); got != 1 {
		t.Errorf("handler called %d times for the refused message; want 1", got)
	}
	if st := b.Stats(); st.DeadLettered != 1 || st.Retried != 0 {
		t.Errorf("Stats() = %+v; want DeadLettered 1, Retried 0", st)
	}
	s, err := js.Stream(context.Background(), DefaultStream+"_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("dead-letter stream holds %d messages; want 1", info.State.Msgs)
	}
}
