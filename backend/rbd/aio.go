//go:build ceph

package rbd

/*
#cgo LDFLAGS: -lrbd -lrados
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

extern void iscsikitRBDComplete(uintptr_t arg, ssize_t ret);
extern int iscsikitRBDDiff(uintptr_t arg, uint64_t off, uint64_t len, int exists);

enum { OP_READ, OP_WRITE, OP_DISCARD, OP_FLUSH, OP_WRITESAME, OP_CAW };

static void iscsikit_rbd_cb(rbd_completion_t c, void *arg) {
	ssize_t r = rbd_aio_get_return_value(c);
	rbd_aio_release(c);
	iscsikitRBDComplete((uintptr_t)arg, r);
}

// iscsikit_submit starts one asynchronous request; iscsikit_rbd_cb ends it.
static int iscsikit_submit(rbd_image_t img, int kind, uintptr_t arg, uint64_t off,
		size_t len, char *buf, size_t dlen, uint64_t *mismatch) {
	rbd_completion_t c;
	int r = rbd_aio_create_completion((void *)arg, iscsikit_rbd_cb, &c);
	if (r < 0)
		return r;
	switch (kind) {
	case OP_READ: r = rbd_aio_read(img, off, len, buf, c); break;
	case OP_WRITE: r = rbd_aio_write(img, off, len, buf, c); break;
	case OP_DISCARD: r = rbd_aio_discard(img, off, len, c); break;
	case OP_FLUSH: r = rbd_aio_flush(img, c); break;
	case OP_WRITESAME: r = rbd_aio_writesame(img, off, len, buf, dlen, c, 0); break;
	case OP_CAW: r = (int)rbd_aio_compare_and_write(img, off, len, buf, buf + len, c, mismatch, 0); break;
	default: r = -EINVAL;
	}
	if (r < 0)
		rbd_aio_release(c);
	return r;
}

static int iscsikit_diff_cb(uint64_t off, size_t len, int exists, void *arg) {
	return iscsikitRBDDiff((uintptr_t)arg, off, len, exists);
}

static int iscsikit_diff(rbd_image_t img, uint64_t off, uint64_t len, int whole, uintptr_t arg) {
	return rbd_diff_iterate2(img, NULL, off, len, 1, whole, iscsikit_diff_cb, (void *)arg);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"runtime/cgo"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/iscsikit/iscsikit/backend"
)

// opKind names an asynchronous request.
type opKind C.int

const (
	opRead      opKind = C.OP_READ
	opWrite     opKind = C.OP_WRITE
	opDiscard   opKind = C.OP_DISCARD
	opFlush     opKind = C.OP_FLUSH
	opWriteSame opKind = C.OP_WRITESAME
	opCAW       opKind = C.OP_CAW
)

func (k opKind) String() string {
	switch k {
	case opRead:
		return "read"
	case opWrite:
		return "write"
	case opDiscard:
		return "discard"
	case opFlush:
		return "flush"
	case opWriteSame:
		return "write same"
	case opCAW:
		return "compare and write"
	}
	return "request"
}

// The states of an op: its request is in librbd, librbd finished it, or
// its caller stopped waiting (the deadline passed) and the completion
// gives the op back to the pool.
const (
	opIdle int32 = iota
	opPending
	opDone
	opAbandoned
)

// op is one asynchronous request's state, reused from the device's pool:
// a buffer in C memory (librbd keeps using it until the request ends, even
// after the caller gave up), a handle the completion finds it by, and the
// timer of its deadline.
type op struct {
	d        *Device
	h        cgo.Handle
	state    atomic.Int32
	ret      int64
	done     chan struct{}
	timer    *time.Timer
	buf      unsafe.Pointer
	cap      int
	mismatch *C.uint64_t
}

func newOp(d *Device) *op {
	o := &op{d: d, done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	o.timer.Stop()
	o.mismatch = (*C.uint64_t)(C.malloc(C.size_t(unsafe.Sizeof(C.uint64_t(0)))))
	o.h = cgo.NewHandle(o)
	return o
}

// reserve makes the op's buffer at least n bytes long.
func (o *op) reserve(n int) {
	if n <= o.cap {
		return
	}
	C.free(o.buf)
	o.buf = C.malloc(C.size_t(n))
	o.cap = n
}

// bytes returns the first n bytes of the op's buffer.
func (o *op) bytes(n int) []byte { return unsafe.Slice((*byte)(o.buf), n) }

// free releases the op's C memory and handle; the op is not used again.
func (o *op) free() {
	C.free(o.buf)
	C.free(unsafe.Pointer(o.mismatch))
	o.h.Delete()
}

// complete records the request's result and wakes its caller, or gives the
// op back to the pool when the caller gave up.
func (o *op) complete(ret int64) {
	o.ret = ret
	if o.state.CompareAndSwap(opPending, opDone) {
		o.done <- struct{}{}
		return
	}
	o.state.Store(opIdle)
	o.d.putOp(o)
}

// submit starts a request of kind on the op's buffer and waits for it
// until the device's deadline. On a nil error the op's result is in o.ret
// and the caller owns the op again (and gives it back with putOp); on an
// error the op is no longer the caller's.
func (d *Device) submit(ctx context.Context, o *op, kind opKind, off int64, length, dataLen int) error {
	o.state.Store(opPending)
	r := C.iscsikit_submit(d.img, C.int(kind), C.uintptr_t(o.h), C.uint64_t(off), C.size_t(length),
		(*C.char)(o.buf), C.size_t(dataLen), o.mismatch)
	if r < 0 {
		o.state.Store(opIdle)
		d.putOp(o)
		return d.errno(kind, int64(r))
	}
	o.timer.Reset(d.timeout)
	var cause error
	select {
	case <-o.done:
		o.timer.Stop()
		o.state.Store(opIdle)
		return nil
	case <-o.timer.C:
		cause = fmt.Errorf("rbd: %s: %s at %d: no answer from the cluster within %v: %w",
			d.name, kind, off, d.timeout, backend.ErrNotReady)
	case <-ctx.Done():
		o.timer.Stop()
		cause = fmt.Errorf("rbd: %s: %s at %d: %w", d.name, kind, off, ctx.Err())
	}
	if o.state.CompareAndSwap(opPending, opAbandoned) {
		return cause
	}
	<-o.done // the request ended as the wait did
	o.state.Store(opIdle)
	return nil
}

// errUnreachable lists the errnos that mean the cluster cannot be reached
// (or has fenced this client) rather than that the request is wrong.
var errUnreachable = []syscall.Errno{syscall.ETIMEDOUT, syscall.ESHUTDOWN, syscall.ENOTCONN,
	syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.EAGAIN}

// errno maps librbd's negative errno for a request of kind to an error.
func (d *Device) errno(kind opKind, ret int64) error {
	e := syscall.Errno(-ret)
	switch {
	case e == syscall.EROFS:
		return backend.ErrReadOnly
	case errors.Is(e, syscall.EBADF) && d.closed.Load():
		return backend.ErrClosed
	}
	for _, u := range errUnreachable {
		if e == u {
			return fmt.Errorf("rbd: %s: %s: %w: %w", d.name, kind, backend.ErrNotReady, e)
		}
	}
	return fmt.Errorf("rbd: %s: %s: %w", d.name, kind, e)
}

// diffScan follows rbd_diff_iterate2 from start to find the run of
// allocated or unallocated bytes that start lies in.
type diffScan struct {
	start     int64
	allocated bool
	end       int64 // end of the run found so far
	found     bool  // the first extent was seen
}

// errStop is what the diff callback returns to end the iteration early.
const errStop = -int(syscall.ECANCELED)

func (s *diffScan) extent(off, length int64, exists bool) int {
	if !exists {
		return 0
	}
	if !s.found {
		s.found = true
		if off > s.start {
			s.allocated, s.end = false, off
			return errStop
		}
		s.allocated, s.end = true, off+length
		return 0
	}
	if off > s.end {
		return errStop
	}
	s.end = max(s.end, off+length)
	return 0
}

// diff runs rbd_diff_iterate2 over [off, off+length) for s; whole asks
// for whole objects, which librbd answers from the object map when the
// image has fast-diff.
func (d *Device) diff(s *diffScan, off, length int64, whole bool) int {
	h := cgo.NewHandle(s)
	defer h.Delete()
	w := C.int(0)
	if whole {
		w = 1
	}
	return int(C.iscsikit_diff(d.img, C.uint64_t(off), C.uint64_t(length), w, C.uintptr_t(h)))
}
