// Package bufpool provides size-classed pools of byte buffers for the data
// path, so that steady-state I/O reuses buffers instead of allocating one
// per command.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 12 // 4 KiB
	maxShift = 24 // 16 MiB
)

// Pool hands out buffers in power-of-two size classes from 4 KiB to 16 MiB.
// Larger requests are allocated directly and not pooled. The zero value is
// ready to use and safe for concurrent use.
type Pool struct {
	classes [maxShift - minShift + 1]sync.Pool
}

func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer whose length is n; its contents are unspecified.
// The pointer is what Put takes back, so that recycling allocates nothing.
func (p *Pool) Get(n int) *[]byte {
	c := class(n)
	if c >= len(p.classes) {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c].Get(); v != nil {
		bp := v.(*[]byte)
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(c+minShift))
	return &b
}

// Put returns a buffer obtained from Get. The caller must not use it again.
// Buffers of a size Get does not pool are dropped.
func (p *Pool) Put(bp *[]byte) {
	c := class(cap(*bp))
	if c >= len(p.classes) || cap(*bp) != 1<<(c+minShift) {
		return
	}
	p.classes[c].Put(bp)
}
