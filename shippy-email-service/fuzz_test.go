package main

import (
	"bytes"
	"context"
	gojson "encoding/json"
	"strings"
	"testing"

	pb "github.com/shippy/shippy/proto/user"
	"go-micro.dev/v6/broker"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// fuzzContentTypes are the Content-Type headers a fuzz input picks from by
// its first argument; "" is a message without one (go-micro reads protobuf).
var fuzzContentTypes = []string{"application/protobuf", "application/json", ""}

// FuzzDecodeEvent publishes arbitrary bytes as a user.created broker message
// to the real go-micro subscriber (server codec, router, Handler) on a
// memory broker, which delivers synchronously and without re-encoding, so
// each input runs exactly the decoding path a NATS message takes. It must
// never panic (go-micro's router would turn a panic into a "panic
// recovered" error), never send for bytes that do not decode to a valid
// event, and send exactly once, unchanged, for bytes that do.
func FuzzDecodeEvent(f *testing.F) {
	var sends []WelcomeEmail
	counting := mailerFunc(func(_ context.Context, e WelcomeEmail) error {
		sends = append(sends, e)
		return nil
	})
	b := startSubscriber(f, broker.NewMemoryBroker(), counting)

	f.Fuzz(func(t *testing.T, contentType uint8, body []byte) {
		sends = sends[:0]
		ct := fuzzContentTypes[int(contentType)%len(fuzzContentTypes)]
		msg := &broker.Message{Header: map[string]string{}, Body: body}
		if ct != "" {
			msg.Header["Content-Type"] = ct
		}
		err := b.Publish(pb.TopicUserCreated, msg)
		if err != nil && strings.Contains(err.Error(), "panic") {
			t.Fatalf("subscriber panicked on %q (%s): %v", body, ct, err)
		}

		ev, decodeErr := decodeLikeGoMicro(ct, body)
		// The event spec, restated rather than calling validate, so that a
		// weakened validate fails here.
		complete := ev.GetEventId() != "" && ev.GetId() != "" && ev.GetName() != "" && ev.GetEmail() != ""
		if decodeErr != nil || !complete {
			if err == nil || len(sends) != 0 {
				t.Errorf("publish %q (%s) = %v, %d sends; want an error and 0 sends", body, ct, err, len(sends))
			}
			return
		}
		want := WelcomeEmail{EventID: ev.GetEventId(), UserID: ev.GetId(), Name: ev.GetName(), Email: ev.GetEmail(), Company: ev.GetCompany()}
		if err != nil || len(sends) != 1 || sends[0] != want {
			t.Errorf("publish %q (%s) = %v, sends %+v; want nil, [%+v]", body, ct, err, sends, want)
		}
	})
}

// decodeLikeGoMicro decodes body as go-micro v6.3.10's server codecs do:
// protobuf with proto.Unmarshal; JSON by reading the first JSON value of the
// body (anything after it is ignored) and handing it to protojson.
func decodeLikeGoMicro(contentType string, body []byte) (*pb.UserCreated, error) {
	ev := &pb.UserCreated{}
	if contentType != "application/json" {
		return ev, proto.Unmarshal(body, ev)
	}
	var raw gojson.RawMessage
	if err := gojson.NewDecoder(bytes.NewReader(body)).Decode(&raw); err != nil {
		return ev, err
	}
	return ev, protojson.Unmarshal(raw, ev)
}
