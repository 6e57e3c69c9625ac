package main

import (
	"context"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/shippy/shippy/internal/outbox"
	pb "github.com/shippy/shippy/proto/user"
)

type recordingPublisher struct{ got []*pb.UserCreated }

func (r *recordingPublisher) Publish(_ context.Context, ev *pb.UserCreated) error {
	r.got = append(r.got, ev)
	return nil
}

// oldLayoutPayload is what the previous version's store wrote into the
// outbox: UserCreated numbered event_id=1, user_id=2, name=3, company=4,
// email=5, created_at_unix_ms=6.
func oldLayoutPayload(ev *pb.UserCreated) []byte {
	var b []byte
	for i, s := range []string{ev.EventId, ev.Id, ev.Name, ev.Company, ev.Email} {
		b = protowire.AppendTag(b, protowire.Number(i+1), protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = protowire.AppendTag(b, 6, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(ev.CreatedAtUnixMs))
}

// An upgrade can find rows of the old layout pending in the outbox; the
// relay must publish them in the current layout, not mail the company.
func TestOutboxPublisherReadsBothLayouts(t *testing.T) {
	want := &pb.UserCreated{
		EventId: "6f1c2a4e-8d3b-4c1e-9f2a-7b5d0e3c9a18", Id: "0b7e3f52-1c4d-4a8e-b6f9-2d1a5c7e9f30",
		Name: "Ewan Valentine", Company: "Shippy", Email: "ewan@example.com", CreatedAtUnixMs: 1700000000000,
	}
	current, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		payload []byte
	}{
		{"current layout", current},
		{"layout before the tutorial's numbering", oldLayoutPayload(want)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recordingPublisher{}
			m := outbox.Message{EventID: want.EventId, Topic: pb.TopicUserCreated, Payload: tt.payload}
			if err := (outboxPublisher{events: rec}).Publish(context.Background(), m); err != nil {
				t.Fatalf("Publish(%x) = %v; want nil", tt.payload, err)
			}
			if len(rec.got) != 1 || !proto.Equal(rec.got[0], want) {
				t.Errorf("Publish(%x) published %v; want [%v]", tt.payload, rec.got, want)
			}
		})
	}
}

// A payload in neither layout is an error, never an event with shifted
// fields.
func TestOutboxPublisherRefusesUnknownLayout(t *testing.T) {
	// The current layout without event_id: field 1 (the user id) is not the
	// row's event id, so it cannot be an old row either.
	payload, err := proto.Marshal(&pb.UserCreated{Id: "user-1", Name: "Ewan", Email: "ewan@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingPublisher{}
	m := outbox.Message{EventID: "ev-1", Topic: pb.TopicUserCreated, Payload: payload}
	if err := (outboxPublisher{events: rec}).Publish(context.Background(), m); err == nil || len(rec.got) != 0 {
		t.Errorf("Publish(%x) = %v, published %v; want an error and nothing published", payload, err, rec.got)
	}
}
