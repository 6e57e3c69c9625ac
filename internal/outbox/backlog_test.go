package outbox

import (
	"context"
	"testing"
	"time"

	"gorm.io/gorm"
)

func TestBacklog(t *testing.T) {
	forEachDialect(t, func(t *testing.T, _ testDB, db *gorm.DB) {
		ctx := context.Background()
		r := New(db, newFakePublisher(), WithLogger(discardLogger()))
		b, err := r.Backlog(ctx, 3)
		if err != nil || b.Pending != 0 || !b.Oldest.IsZero() {
			t.Fatalf("Backlog of an empty outbox = %+v, %v; want 0 pending, no oldest", b, err)
		}

		before := time.Now().Add(-time.Second)
		ids := eventIDs("backlog", 5)
		enqueue(t, db, ids...)
		b, err = r.Backlog(ctx, 3)
		if err != nil {
			t.Fatalf("Backlog: %v", err)
		}
		if b.Pending != 3 {
			t.Errorf("Backlog(limit 3).Pending with 5 pending = %d; want 3 (the limit)", b.Pending)
		}
		if b.Oldest.Before(before) || b.Oldest.After(time.Now().Add(time.Second)) {
			t.Errorf("Backlog.Oldest = %v; want about now", b.Oldest)
		}
		if b, _ = r.Backlog(ctx, 100); b.Pending != 5 {
			t.Errorf("Backlog(limit 100).Pending = %d; want 5", b.Pending)
		}

		// The first two published: the oldest is now the third.
		var third Event
		if err := db.Where("event_id = ?", ids[2]).Take(&third).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Model(&Event{}).Where("event_id IN ?", ids[:2]).Update("published_at", time.Now().UTC()).Error; err != nil {
			t.Fatal(err)
		}
		b, err = r.Backlog(ctx, 100)
		if err != nil || b.Pending != 3 || !b.Oldest.Equal(third.CreatedAt) {
			t.Errorf("Backlog after 2 of 5 published = %+v, %v; want 3 pending, oldest %v", b, err, third.CreatedAt)
		}
	})
}
