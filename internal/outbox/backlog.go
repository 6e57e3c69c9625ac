package outbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"
)

// Backlog is what the outbox holds unpublished, by any relay.
type Backlog struct {
	// Pending counts the unpublished rows, up to the limit given to
	// Backlog: a larger backlog reads as limit.
	Pending int64
	// Oldest is when the first unpublished row (by id) was enqueued; zero
	// when there is none.
	Oldest time.Time
}

// Backlog counts the unpublished rows, at most limit of them, and finds
// the oldest: two queries on the pending-rows index, whose cost stays
// bounded however large the backlog grows (for metrics scraped every few
// seconds; Pending counts without a bound).
func (r *Relay) Backlog(ctx context.Context, limit int) (Backlog, error) {
	var b Backlog
	db := r.db.WithContext(ctx)
	pending := db.Model(&Event{}).Select("id").Where("published_at IS NULL").Limit(limit)
	if err := db.Table("(?) AS pending", pending).Count(&b.Pending).Error; err != nil {
		return Backlog{}, fmt.Errorf("outbox: count pending events: %w", err)
	}
	if b.Pending == 0 {
		return b, nil
	}
	var first Event
	err := db.Select("id", "created_at").Where("published_at IS NULL").Order("id").Take(&first).Error
	switch {
	case errors.Is(err, gorm.ErrRecordNotFound):
		// Published between the two queries.
		return Backlog{}, nil
	case err != nil:
		return Backlog{}, fmt.Errorf("outbox: find oldest pending event: %w", err)
	}
	b.Oldest = first.CreatedAt
	return b, nil
}
