//go:build ceph

package rbd

/*
#include <stdlib.h>
#include <rbd/librbd.h>
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// ReservationStore keeps the persistent reservations of one image where
// every gateway exporting the image shares them: in the RADOS object
// "iscsikit_pr.<image id>" of the image's pool (the id survives a
// rename of the image). It implements scsi.SharedStateStore (Go
// interfaces need no import): the bytes are the object's data, the
// version its RADOS object version; a swap is one write operation that
// asserts that version (or, for the first state, creates the object
// exclusively), so of two gateways swapping from the same version
// exactly one wins. Object versions are the placement group's, so they
// keep growing even when the object is removed and made again. Each swap
// then notifies the object's watchers and
// waits up to the notify timeout for their acknowledgements, which
// they give after their change callback ran.
//
// Its calls run on an IOContext of its own on the device's cluster
// connection; Device.Close ends its watches and closes it.
type ReservationStore struct {
	ioctx   *rados.IOContext
	oid     string
	timeout time.Duration
	// notifyTimeout bounds how long a swap waits for the watchers.
	notifyTimeout time.Duration

	// mu serializes the operations whose object version is read with
	// GetLastVersion (per IOContext) after them.
	mu sync.Mutex
	// lost counts the watches the cluster ended (re-established since).
	lost atomic.Int64
	// watches holds the stop functions of the running watches.
	wmu     sync.Mutex
	watches map[int]func()
	nextW   int
	closed  bool
}

// reservationObjectPrefix starts the name of an image's reservation
// object.
const reservationObjectPrefix = "iscsikit_pr."

// notifyTimeout is how long a swap waits for the other gateways to
// acknowledge the change.
const notifyTimeout = 5 * time.Second

// reservationObject names the reservation object of the image called
// name, from the image's id object ("rbd_id.<name>": the id as a
// length-prefixed string), or "" if that cannot be read.
func reservationObject(ioctx *rados.IOContext, name string) string {
	var b [128]byte
	n, err := ioctx.Read("rbd_id."+name, b[:], 0)
	if err != nil || n < 4 {
		return ""
	}
	l := int(binary.LittleEndian.Uint32(b[:4]))
	if l == 0 || 4+l > n {
		return ""
	}
	return reservationObjectPrefix + string(b[4:4+l])
}

// removeReservationObject deletes the reservation object of a removed
// image, if it has one.
func removeReservationObject(ioctx *rados.IOContext, oid string) error {
	if oid == "" {
		return nil
	}
	if err := ioctx.Delete(oid); err != nil && !errors.Is(err, rados.ErrNotFound) {
		return fmt.Errorf("rbd: removing the reservations %s of a removed image: %w", oid, err)
	}
	return nil
}

// ReservationStore returns the image's reservation store, made on the
// first call.
func (d *Device) ReservationStore() (*ReservationStore, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		return nil, fmt.Errorf("rbd: %s: reservation store of a closed device", d.name)
	}
	if d.pr != nil {
		return d.pr, nil
	}
	var buf [64]C.char
	if r := C.rbd_get_id(d.img, &buf[0], C.size_t(len(buf))); r < 0 {
		return nil, fmt.Errorf("rbd: id of %s: %w", d.name, errnoErr(r))
	}
	id := C.GoString(&buf[0])
	pool, err := d.ioctx.GetPoolName()
	if err != nil {
		return nil, fmt.Errorf("rbd: pool of %s: %w", d.name, err)
	}
	ioctx, err := d.conn.OpenIOContext(pool)
	if err != nil {
		return nil, fmt.Errorf("rbd: reservation store of %s: %w", d.name, err)
	}
	d.pr = &ReservationStore{ioctx: ioctx, oid: reservationObjectPrefix + id, timeout: d.timeout,
		notifyTimeout: min(notifyTimeout, d.timeout), watches: map[int]func(){}}
	return d.pr, nil
}

// Object names the RADOS object the store keeps the state in.
func (s *ReservationStore) Object() string { return s.oid }

// LostWatches counts the watches the cluster ended, each re-established
// and followed by a full reload.
func (s *ReservationStore) LostWatches() int64 { return s.lost.Load() }

// call runs f in a goroutine of its own and waits for it or ctx (the
// librados calls take no context; they end by themselves within the
// timeouts the connection was given).
func (s *ReservationStore) call(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("rbd: reservation object %s: %w", s.oid, ctx.Err())
	}
}

// maxState bounds the state the store reads.
const maxState = 1 << 20

// Load returns the object's data and version: nil and 0 while the object
// does not exist.
func (s *ReservationStore) Load(ctx context.Context) ([]byte, uint64, error) {
	var data []byte
	var ver uint64
	err := s.call(ctx, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		buf := make([]byte, 64<<10)
		for {
			n, err := s.ioctx.Read(s.oid, buf, 0)
			if errors.Is(err, rados.ErrNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("rbd: reading %s: %w", s.oid, err)
			}
			if n == len(buf) && len(buf) < maxState {
				buf = make([]byte, 2*len(buf))
				continue
			}
			if ver, err = s.ioctx.GetLastVersion(); err != nil {
				return fmt.Errorf("rbd: version of %s: %w", s.oid, err)
			}
			if n > 0 {
				data = buf[:n]
			}
			return nil
		}
	})
	return data, ver, err
}

// CompareAndSwap writes data if the object's version is still version
// (0: the object does not exist yet), then notifies the watchers and
// waits for them (at most the notify timeout; a watcher that does not
// answer in time is not waited for further). It returns swapped false
// when another writer changed the object first.
func (s *ReservationStore) CompareAndSwap(ctx context.Context, version uint64, data []byte) (uint64, bool, error) {
	var nv uint64
	var swapped bool
	err := s.call(ctx, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		op := rados.CreateWriteOp()
		defer op.Release()
		if version == 0 {
			op.Create(rados.CreateExclusive)
		} else {
			op.AssertVersion(version)
		}
		op.WriteFull(data)
		err := op.Operate(s.ioctx, s.oid, rados.OperationNoFlag)
		if staleVersion(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("rbd: writing %s: %w", s.oid, err)
		}
		swapped = true
		nv, err = s.ioctx.GetLastVersion()
		return err
	})
	if err != nil || !swapped {
		return 0, false, err
	}
	// The watchers reload from the object; the notify carries nothing.
	// Its timeouts are theirs to recover from (they reload on a lost
	// watch and every poll), the swap itself is in.
	_ = s.call(ctx, func() error {
		_, _, err := s.ioctx.NotifyWithTimeout(s.oid, nil, s.notifyTimeout)
		return err
	})
	return nv, true, nil
}

// staleVersion reports whether a write failed on its version assertion
// (ERANGE: the object is newer, EOVERFLOW: older) or its exclusive
// create (EEXIST), or found the object gone (ENOENT).
func staleVersion(err error) bool {
	var ce interface{ ErrorCode() int }
	if !errors.As(err, &ce) {
		return false
	}
	switch -ce.ErrorCode() {
	case int(syscall.ERANGE), int(syscall.EOVERFLOW), int(syscall.EEXIST), int(syscall.ENOENT):
		return true
	}
	return false
}

// watch makes sure the object exists (a watch needs one; an empty object
// is no state) and watches it.
func (s *ReservationStore) watch() (*rados.Watcher, error) {
	var w *rados.Watcher
	err := s.call(context.Background(), func() error {
		op := rados.CreateWriteOp()
		defer op.Release()
		op.Create(rados.CreateIdempotent)
		if err := op.Operate(s.ioctx, s.oid, rados.OperationNoFlag); err != nil {
			return fmt.Errorf("rbd: creating %s: %w", s.oid, err)
		}
		var err error
		w, err = s.ioctx.WatchWithTimeout(s.oid, s.timeout)
		if err != nil {
			return fmt.Errorf("rbd: watching %s: %w", s.oid, err)
		}
		return nil
	})
	return w, err
}

// Watch calls changed after every notification of the object, before it
// acknowledges it, and after a watch the cluster ended (an OSD that lost
// the client, the object removed) was re-established, since changes may
// have been missed meanwhile. The returned stop ends the watch and waits
// for a running callback.
func (s *ReservationStore) Watch(changed func()) (func(), error) {
	s.wmu.Lock()
	closed := s.closed
	s.wmu.Unlock()
	if closed {
		return nil, fmt.Errorf("rbd: watching %s: the device is closed", s.oid)
	}
	w, err := s.watch()
	if err != nil {
		return nil, err
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go s.follow(w, changed, stop, done)
	var once sync.Once
	end := func() {
		once.Do(func() {
			close(stop)
			<-done
		})
	}
	s.wmu.Lock()
	id := s.nextW
	s.nextW++
	s.watches[id] = end
	s.wmu.Unlock()
	return func() {
		end()
		s.wmu.Lock()
		delete(s.watches, id)
		s.wmu.Unlock()
	}, nil
}

// follow serves the watch w until stop, re-watching when it is lost.
func (s *ReservationStore) follow(w *rados.Watcher, changed func(), stop, done chan struct{}) {
	defer close(done)
	for {
		lost := s.serve(w, changed, stop)
		_ = w.Delete()
		if !lost {
			return
		}
		s.lost.Add(1)
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			select {
			case <-stop:
				return
			case <-time.After(backoff):
			}
			var err error
			if w, err = s.watch(); err == nil {
				break
			}
		}
		changed()
	}
}

// serve runs changed for each notification on w until stop (false) or
// until the watch is lost (true).
func (s *ReservationStore) serve(w *rados.Watcher, changed func(), stop chan struct{}) bool {
	for {
		select {
		case <-stop:
			return false
		case ne, ok := <-w.Events():
			if !ok {
				return true
			}
			changed()
			_ = ne.Ack(nil)
		case _, ok := <-w.Errors():
			_ = ok
			return true
		}
	}
}

// close ends the watches and the IOContext (Device.Close).
func (s *ReservationStore) close() {
	s.wmu.Lock()
	ends := make([]func(), 0, len(s.watches))
	for _, end := range s.watches {
		ends = append(ends, end)
	}
	s.watches = map[int]func(){}
	s.closed = true
	s.wmu.Unlock()
	for _, end := range ends {
		end()
	}
	s.mu.Lock()
	s.ioctx.Destroy()
	s.mu.Unlock()
}
