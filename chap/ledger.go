package chap

import (
	"bytes"
	"crypto/sha256"
	"sync"
)

// Ledger remembers the most recent challenges an authenticator has issued
// and received, so that a challenge coming back to it can be refused: an
// initiator that answers our challenge with the same bytes as its own
// mutual challenge (reflection, possibly across two connections), or that
// reuses a challenge it sent before, would make the target compute a
// response the initiator can replay. Entries are digests of the
// challenges, so memory is bounded by the capacity alone. A Ledger is safe
// for concurrent use; its zero value is not usable, use NewLedger.
type Ledger struct {
	mu   sync.Mutex
	set  map[[sha256.Size]byte]struct{}
	ring [][sha256.Size]byte
	next int
}

// NewLedger returns a Ledger that remembers up to capacity challenges,
// forgetting the oldest first (capacity below 1 means 1).
func NewLedger(capacity int) *Ledger {
	capacity = max(capacity, 1)
	return &Ledger{set: make(map[[sha256.Size]byte]struct{}, capacity), ring: make([][sha256.Size]byte, 0, capacity)}
}

// Record adds challenge and reports whether it was new; false means the
// ledger already held it (reflection or reuse).
func (l *Ledger) Record(challenge []byte) bool {
	k := sha256.Sum256(challenge)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.set[k]; ok {
		return false
	}
	if len(l.ring) < cap(l.ring) {
		l.ring = append(l.ring, k)
	} else {
		delete(l.set, l.ring[l.next])
		l.ring[l.next] = k
		l.next = (l.next + 1) % len(l.ring)
	}
	l.set[k] = struct{}{}
	return true
}

// Contains reports whether the ledger holds challenge.
func (l *Ledger) Contains(challenge []byte) bool {
	k := sha256.Sum256(challenge)
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.set[k]
	return ok
}

// CheckMutual checks the challenge a peer sends for mutual authentication
// against the challenge it was just sent (ours): the same bytes are a
// reflection attempt (RFC 7143 §9.2.1) and get ErrReflection.
func CheckMutual(ours, theirs []byte) error {
	if err := CheckChallenge(theirs); err != nil {
		return err
	}
	if bytes.Equal(ours, theirs) {
		return ErrReflection
	}
	return nil
}
