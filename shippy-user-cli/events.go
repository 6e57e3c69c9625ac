package main

// The events commands, for operators: they read the broker's NATS directly
// (MICRO_BROKER, MICRO_BROKER_ADDRESS), not the user-service. On the stack's
// NATS they log in as the NATS user ops (NATS_USER=ops and its password),
// which may read the event streams and replay dead letters; the CLI's own
// user, cli, may only look services up.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go-micro.dev/v6/broker"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/microenv"
	pb "github.com/shippy/shippy/proto/user"
)

const (
	eventStream      = jsbroker.DefaultStream
	deadLetterStream = jsbroker.DefaultStream + "_DLQ"
	eventSubject     = jsbroker.DefaultSubjectPrefix + "." + pb.TopicUserCreated
)

// eventJSON is a user.created event as the events commands print it; the
// event has no password to print.
type eventJSON struct {
	// Seq is the event's sequence in SHIPPY_EVENTS (0 on core NATS).
	Seq       uint64 `json:"seq,omitempty"`
	EventID   string `json:"event_id"`
	UserID    string `json:"user_id"`
	Name      string `json:"name"`
	Email     string `json:"email"`
	Company   string `json:"company"`
	CreatedAt string `json:"created_at,omitempty"`
	// Error says why the body could not be read; the other fields are then
	// what the headers tell.
	Error string `json:"error,omitempty"`
}

// deadLetterJSON is one message of SHIPPY_EVENTS_DLQ.
type deadLetterJSON struct {
	// ID is the dead letter's sequence in SHIPPY_EVENTS_DLQ: --replay ID.
	ID         uint64    `json:"id"`
	Time       string    `json:"time"`
	Topic      string    `json:"topic"`
	Reason     string    `json:"reason"`
	Deliveries int       `json:"deliveries"`
	Consumer   string    `json:"consumer"`
	Event      eventJSON `json:"event"`
}

func runEvents(ctx context.Context, a *app, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErrorf("events needs a subcommand: tail or dead-letters (see %s --help)", prog)
	}
	switch args[0] {
	case "tail":
		return runEventsTail(ctx, a, args[1:])
	case "dead-letters":
		return runDeadLetters(ctx, a, args[1:])
	}
	return usageErrorf("unknown events subcommand %q: tail or dead-letters (see %s --help)", args[0], prog)
}

func runEventsTail(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("events tail", flag.ContinueOnError)
	fromStart := fs.Bool("from-start", false, "print the stored events first (JetStream), then the new ones")
	count := fs.Int("count", 0, "stop after this many events (0: until interrupted)")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	if *count < 0 {
		return usageErrorf("--count must be 0 or more, got %d", *count)
	}
	conn, err := a.eventsConn(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	if conn.broker == microenv.BrokerNATS {
		if *fromStart {
			return usageErrorf("--from-start needs MICRO_BROKER=jetstream: core NATS keeps no event")
		}
		return a.tailCore(ctx, conn, *count)
	}
	return a.tailJetStream(ctx, conn, *fromStart, *count)
}

// tailJetStream reads user.created from SHIPPY_EVENTS with an ephemeral
// ordered consumer of its own: the email-service's consumer is untouched.
func (a *app) tailJetStream(ctx context.Context, conn *eventsConn, fromStart bool, count int) error {
	policy := jetstream.DeliverNewPolicy
	if fromStart {
		policy = jetstream.DeliverAllPolicy
	}
	var cons jetstream.Consumer
	err := conn.setup(ctx, a.timeout, func(ctx context.Context) (err error) {
		cons, err = conn.js.OrderedConsumer(ctx, eventStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{eventSubject},
			DeliverPolicy:  policy,
		})
		return err
	})
	if err != nil {
		return conn.explain("read "+eventStream, err)
	}
	// Messages, not Fetch: an ordered consumer's Fetch deletes the consumer
	// it replaces, which the ops user may not do.
	it, err := cons.Messages()
	if err != nil {
		return conn.explain("read "+eventStream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	fmt.Fprintf(a.stderr, "%s: waiting for %s events on %s (Ctrl-C to stop)\n", prog, pb.TopicUserCreated, eventStream)
	for n := 0; count == 0 || n < count; n++ {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return conn.explain("read "+eventStream, err)
		}
		ev := decodeEvent(msg.Headers(), msg.Data())
		var stored time.Time
		if md, err := msg.Metadata(); err == nil {
			ev.Seq, stored = md.Sequence.Stream, md.Timestamp
		}
		if err := a.printEvent(ev, stored); err != nil {
			return err
		}
	}
	return nil
}

// tailCore reads user.created as go-micro's core NATS broker sends it: a
// JSON broker.Message on the subject user.created.
func (a *app) tailCore(ctx context.Context, conn *eventsConn, count int) error {
	sub, err := conn.nc.SubscribeSync(pb.TopicUserCreated)
	if err == nil {
		err = conn.nc.FlushTimeout(a.timeout)
	}
	if err == nil {
		err = conn.violation()
	}
	if err != nil {
		return conn.explain("subscribe to "+pb.TopicUserCreated, err)
	}
	defer sub.Unsubscribe()
	fmt.Fprintf(a.stderr, "%s: waiting for %s events on core NATS (Ctrl-C to stop)\n", prog, pb.TopicUserCreated)
	for n := 0; count == 0 || n < count; n++ {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return conn.explain("read "+pb.TopicUserCreated, err)
		}
		var m broker.Message
		ev := eventJSON{Error: "not a go-micro broker message"}
		if json.Unmarshal(msg.Data, &m) == nil {
			h := nats.Header{}
			for k, v := range m.Header {
				h.Set(k, v)
			}
			ev = decodeEvent(h, m.Body)
		}
		if err := a.printEvent(ev, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// printEvent prints one event: a JSON object on a line of its own with
// --json, else a line for people.
func (a *app) printEvent(ev eventJSON, at time.Time) error {
	if a.json {
		b, err := json.Marshal(struct {
			Time string `json:"time"`
			eventJSON
		}{at.UTC().Format(time.RFC3339Nano), ev})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(a.stdout, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("%s  %s  %s <%s>", at.UTC().Format(time.RFC3339), pb.TopicUserCreated, ev.Name, ev.Email)
	if ev.Company != "" {
		line += " (" + ev.Company + ")"
	}
	line += "  user " + ev.UserID + "  event " + ev.EventID
	if ev.Error != "" {
		line += "  [" + ev.Error + "]"
	}
	_, err := fmt.Fprintln(a.stdout, line)
	return err
}

func runDeadLetters(ctx context.Context, a *app, args []string) error {
	fs := flag.NewFlagSet("events dead-letters", flag.ContinueOnError)
	replay := fs.String("replay", "", "publish dead letter ID's event again and remove it from the dead letters")
	if err := a.parse(fs, args); err != nil {
		return err
	}
	var id uint64
	if *replay != "" {
		var err error
		if id, err = strconv.ParseUint(*replay, 10, 64); err != nil || id == 0 {
			return usageErrorf("--replay takes a dead letter's ID (a number, as events dead-letters lists them), got %q", *replay)
		}
	}
	conn, err := a.eventsConn(ctx)
	if err != nil {
		return err
	}
	defer conn.close()
	if conn.broker != microenv.BrokerJetStream {
		return usageErrorf("dead letters need MICRO_BROKER=jetstream: the %s broker keeps none", conn.broker)
	}
	if id != 0 {
		return a.replayDeadLetter(ctx, conn, id)
	}
	return a.listDeadLetters(ctx, conn)
}

func (a *app) listDeadLetters(ctx context.Context, conn *eventsConn) error {
	var dls []deadLetterJSON
	err := conn.setup(ctx, a.timeout, func(ctx context.Context) error {
		s, err := conn.js.Stream(ctx, deadLetterStream)
		if err != nil {
			return err
		}
		if s.CachedInfo().State.Msgs == 0 {
			return nil
		}
		cons, err := conn.js.OrderedConsumer(ctx, deadLetterStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{jsbroker.DefaultDeadLetterPrefix + ".>"},
			DeliverPolicy:  jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return err
		}
		it, err := cons.Messages()
		if err != nil {
			return err
		}
		defer context.AfterFunc(ctx, it.Stop)()
		defer it.Stop()
		for {
			msg, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err() // stopped at --timeout
				}
				return err
			}
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			dls = append(dls, deadLetter(md.Sequence.Stream, md.Timestamp, msg.Headers(), msg.Data()))
			if md.NumPending == 0 {
				return nil
			}
		}
	})
	if err != nil {
		return conn.explain("list "+deadLetterStream, err)
	}
	if a.json {
		if dls == nil {
			dls = []deadLetterJSON{}
		}
		return a.printJSON(dls)
	}
	if len(dls) == 0 {
		fmt.Fprintln(a.stdout, "No dead letters.")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTIME\tDELIVERIES\tUSER\tNAME\tEMAIL\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, d.Time, d.Deliveries, d.Event.UserID, d.Event.Name, d.Event.Email, d.Reason)
	}
	return tw.Flush()
}

// replayDeadLetter publishes dead letter id's event again on its topic's
// subject, with the headers it was first published with (its Event-Id
// among them, so the email-service still drops a copy it has sent), then
// removes it from SHIPPY_EVENTS_DLQ. If it fails again it is dead-lettered
// again, under a new ID.
func (a *app) replayDeadLetter(ctx context.Context, conn *eventsConn, id uint64) error {
	var dl deadLetterJSON
	var subject string
	err := conn.setup(ctx, a.timeout, func(ctx context.Context) error {
		s, err := conn.js.Stream(ctx, deadLetterStream)
		if err != nil {
			return err
		}
		raw, err := s.GetMsg(ctx, id)
		if err != nil {
			return err
		}
		dl = deadLetter(id, raw.Time, raw.Header, raw.Data)
		subject = jsbroker.DefaultSubjectPrefix + "." + dl.Topic
		msg := nats.NewMsg(subject)
		msg.Data = raw.Data
		for k, vs := range raw.Header {
			if strings.HasPrefix(k, "Dead-Letter-") || strings.HasPrefix(k, "Nats-") {
				continue
			}
			msg.Header[k] = vs
		}
		// A message id of its own: under the event's id the stream would
		// drop the replay as a copy of the first publish, for its
		// duplicate window (10 minutes). Replaying one dead letter twice
		// within that window stores it once.
		msgID := fmt.Sprintf("%s:replay:%d", raw.Header.Get(jsbroker.HeaderEventID), id)
		if _, err := conn.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID)); err != nil {
			return fmt.Errorf("publish to %s: %w", subject, err)
		}
		if err := s.DeleteMsg(ctx, id); err != nil {
			return fmt.Errorf("replayed, but not removed from %s (a second replay sends no second email): %w", deadLetterStream, err)
		}
		return nil
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return &exitError{code: exitRejected, msg: fmt.Sprintf("no dead letter %d in %s (see %s events dead-letters)", id, deadLetterStream, prog)}
	}
	if err != nil {
		return conn.explain(fmt.Sprintf("replay dead letter %d", id), err)
	}
	if a.json {
		return a.printJSON(struct {
			Replayed deadLetterJSON `json:"replayed"`
			Subject  string         `json:"subject"`
		}{dl, subject})
	}
	fmt.Fprintf(a.stdout, "Replayed dead letter %d: event %s for %s <%s>, published to %s and removed from %s.\n",
		id, dl.Event.EventID, dl.Event.Name, dl.Event.Email, subject, deadLetterStream)
	return nil
}

// deadLetter reads a dead letter's headers (jsbroker's Dead-Letter-*) and
// its event.
func deadLetter(seq uint64, at time.Time, h nats.Header, body []byte) deadLetterJSON {
	d := deadLetterJSON{
		ID:       seq,
		Time:     at.UTC().Format(time.RFC3339),
		Topic:    h.Get(jsbroker.HeaderDeadLetterTopic),
		Reason:   h.Get(jsbroker.HeaderDeadLetterReason),
		Consumer: h.Get(jsbroker.HeaderDeadLetterConsumer),
		Event:    decodeEvent(h, body),
	}
	d.Deliveries, _ = strconv.Atoi(h.Get(jsbroker.HeaderDeadLetterDeliveries))
	if d.Topic == "" {
		d.Topic = pb.TopicUserCreated
	}
	return d
}

// decodeEvent reads a user.created body in the codec its Content-Type
// names: protobuf (EVENTS_CODEC=proto, the default) or JSON.
func decodeEvent(h nats.Header, body []byte) eventJSON {
	var ev pb.UserCreated
	var err error
	if strings.Contains(h.Get("Content-Type"), "json") || (len(body) > 0 && body[0] == '{') {
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(body, &ev)
	} else {
		err = proto.Unmarshal(body, &ev)
	}
	out := eventJSON{EventID: ev.GetEventId(), UserID: ev.GetId(), Name: ev.GetName(), Email: ev.GetEmail(), Company: ev.GetCompany()}
	if err != nil {
		out = eventJSON{Error: fmt.Sprintf("body of %d bytes is not a user.created event: %v", len(body), err)}
	}
	if out.EventID == "" {
		out.EventID = h.Get(jsbroker.HeaderEventID)
	}
	if ms := ev.GetCreatedAtUnixMs(); ms > 0 {
		out.CreatedAt = time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
	}
	return out
}

// eventsConn is the events commands' connection to the broker's NATS.
type eventsConn struct {
	broker string
	nc     *nats.Conn
	js     jetstream.JetStream
	user   string

	mu       sync.Mutex
	violated error // the last permissions violation NATS reported
}

// eventsConn connects to MICRO_BROKER_ADDRESS with the program's NATS
// credentials (NATS_USER, NATS_PASSWORD or NATS_PASSWORD_FILE).
func (a *app) eventsConn(ctx context.Context) (*eventsConn, error) {
	env, err := microenv.LoadEnv(a.getenv)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	if env.Broker != microenv.BrokerJetStream && env.Broker != microenv.BrokerNATS {
		return nil, usageErrorf("events read the broker's NATS: set MICRO_BROKER=jetstream (or nats) and MICRO_BROKER_ADDRESS, as the services have them")
	}
	c := &eventsConn{broker: env.Broker, user: env.NATSUser}
	opts := append(env.NATSOptions(),
		nats.Name(prog+" events"),
		nats.Timeout(a.timeout),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				c.mu.Lock()
				c.violated = err
				c.mu.Unlock()
			}
		}),
	)
	url := strings.Join(env.BrokerAddrs, ",")
	if c.nc, err = nats.Connect(url, opts...); err != nil {
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(strings.ToLower(err.Error()), "authorization") {
			return nil, &exitError{code: exitRejected, msg: fmt.Sprintf("NATS at %s refused the login: %v (events need the ops user: NATS_USER=ops and its password)", microenv.Redacted(env.BrokerAddrs...), err)}
		}
		return nil, &exitError{code: exitUnavailable, msg: fmt.Sprintf("cannot reach NATS at %s: %v", microenv.Redacted(env.BrokerAddrs...), err)}
	}
	if c.js, err = jetstream.New(c.nc); err != nil {
		c.nc.Close()
		return nil, &exitError{code: exitUnavailable, msg: fmt.Sprintf("jetstream: %v", err)}
	}
	return c, nil
}

func (c *eventsConn) close() { c.nc.Close() }

func (c *eventsConn) violation() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.violated
}

// setup runs fn bounded by timeout. A JetStream request NATS refuses for
// permissions gets no answer, only an asynchronous error: fn then fails
// with that error as soon as NATS reports it, instead of at the timeout.
func (c *eventsConn) setup(ctx context.Context, timeout time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if v := c.violation(); err != nil && v != nil {
				return v
			}
			return err
		case <-tick.C:
			if v := c.violation(); v != nil {
				cancel()
				<-done
				return v
			}
		}
	}
}

// explain turns an error of what into the CLI's exit codes: 1 for a
// refusal (permissions), 3 for what is missing or unreachable.
func (c *eventsConn) explain(what string, err error) error {
	user := c.user
	if user == "" {
		user = "(none)"
	}
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		return &exitError{code: exitRejected, msg: fmt.Sprintf("%s: NATS user %s may not: %v (events need the ops user: NATS_USER=ops and its password)", what, user, err)}
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return &exitError{code: exitUnavailable, msg: fmt.Sprintf("%s: no such stream: has the user-service run with MICRO_BROKER=jetstream on this NATS?", what)}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return &exitError{code: exitUnavailable, msg: fmt.Sprintf("%s: no answer within --timeout: %v", what, err)}
	}
	return &exitError{code: exitUnavailable, msg: fmt.Sprintf("%s: %v", what, err)}
}
