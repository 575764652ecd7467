//go:build ceph

package rbd

/*
#cgo LDFLAGS: -lrbd -lrados
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

extern int iscsikitRBDDiff(uintptr_t arg, uint64_t off, uint64_t len, int exists);

enum { OP_READ, OP_WRITE, OP_DISCARD, OP_FLUSH, OP_WRITESAME, OP_CAW };

// iscsikit_events collects the requests librbd has ended for the device's
// reaper goroutine: the completion callback, on librbd's thread, records
// the op's id and wakes the reaper through an eventfd (once per batch).
// It never calls into Go, so librbd's completion thread never waits for
// the Go scheduler, and one wake-up of the reaper serves every request
// that ended meanwhile.
typedef struct {
	pthread_mutex_t mu;
	int efd;
	int armed; // the eventfd was written since the list was last emptied
	uint32_t *ids;
	size_t n, cap;
} iscsikit_events;

// iscsikit_op is the C side of one op: where librbd's result lands.
typedef struct {
	iscsikit_events *ev;
	uint32_t id;
	ssize_t ret;
	uint64_t mismatch;
} iscsikit_op;

static iscsikit_events *iscsikit_events_new(void) {
	iscsikit_events *e = calloc(1, sizeof *e);
	if (e == NULL)
		return NULL;
	e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->efd < 0) {
		free(e);
		return NULL;
	}
	pthread_mutex_init(&e->mu, NULL);
	return e;
}

// iscsikit_events_free frees e; its eventfd is closed by the Go side.
static void iscsikit_events_free(iscsikit_events *e) {
	pthread_mutex_destroy(&e->mu);
	free(e->ids);
	free(e);
}

// iscsikit_op_new makes op id of e, with room in e's list for every op.
static iscsikit_op *iscsikit_op_new(iscsikit_events *e, uint32_t id) {
	iscsikit_op *o = calloc(1, sizeof *o);
	if (o == NULL)
		return NULL;
	o->ev = e;
	o->id = id;
	pthread_mutex_lock(&e->mu);
	if ((size_t)id + 1 > e->cap) {
		size_t cap = 2 * ((size_t)id + 1);
		uint32_t *ids = realloc(e->ids, cap * sizeof *ids);
		if (ids == NULL) {
			pthread_mutex_unlock(&e->mu);
			free(o);
			return NULL;
		}
		e->ids = ids;
		e->cap = cap;
	}
	pthread_mutex_unlock(&e->mu);
	return o;
}

static void iscsikit_rbd_cb(rbd_completion_t c, void *arg) {
	iscsikit_op *o = arg;
	iscsikit_events *e = o->ev;
	ssize_t r = rbd_aio_get_return_value(c);
	rbd_aio_release(c);
	pthread_mutex_lock(&e->mu);
	o->ret = r;
	e->ids[e->n++] = o->id;
	int wake = !e->armed;
	e->armed = 1;
	pthread_mutex_unlock(&e->mu);
	if (wake) {
		uint64_t one = 1;
		ssize_t w = write(e->efd, &one, sizeof one);
		(void)w; // only EAGAIN, with the counter full: the reaper is woken anyway
	}
}

// iscsikit_events_take moves up to max ids of ended requests to out and
// returns how many it moved.
static size_t iscsikit_events_take(iscsikit_events *e, uint32_t *out, size_t max) {
	pthread_mutex_lock(&e->mu);
	size_t k = e->n < max ? e->n : max;
	memcpy(out, e->ids, k * sizeof *out);
	memmove(e->ids, e->ids + k, (e->n - k) * sizeof *out);
	e->n -= k;
	if (e->n == 0)
		e->armed = 0;
	pthread_mutex_unlock(&e->mu);
	return k;
}

// iscsikit_submit starts one asynchronous request; iscsikit_rbd_cb ends it.
static int iscsikit_submit(rbd_image_t img, int kind, iscsikit_op *o, uint64_t off,
		size_t len, char *buf, size_t dlen) {
	rbd_completion_t c;
	o->ret = 0;
	o->mismatch = 0;
	int r = rbd_aio_create_completion(o, iscsikit_rbd_cb, &c);
	if (r < 0)
		return r;
	switch (kind) {
	case OP_READ: r = rbd_aio_read(img, off, len, buf, c); break;
	case OP_WRITE: r = rbd_aio_write(img, off, len, buf, c); break;
	case OP_DISCARD: r = rbd_aio_discard(img, off, len, c); break;
	case OP_FLUSH: r = rbd_aio_flush(img, c); break;
	case OP_WRITESAME: r = rbd_aio_writesame(img, off, len, buf, dlen, c, 0); break;
	case OP_CAW: r = (int)rbd_aio_compare_and_write(img, off, len, buf, buf + len, c, &o->mismatch, 0); break;
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
	"os"
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
// its C side (where librbd's result lands), a buffer in C memory (librbd
// keeps using it until the request ends, even after the caller gave up),
// and the timer of its deadline.
type op struct {
	d     *Device
	c     *C.iscsikit_op
	state atomic.Int32
	ret   int64
	done  chan struct{}
	timer *time.Timer
	buf   unsafe.Pointer
	cap   int
}

// newOp makes op number id of d (its index in d.all).
func newOp(d *Device, id int) *op {
	c := C.iscsikit_op_new(d.events.ev, C.uint32_t(id))
	if c == nil {
		panic("rbd: out of C memory")
	}
	o := &op{d: d, c: c, done: make(chan struct{}, 1), timer: time.NewTimer(time.Hour)}
	o.timer.Stop()
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

// free releases the op's C memory; the op is not used again.
func (o *op) free() {
	C.free(o.buf)
	C.free(unsafe.Pointer(o.c))
}

// mismatch is where librbd put the image offset of the first byte a
// compare and write found different.
func (o *op) mismatch() uint64 { return uint64(o.c.mismatch) }

// complete records the request's result and wakes its caller, or gives the
// op back to the pool when the caller gave up.
func (o *op) complete() {
	o.ret = int64(o.c.ret)
	if o.state.CompareAndSwap(opPending, opDone) {
		o.done <- struct{}{}
		return
	}
	o.state.Store(opIdle)
	o.d.putOp(o)
}

// completions is where librbd's callbacks record the requests that
// ended (in C) and the eventfd they wake the reaper goroutine with, which
// reads it until stopReaper closes it (and then closes reaped).
type completions struct {
	ev     *C.iscsikit_events
	file   *os.File
	reaped chan struct{}
}

// startReaper sets up d's completions and starts its reaper.
func (d *Device) startReaper() error {
	ev := C.iscsikit_events_new()
	if ev == nil {
		return fmt.Errorf("rbd: open %s: no eventfd for completions", d.name)
	}
	d.events = completions{ev: ev, file: os.NewFile(uintptr(ev.efd), "rbd-completions"), reaped: make(chan struct{})}
	go d.reap()
	return nil
}

// stopReaper ends the reaper once every request has ended (librbd's
// rbd_close waits for them): it takes what is left first.
func (d *Device) stopReaper() {
	d.events.file.Close()
	<-d.events.reaped
	C.iscsikit_events_free(d.events.ev)
}

// takeMax is how many ended requests the reaper takes from C at once.
const takeMax = 256

// reap ends the requests librbd reports through the device's eventfd,
// until Close closes it.
func (d *Device) reap() {
	defer close(d.events.reaped)
	ids := (*[takeMax]C.uint32_t)(C.malloc(C.size_t(takeMax * unsafe.Sizeof(C.uint32_t(0)))))
	defer C.free(unsafe.Pointer(ids))
	var count [8]byte
	for {
		_, err := d.events.file.Read(count[:])
		for {
			k := int(C.iscsikit_events_take(d.events.ev, &ids[0], takeMax))
			for _, id := range ids[:k] {
				d.mu.Lock()
				o := d.all[id]
				d.mu.Unlock()
				o.complete()
			}
			if k < takeMax {
				break
			}
		}
		if err != nil {
			return
		}
	}
}

// submit starts a request of kind on the op's buffer and waits for it
// until the device's deadline. On a nil error the op's result is in o.ret
// and the caller owns the op again (and gives it back with putOp); on an
// error the op is no longer the caller's.
func (d *Device) submit(ctx context.Context, o *op, kind opKind, off int64, length, dataLen int) error {
	o.state.Store(opPending)
	r := C.iscsikit_submit(d.img, C.int(kind), o.c, C.uint64_t(off), C.size_t(length),
		(*C.char)(o.buf), C.size_t(dataLen))
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
