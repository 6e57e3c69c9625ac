package main

import (
	"context"
	"fmt"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/jsbroker"
	"github.com/shippy/shippy/internal/outbox"
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
)

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

func (p outboxPublisher) Publish(ctx context.Context, m outbox.Message) error {
	if m.Topic != pb.TopicUserCreated {
		return fmt.Errorf("outbox event %s: unknown topic %q", m.EventID, m.Topic)
	}
	ev := &pb.UserCreated{}
	if err := proto.Unmarshal(m.Payload, ev); err != nil {
		return fmt.Errorf("outbox event %s: decode %s: %w", m.EventID, m.Topic, err)
	}
	// The outbox's id is the one consumers deduplicate by; the store wrote
	// the same into the payload.
	ev.EventId = m.EventID
	return p.events.Publish(ctx, ev)
}

// protoPublisher publishes through go-micro's client, as micro.NewEvent does,
// with the protobuf codec. The content type is set on the message because
// go-micro v6's client defaults to application/json. The event id goes into
// go-micro metadata, which the client sends as the headerEventID header.
type protoPublisher struct {
	client client.Client
}

func (p protoPublisher) Publish(ctx context.Context, ev *pb.UserCreated) error {
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
			headerUserID:      ev.UserId,
			headerEventID:     ev.EventId,
		},
		Body: body,
	}
	if err := p.broker.Publish(pb.TopicUserCreated, msg, broker.PublishContext(ctx)); err != nil {
		return fmt.Errorf("publish %s: %w", pb.TopicUserCreated, err)
	}
	return nil
}
