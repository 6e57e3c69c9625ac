package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	pb "github.com/shippy/shippy/proto/user"
	"go-micro.dev/v6"
	"go-micro.dev/v6/broker"
	"go-micro.dev/v6/client"
	"go-micro.dev/v6/codec/json"
	"go-micro.dev/v6/registry"
	"go-micro.dev/v6/server"
	"google.golang.org/protobuf/encoding/protojson"
)

// startOnMemoryBroker runs a real go-micro server with the email subscriber on
// a memory broker. The memory broker delivers synchronously and returns the
// subscriber's error to the publisher, so each publish can be checked alone.
// Messages are JSON-marshalled on the way, as the NATS broker does on the wire.
func startOnMemoryBroker(t *testing.T, m Mailer) broker.Broker {
	t.Helper()
	return startSubscriber(t, broker.NewMemoryBroker(broker.Codec(json.Marshaler{})), m)
}

// startSubscriber runs a real go-micro server with the email subscriber on b.
func startSubscriber(t testing.TB, b broker.Broker, m Mailer) broker.Broker {
	t.Helper()
	srv := server.NewRPCServer(
		server.Name(serviceName),
		server.Broker(b),
		server.Registry(registry.NewMemoryRegistry()),
		server.Address("127.0.0.1:0"),
	)
	if err := Subscribe(srv, NewHandler(m, discardLog), defaultQueue); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	return b
}

// publishEvent publishes as the user-service does by default, through
// micro.NewEvent, with the client's content type.
func publishEvent(b broker.Broker, contentType string, ev *pb.UserCreated) error {
	opts := []client.Option{client.Broker(b), client.Registry(registry.NewMemoryRegistry())}
	if contentType != "" {
		opts = append(opts, client.ContentType(contentType))
	}
	return micro.NewEvent(pb.TopicUserCreated, client.NewClient(opts...)).Publish(context.Background(), ev)
}

// rawJSONMessage is the user-service's EVENTS_CODEC=json message: the event
// as protojson with proto names, Content-Type and the user id in the header.
func rawJSONMessage(t *testing.T, ev *pb.UserCreated) *broker.Message {
	t.Helper()
	body, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
	if err != nil {
		t.Fatalf("marshal %v: %v", ev, err)
	}
	return &broker.Message{
		Header: map[string]string{"Content-Type": "application/json", "User-Id": ev.GetId()},
		Body:   body,
	}
}

func TestSubscriberDecodesAndSends(t *testing.T) {
	ev := validEvent()
	tests := []struct {
		name    string
		publish func(t *testing.T, b broker.Broker) error
	}{
		{"protobuf via micro.NewEvent", func(t *testing.T, b broker.Broker) error {
			return publishEvent(b, "application/protobuf", ev)
		}},
		{"go-micro default content type (json) via micro.NewEvent", func(t *testing.T, b broker.Broker) error {
			return publishEvent(b, "", ev)
		}},
		{"raw broker message, json", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, rawJSONMessage(t, ev))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally()
			b := startOnMemoryBroker(t, tl.mailer("r"))
			if err := tt.publish(t, b); err != nil {
				t.Fatalf("publish = %v; want nil", err)
			}
			got := tl.sends(ev.EventId)
			want := WelcomeEmail{EventID: ev.EventId, UserID: ev.Id, Name: ev.Name, Email: ev.Email, Company: ev.Company}
			if len(got) != 1 || got[0] != want {
				t.Errorf("sends for %s = %+v; want exactly [%+v]", ev.EventId, got, want)
			}
			if n := tl.total(""); n != 1 {
				t.Errorf("total sends = %d; want 1", n)
			}
		})
	}
}

func TestSubscriberRejectsMalformed(t *testing.T) {
	noEmail := validEvent()
	noEmail.Email = ""
	raw := func(contentType, body string) *broker.Message {
		h := map[string]string{}
		if contentType != "" {
			h["Content-Type"] = contentType
		}
		return &broker.Message{Header: h, Body: []byte(body)}
	}
	tests := []struct {
		name    string
		publish func(t *testing.T, b broker.Broker) error
	}{
		{"garbage protobuf", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, raw("application/protobuf", "not a protobuf \xff\xff"))
		}},
		{"garbage json", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, raw("application/json", "{not json"))
		}},
		{"json with wrong field type", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, raw("application/json", `{"event_id": 42}`))
		}},
		{"json without Content-Type is read as protobuf", func(t *testing.T, b broker.Broker) error {
			m := rawJSONMessage(t, validEvent())
			delete(m.Header, "Content-Type")
			return b.Publish(pb.TopicUserCreated, m)
		}},
		{"unknown Content-Type", func(t *testing.T, b broker.Broker) error {
			m := rawJSONMessage(t, validEvent())
			m.Header["Content-Type"] = "text/plain"
			return b.Publish(pb.TopicUserCreated, m)
		}},
		{"empty json object", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, raw("application/json", `{}`))
		}},
		{"protobuf without email", func(t *testing.T, b broker.Broker) error {
			return publishEvent(b, "application/protobuf", noEmail)
		}},
		{"json without email", func(t *testing.T, b broker.Broker) error {
			return b.Publish(pb.TopicUserCreated, rawJSONMessage(t, noEmail))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTally()
			b := startOnMemoryBroker(t, tl.mailer("r"))
			if err := tt.publish(t, b); err == nil {
				t.Errorf("publish = nil; want the subscriber's error")
			}
			if n := tl.total(""); n != 0 {
				t.Errorf("total sends = %d; want 0", n)
			}
		})
	}
}

func TestSubscriberReturnsMailerError(t *testing.T) {
	failing := mailerFunc(func(context.Context, WelcomeEmail) error {
		return errors.New("smtp: 421 service not available")
	})
	b := startOnMemoryBroker(t, failing)
	for _, ct := range []string{"application/protobuf", "application/json"} {
		err := publishEvent(b, ct, validEvent())
		if err == nil || !strings.Contains(err.Error(), "smtp: 421") {
			t.Errorf("publish(%s) = %v; want the mailer's error", ct, err)
		}
	}
}

func TestSubscriberSendsARedeliveredEventOnce(t *testing.T) {
	var out bytes.Buffer
	mailer := dedup(NewLogMailer(&out, discardLog), newMemorySentLog(100, testLease))
	b := startOnMemoryBroker(t, mailer)
	ev := validEvent()
	deliveries := []struct {
		name    string
		publish func() error
	}{
		{"protobuf", func() error { return publishEvent(b, "application/protobuf", ev) }},
		{"protobuf again", func() error { return publishEvent(b, "application/protobuf", ev) }},
		{"json copy", func() error { return b.Publish(pb.TopicUserCreated, rawJSONMessage(t, ev)) }},
	}
	for _, d := range deliveries {
		if err := d.publish(); err != nil {
			t.Fatalf("publish %s = %v; want nil", d.name, err)
		}
	}
	if got, want := out.String(), "Sending email to: "+ev.Name+"\n"; got != want {
		t.Errorf("3 deliveries of event %s printed %q; want %q", ev.EventId, got, want)
	}
}
