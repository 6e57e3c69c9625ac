package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"go-micro.dev/v6/transport/headers"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/outbox"
	"github.com/shippy/shippy/internal/requestid"
	pb "github.com/shippy/shippy/proto/user"
)

// Header names of a JSON event (EVENTS_CODEC=json).
const (
	// headerContentType picks the codec on the subscriber's side.
	headerContentType = "Content-Type"
	// headerTopic is go-micro's own topic header (transport/headers.Message);
	// go-micro's subscriber reports it as the message's topic.
	headerTopic = "Micro-Topic"
	// headerUserID carries the user id, as the tutorial's raw broker
	// message did with its "id" header.
	headerUserID = "id"
	// headerEventID carries the event id in both codecs: the JetStream
	// broker stores a re-published event once by it, and a subscriber can
	// drop redeliveries without decoding.
	headerEventID = jsbroker.HeaderEventID
	// headerRequestID carries the id of the request that created the user,
	// in both codecs, when it had one (internal/requestid).
	headerRequestID = requestid.Header
)

// relayMaxInFlight is how many user.created events the outbox relay
// publishes at once (outbox.WithMaxInFlight): a whole claimed batch, which
// then waits about one JetStream ack instead of one per event (PublishBatch).
// Welcome emails need no order between users, which is what this gives up.
const relayMaxInFlight = outbox.DefaultBatchSize

// eventPublisher publishes one user.created event to the broker.
type eventPublisher interface {
	Publish(ctx context.Context, ev *pb.UserCreated) error
}

// outboxPublisher hands the outbox relay's rows to an eventPublisher: the
// row's payload is the event as the store marshalled it with protobuf.
type outboxPublisher struct {
	events eventPublisher
}

var _ outbox.Publisher = outboxPublisher{}

var _ outbox.BatchPublisher = outboxPublisher{}

// PublishBatch publishes ms together: on the JetStream broker with one
// asynchronous publish each and one wait for all the acks (the messages as
// go-micro's client would send them, see protoMessage); on other brokers,
// or with EVENTS_CODEC=json, with Publish from a goroutine per event.
func (p outboxPublisher) PublishBatch(ctx context.Context, ms []outbox.Message) []error {
	errs := make([]error, len(ms))
	if js := p.jetStream(); js != nil {
		out := make([]jsbroker.Outgoing, 0, len(ms))
		idx := make([]int, 0, len(ms))
		for i, m := range ms {
			msg, err := protoMessage(m)
			if err != nil {
				errs[i] = err
				continue
			}
			out = append(out, jsbroker.Outgoing{Topic: m.Topic, Message: msg})
			idx = append(idx, i)
		}
		for j, err := range js.PublishBatch(ctx, out) {
			errs[idx[j]] = err
		}
		return errs
	}
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Publish(ctx, m)
		}()
	}
	wg.Wait()
	return errs
}

// jetStream is the JetStream broker under the protobuf publisher's client,
// or nil.
func (p outboxPublisher) jetStream() *jsbroker.Broker {
	pp, ok := p.events.(protoPublisher)
	if !ok {
		return nil
	}
	b := pp.client.Options().Broker
	if held, ok := b.(*heldBroker); ok {
		b = held.Broker
	}
	js, _ := b.(*jsbroker.Broker)
	return js
}

// protoMessage is the broker message protoPublisher's go-micro client makes
// of m: the event in protobuf, go-micro's content type, topic and message id
// headers, the event id and the request id.
func protoMessage(m outbox.Message) (*broker.Message, error) {
	if m.Topic != pb.TopicUserCreated {
		return nil, fmt.Errorf("outbox event %s: unknown topic %q", m.EventID, m.Topic)
	}
	ev, err := decodeOutboxEvent(m)
	if err != nil {
		return nil, fmt.Errorf("outbox event %s: decode %s: %w", m.EventID, m.Topic, err)
	}
	ev.EventId = m.EventID
	body, err := proto.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("outbox event %s: encode %s: %w", m.EventID, m.Topic, err)
	}
	h := map[string]string{
		headerContentType: "application/protobuf",
		headerTopic:       m.Topic,
		headers.ID:        uuid.NewString(),
		headerEventID:     m.EventID,
	}
	if m.RequestID != "" {
		h[headerRequestID] = m.RequestID
	}
	return &broker.Message{Header: h, Body: body}, nil
}

func (p outboxPublisher) Publish(ctx context.Context, m outbox.Message) error {
	if m.Topic != pb.TopicUserCreated {
		return fmt.Errorf("outbox event %s: unknown topic %q", m.EventID, m.Topic)
	}
	ev, err := decodeOutboxEvent(m)
	if err != nil {
		return fmt.Errorf("outbox event %s: decode %s: %w", m.EventID, m.Topic, err)
	}
	// The outbox's id is the one consumers deduplicate by; the store wrote
	// the same into the payload.
	ev.EventId = m.EventID
	if m.RequestID != "" {
		// The id of the Create that made the event: sent as a header.
		ctx = requestid.NewContext(ctx, m.RequestID)
	}
	return p.events.Publish(ctx, ev)
}

// decodeOutboxEvent reads a row's payload in the current layout or the one
// before (event_id=1, user_id=2, name=3, company=4, email=5,
// created_at_unix_ms=6): rows an old service left pending would otherwise
// mail the company as the address. The store always writes event_id, so a
// payload without it is old, and then its field 1 must be the row's id.
func decodeOutboxEvent(m outbox.Message) (*pb.UserCreated, error) {
	ev := &pb.UserCreated{}
	if err := proto.Unmarshal(m.Payload, ev); err != nil {
		return nil, err
	}
	if ev.GetEventId() != "" {
		return ev, nil
	}
	old, err := decodeOldUserCreated(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("old layout: %w", err)
	}
	if old.GetEventId() != m.EventID {
		return nil, fmt.Errorf("no event_id, and field 1 is %q, not the row's event id", old.GetEventId())
	}
	return old, nil
}

// decodeOldUserCreated decodes the layout UserCreated had before fields 1 to
// 4 were aligned with the tutorial's User.
func decodeOldUserCreated(b []byte) (*pb.UserCreated, error) {
	ev := &pb.UserCreated{}
	strs := []*string{1: &ev.EventId, 2: &ev.Id, 3: &ev.Name, 4: &ev.Company, 5: &ev.Email}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num >= 1 && num <= 5 && typ == protowire.BytesType:
			var v string
			v, n = protowire.ConsumeString(b)
			*strs[num] = v
		case num == 6 && typ == protowire.VarintType:
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			ev.CreatedAtUnixMs = int64(v)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return ev, nil
}

// protoPublisher publishes through go-micro's client, as micro.NewEvent does,
// with the protobuf codec. The content type is set on the message because
// go-micro v6's client defaults to application/json. The event id and the
// request id (ctx's, if any) go into go-micro metadata, which the client
// sends as the headerEventID and headerRequestID headers.
type protoPublisher struct {
	client client.Client
}

func (p protoPublisher) Publish(ctx context.Context, ev *pb.UserCreated) error {
	if id := requestid.FromContext(ctx); id != "" {
		ctx = requestid.Outgoing(ctx, id)
	}
	ctx = jsbroker.WithEventID(ctx, ev.EventId)
	msg := p.client.NewMessage(pb.TopicUserCreated, ev, client.WithMessageContentType("application/protobuf"))
	// go-micro's client hands the broker PublishContext's context, not ctx:
	// without it the relay could neither bound nor cancel a publish.
	if err := p.client.Publish(ctx, msg, client.PublishContext(ctx)); err != nil {
		return fmt.Errorf("publish %s: %w", pb.TopicUserCreated, err)
	}
	return nil
}

// jsonPublisher publishes the tutorial's raw broker message: the event as
// JSON in the body, the user id in a header. go-micro's subscriber decodes it
// into *pb.UserCreated because of the application/json content type.
type jsonPublisher struct {
	broker broker.Broker
}

var eventJSON = protojson.MarshalOptions{UseProtoNames: true}

func (p jsonPublisher) Publish(ctx context.Context, ev *pb.UserCreated) error {
	body, err := eventJSON.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode %s as JSON: %w", pb.TopicUserCreated, err)
	}
	msg := &broker.Message{
		Header: map[string]string{
			headerContentType: "application/json",
			headerTopic:       pb.TopicUserCreated,
			headerUserID:      ev.Id,
			headerEventID:     ev.EventId,
		},
		Body: body,
	}
	if id := requestid.FromContext(ctx); id != "" {
		msg.Header[headerRequestID] = id
	}
	if err := p.broker.Publish(pb.TopicUserCreated, msg, broker.PublishContext(ctx)); err != nil {
		return fmt.Errorf("publish %s: %w", pb.TopicUserCreated, err)
	}
	return nil
}
