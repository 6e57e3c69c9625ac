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
	claims map[string]time.Time // event id -> lease expiry
}

func newMemorySentLog(max int, lease time.Duration) *memorySentLog {
	return &memorySentLog{
		lease:  lease,
		max:    max,
		now:    time.Now,
		sent:   make(map[string]struct{}),
		claims: make(map[string]time.Time),
	}
}

func (m *memorySentLog) Claim(_ context.Context, eventID string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sent[eventID]; ok {
		return false, nil
	}
	now := m.now()
	if exp, ok := m.claims[eventID]; ok && now.Before(exp) {
		return false, errSendInProgress
	}
	if len(m.claims) >= m.max {
		// Only a mailer that panicked leaves a claim behind; drop the expired.
		for id, exp := range m.claims {
			if !now.Before(exp) {
				delete(m.claims, id)
			}
		}
	}
	m.claims[eventID] = now.Add(m.lease)
	return true, nil
}

func (m *memorySentLog) Sent(_ context.Context, eventID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.claims, eventID)
	if _, ok := m.sent[eventID]; ok {
		return nil
	}
	if len(m.ring) < m.max {
		m.ring = append(m.ring, eventID)
	} else {
		delete(m.sent, m.ring[m.next])
		m.ring[m.next] = eventID
		m.next = (m.next + 1) % m.max
	}
	m.sent[eventID] = struct{}{}
	return nil
}

func (m *memorySentLog) Release(_ context.Context, eventID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.claims, eventID)
	return nil
}
