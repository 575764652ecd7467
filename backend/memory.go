package backend

import (
	"sync"
	"sync/atomic"
)

// memChunkShift sets the allocation unit of Memory: 64 KiB.
const memChunkShift = 16

const memChunkSize = 1 << memChunkShift

// memChunk is one allocation unit; its lock orders writers against
// readers of the same 64 KiB so a read never sees a torn write.
type memChunk struct {
	mu   sync.RWMutex
	data []byte // nil while the chunk is a hole
}

// Memory is a thin device held in RAM, for tests and scratch LUNs. Storage
// is allocated in 64 KiB chunks on first write and freed by Unmap, so a
// large, mostly empty device costs little. I/O to different chunks runs in
// parallel.
type Memory struct {
	size   int64
	chunks []memChunk
	closed atomic.Bool
}

// NewMemory returns a zero-filled memory device of size bytes.
func NewMemory(size int64) *Memory {
	if size < 0 {
		size = 0
	}
	return &Memory{size: size, chunks: make([]memChunk, (size+memChunkSize-1)>>memChunkShift)}
}

// Size reports the capacity in bytes.
func (m *Memory) Size() int64 { return m.size }

// check validates an access of n bytes at off.
func (m *Memory) check(off int64, n int) error {
	if m.closed.Load() {
		return ErrClosed
	}
	if off < 0 || off > m.size || int64(n) > m.size-off {
		return ErrOutOfRange
	}
	return nil
}

// span calls fn for each chunk piece of [off, off+n): the chunk, the offset
// inside it and the offset inside the caller's buffer.
func (m *Memory) span(off int64, n int, fn func(c *memChunk, in int, pos, l int)) {
	for pos := 0; pos < n; {
		idx := (off + int64(pos)) >> memChunkShift
		in := int((off + int64(pos)) & (memChunkSize - 1))
		l := min(memChunkSize-in, n-pos)
		fn(&m.chunks[idx], in, pos, l)
		pos += l
	}
}

// ReadAt reads len(p) bytes at off; holes read as zeroes.
func (m *Memory) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(off, len(p)); err != nil {
		return 0, err
	}
	m.span(off, len(p), func(c *memChunk, in, pos, l int) {
		c.mu.RLock()
		if c.data == nil {
			clear(p[pos : pos+l])
		} else {
			copy(p[pos:pos+l], c.data[in:in+l])
		}
		c.mu.RUnlock()
	})
	return len(p), nil
}

// WriteAt writes p at off, allocating the chunks it touches.
func (m *Memory) WriteAt(p []byte, off int64) (int, error) {
	if err := m.check(off, len(p)); err != nil {
		return 0, err
	}
	m.span(off, len(p), func(c *memChunk, in, pos, l int) {
		c.mu.Lock()
		if c.data == nil {
			c.data = make([]byte, memChunkSize)
		}
		copy(c.data[in:in+l], p[pos:pos+l])
		c.mu.Unlock()
	})
	return len(p), nil
}

// Unmap deallocates [off, off+length): whole chunks are freed, partial ones
// zeroed.
func (m *Memory) Unmap(off, length int64) error {
	if length < 0 || length > int64(int(^uint(0)>>1)) {
		return ErrOutOfRange
	}
	if err := m.check(off, int(length)); err != nil {
		return err
	}
	m.span(off, int(length), func(c *memChunk, in, _, l int) {
		c.mu.Lock()
		if l == memChunkSize {
			c.data = nil
		} else if c.data != nil {
			clear(c.data[in : in+l])
		}
		c.mu.Unlock()
	})
	return nil
}

// Allocation reports whether off lies in an allocated chunk and how far the
// run of chunks in the same state extends.
func (m *Memory) Allocation(off int64) (bool, int64, error) {
	if err := m.check(off, 1); err != nil {
		return false, 0, err
	}
	allocated := func(i int64) bool {
		c := &m.chunks[i]
		c.mu.RLock()
		defer c.mu.RUnlock()
		return c.data != nil
	}
	idx := off >> memChunkShift
	state := allocated(idx)
	end := idx + 1
	for end < int64(len(m.chunks)) && allocated(end) == state {
		end++
	}
	return state, min(end<<memChunkShift, m.size) - off, nil
}

// Sync does nothing: memory is as durable as it gets.
func (m *Memory) Sync() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close frees the contents; later calls fail with ErrClosed.
func (m *Memory) Close() error {
	if m.closed.Swap(true) {
		return ErrClosed
	}
	for i := range m.chunks {
		c := &m.chunks[i]
		c.mu.Lock()
		c.data = nil
		c.mu.Unlock()
	}
	return nil
}
