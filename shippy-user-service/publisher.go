package main

import (
	"context"
	"fmt"

	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"google.golang.org/protobuf/encoding/protojson"

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
	// headerEventID lets a subscriber drop redeliveries without decoding.
	headerEventID = "Micro-Event-Id"
)

// protoPublisher publishes through go-micro's client, as micro.NewEvent does,
// with the protobuf codec. The content type is set on the message because
// go-micro v6's client defaults to application/json.
type protoPublisher struct {
	client client.Client
}

func (p protoPublisher) Publish(ctx context.Context, ev *pb.UserCreated) error {
	msg := p.client.NewMessage(pb.TopicUserCreated, ev, client.WithMessageContentType("application/protobuf"))
	if err := p.client.Publish(ctx, msg); err != nil {
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
