package main

import (
	"context"
	"sync"
	"time"
)

// defaultMemorySentIDs is how many sent event ids the in-memory log keeps:
// enough to cover any redelivery a broker makes within one process's life,
// at about 100 bytes an id.
const defaultMemorySentIDs = 100_000

// memorySentLog is the sentLog of a single replica on a non-durable broker.
// It forgets everything on restart, and keeps only the last max sent ids
// (oldest forgotten first), so its memory stays bounded.
type memorySentLog struct {
	lease time.Duration
	max   int
	now   func() time.Time

	mu     sync.Mutex
	sent   map[string]struct{}
	ring   []string // sent ids in the order recorded, overwritten from next
	next   int
	claims map[string]memoryClaim // by event id
	rev    uint64                 // of the last claim taken
}

type memoryClaim struct {
	expires time.Time
	rev     uint64
}

func newMemorySentLog(max int, lease time.Duration) *memorySentLog {
	return &memorySentLog{
		lease:  lease,
		max:    max,
		now:    time.Now,
		sent:   make(map[string]struct{}),
		claims: make(map[string]memoryClaim),
	}
}

func (m *memorySentLog) Claim(_ context.Context, eventID string) (claim, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sent[eventID]; ok {
		return claim{}, false, nil
	}
	now := m.now()
	if c, ok := m.claims[eventID]; ok && now.Before(c.expires) {
		return claim{}, false, errSendInProgress
	}
	if len(m.claims) >= m.max {
		// Only a mailer that panicked leaves a claim behind; drop the expired.
		for id, c := range m.claims {
			if !now.Before(c.expires) {
				delete(m.claims, id)
			}
		}
	}
	m.rev++
	m.claims[eventID] = memoryClaim{expires: now.Add(m.lease), rev: m.rev}
	return claim{eventID: eventID, rev: m.rev}, true, nil
}

// Sent records the event even if its lease was taken over (as kvSentLog
// does), leaving the other delivery's lease for it to end.
func (m *memorySentLog) Sent(_ context.Context, c claim) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if held, ok := m.claims[c.eventID]; ok && held.rev == c.rev {
		delete(m.claims, c.eventID)
	} else {
		err = errClaimLost
	}
	if _, ok := m.sent[c.eventID]; ok {
		return err
	}
	if len(m.ring) < m.max {
		m.ring = append(m.ring, c.eventID)
	} else {
		delete(m.sent, m.ring[m.next])
		m.ring[m.next] = c.eventID
		m.next = (m.next + 1) % m.max
	}
	m.sent[c.eventID] = struct{}{}
	return err
}

// Release drops the lease only if it is still the caller's.
func (m *memorySentLog) Release(_ context.Context, c claim) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if held, ok := m.claims[c.eventID]; ok && held.rev == c.rev {
		delete(m.claims, c.eventID)
	}
	return nil
}
