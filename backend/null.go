package backend

import "sync/atomic"

// Null is a device that stores nothing: reads return zeroes and writes are
// discarded after their range is checked. It measures the target's own
// overhead in benchmarks.
type Null struct {
	size   int64
	closed atomic.Bool
}

// NewNull returns a null device of size bytes.
func NewNull(size int64) *Null { return &Null{size: max(size, 0)} }

// Size reports the capacity in bytes.
func (n *Null) Size() int64 { return n.size }

func (n *Null) check(off int64, l int) error {
	if n.closed.Load() {
		return ErrClosed
	}
	if off < 0 || off > n.size || int64(l) > n.size-off {
		return ErrOutOfRange
	}
	return nil
}

// ReadAt fills p with zeroes.
func (n *Null) ReadAt(p []byte, off int64) (int, error) {
	if err := n.check(off, len(p)); err != nil {
		return 0, err
	}
	clear(p)
	return len(p), nil
}

// WriteAt discards p.
func (n *Null) WriteAt(p []byte, off int64) (int, error) {
	if err := n.check(off, len(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync does nothing.
func (n *Null) Sync() error {
	if n.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close marks the device closed.
func (n *Null) Close() error {
	if n.closed.Swap(true) {
		return ErrClosed
	}
	return nil
}
