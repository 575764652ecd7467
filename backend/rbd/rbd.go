//go:build ceph

package rbd

/*
#include <stdlib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ceph/go-ceph/rados"

	"github.com/iscsikit/iscsikit/backend"
)

// DefaultTimeout is the deadline of one request when Options.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// Options says which image Open opens and how it reaches the cluster.
type Options struct {
	// ConfigFile is a ceph.conf to read first; empty reads none, and then
	// Monitors must be set.
	ConfigFile string
	// Monitors are the monitor addresses (mon_host), comma separated;
	// they override the config file's.
	Monitors string
	// User is the client name without "client." (default "admin").
	User string
	// Keyring is the keyring file holding the user's key; it overrides
	// the config file's.
	Keyring string
	// Pool and Image name the RBD image. Both are required.
	Pool, Image string
	// Timeout bounds connecting and every request (default
	// DefaultTimeout). It is also given to librados as
	// rados_osd_op_timeout and rados_mon_op_timeout, so librados gives up
	// on its own as well.
	Timeout time.Duration
	// ReadOnly opens the image read-only; writes fail with
	// backend.ErrReadOnly.
	ReadOnly bool
	// NoCache turns librbd's cache off (rbd_cache=false): every write
	// goes to the cluster before it completes and no read is served
	// from this client's memory, which is what two gateways exporting
	// one image need (each would otherwise read its own stale cache).
	NoCache bool
}

// Validate checks the options Open needs, without contacting the cluster.
func (o Options) Validate() error {
	if o.Image == "" && o.Pool != "" {
		return errors.New("rbd: no image")
	}
	return o.validatePool()
}

// validatePool checks the options that name a pool and reach the cluster.
func (o Options) validatePool() error {
	switch {
	case o.Pool == "":
		return errors.New("rbd: no pool")
	case o.ConfigFile == "" && o.Monitors == "":
		return errors.New("rbd: neither a config file nor monitor addresses")
	case o.Timeout < 0:
		return fmt.Errorf("rbd: negative timeout %v", o.Timeout)
	}
	return nil
}

func (o Options) timeout() time.Duration {
	if o.Timeout == 0 {
		return DefaultTimeout
	}
	return o.Timeout
}

// connect opens a RADOS connection and an I/O context on the pool.
func connect(ctx context.Context, o Options) (*rados.Conn, *rados.IOContext, error) {
	if err := o.validatePool(); err != nil {
		return nil, nil, err
	}
	user := o.User
	if user == "" {
		user = "admin"
	}
	conn, err := rados.NewConnWithUser(user)
	if err != nil {
		return nil, nil, fmt.Errorf("rbd: %w", err)
	}
	fail := func(err error) (*rados.Conn, *rados.IOContext, error) {
		conn.Shutdown()
		return nil, nil, err
	}
	if o.ConfigFile != "" {
		if err := conn.ReadConfigFile(o.ConfigFile); err != nil {
			return fail(fmt.Errorf("rbd: read %s: %w", o.ConfigFile, err))
		}
	}
	secs := strconv.Itoa(max(1, int(o.timeout().Round(time.Second)/time.Second)))
	set := [][2]string{
		{"mon_host", o.Monitors},
		{"keyring", o.Keyring},
		{"rados_osd_op_timeout", secs},
		{"rados_mon_op_timeout", secs},
		{"client_mount_timeout", secs},
		// A discard must leave zeroes behind however small it is (the
		// SCSI unit reports LBPRZ), so partial objects are zeroed rather
		// than skipped.
		{"rbd_skip_partial_discard", "false"},
		{"rbd_cache", map[bool]string{false: "", true: "false"}[o.NoCache]},
		// No log file or admin socket of the embedding process's own.
		{"log_file", ""},
		{"admin_socket", ""},
	}
	for _, kv := range set {
		if kv[1] == "" && kv[0] != "log_file" && kv[0] != "admin_socket" {
			continue
		}
		if err := conn.SetConfigOption(kv[0], kv[1]); err != nil {
			return fail(fmt.Errorf("rbd: set %s: %w", kv[0], err))
		}
	}
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Connect ends by itself within client_mount_timeout; the
		// connection is shut down then.
		go func() {
			if <-done == nil {
				conn.Shutdown()
			}
		}()
		return nil, nil, fmt.Errorf("rbd: connect: %w", ctx.Err())
	}
	if err != nil {
		return nil, nil, fmt.Errorf("rbd: connect to the cluster: %w: %w", backend.ErrNotReady, err)
	}
	ioctx, err := conn.OpenIOContext(o.Pool)
	if err != nil {
		return fail(fmt.Errorf("rbd: pool %q: %w", o.Pool, err))
	}
	return conn, ioctx, nil
}

// Create makes an image of size bytes with the cluster's default features
// and object size. It fails if the image exists.
func Create(ctx context.Context, o Options, size int64) error {
	if err := o.Validate(); err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("rbd: image size %d is not positive", size)
	}
	conn, ioctx, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	defer ioctx.Destroy()
	name := C.CString(o.Image)
	defer C.free(unsafe.Pointer(name))
	var order C.int
	if r := C.rbd_create(C.rados_ioctx_t(ioctx.Pointer()), name, C.uint64_t(size), &order); r < 0 {
		return fmt.Errorf("rbd: create %s/%s: %w", o.Pool, o.Image, errnoErr(r))
	}
	return nil
}

// Remove deletes an image and its data.
func Remove(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	conn, ioctx, err := connect(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Shutdown()
	defer ioctx.Destroy()
	name := C.CString(o.Image)
	defer C.free(unsafe.Pointer(name))
	prObject := reservationObject(ioctx, o.Image)
	if r := C.rbd_remove(C.rados_ioctx_t(ioctx.Pointer()), name); r < 0 {
		return fmt.Errorf("rbd: remove %s/%s: %w", o.Pool, o.Image, errnoErr(r))
	}
	if err := removeReservationObject(ioctx, prObject); err != nil {
		return err
	}
	return nil
}

// ErrNoPoolStats is returned by PoolSpace when the cluster reports no
// statistics for the pool, as a cluster without a running ceph-mgr does.
var ErrNoPoolStats = errors.New("the cluster reports no statistics for the pool (is a ceph-mgr running?)")

// PoolSpace reports the space of the Ceph pool o.Pool as ceph df does
// (the monitor's "df" command, from the manager's statistics): free is the
// pool's MAX AVAIL, the bytes that can still be stored in it once
// replication is counted and before its fullest OSD fills; size is the
// bytes stored in it (STORED, before replication) plus free. o.Image is
// not used.
func PoolSpace(ctx context.Context, o Options) (size, free int64, err error) {
	conn, ioctx, err := connect(ctx, o)
	if err != nil {
		return 0, 0, err
	}
	ioctx.Destroy() // it showed the pool exists
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, status, err := conn.MonCommand([]byte(`{"prefix": "df", "format": "json"}`))
		if err != nil && status != "" {
			err = fmt.Errorf("%w: %s", err, status)
		}
		done <- result{out, err}
	}()
	var r result
	select {
	case r = <-done:
		conn.Shutdown()
	case <-ctx.Done():
		// The command ends by itself within rados_mon_op_timeout; the
		// connection is shut down then.
		go func() {
			<-done
			conn.Shutdown()
		}()
		return 0, 0, fmt.Errorf("rbd: pool %q: df: %w", o.Pool, ctx.Err())
	}
	if r.err != nil {
		return 0, 0, fmt.Errorf("rbd: pool %q: df: %w", o.Pool, r.err)
	}
	var df struct {
		Pools []struct {
			Name  string `json:"name"`
			Stats struct {
				Stored   int64 `json:"stored"`
				MaxAvail int64 `json:"max_avail"`
			} `json:"stats"`
		} `json:"pools"`
	}
	if err := json.Unmarshal(r.out, &df); err != nil {
		return 0, 0, fmt.Errorf("rbd: pool %q: df: %w", o.Pool, err)
	}
	for _, p := range df.Pools {
		if p.Name == o.Pool {
			return p.Stats.Stored + p.Stats.MaxAvail, p.Stats.MaxAvail, nil
		}
	}
	return 0, 0, fmt.Errorf("rbd: pool %q: %w", o.Pool, ErrNoPoolStats)
}

// errnoErr is librbd's negative errno r as an error.
func errnoErr(r C.int) error { return syscall.Errno(-r) }

// Device is a backend.Device over an open RBD image. It implements
// backend.ContextDevice, backend.Unmapper (discard), backend.AllocationReporter (from
// rbd_diff_iterate2), backend.SameWriter and backend.CompareWriter (in the
// cluster: atomic for every client of the image, within the one 512-byte
// sector backend.CompareSpanner reports) and backend.AtomicSpanner (writes
// within one stripe unit are atomic for every client).
type Device struct {
	conn     *rados.Conn
	ioctx    *rados.IOContext
	img      C.rbd_image_t
	name     string
	size     atomic.Int64
	objSize  int64
	fastDiff bool // the object map tells which objects exist
	// stripeUnit is the image's stripe unit in bytes (the object size
	// unless the image is striped).
	stripeUnit int64
	readOnly   bool
	timeout    time.Duration
	closed     atomic.Bool

	// inflight counts the requests in librbd whose callers wait.
	inflight atomic.Int32

	mu    sync.Mutex
	free  []*op
	limbo []*op // given up on while waited for in C, maybe still in librbd
	all   []*op
	// calls counts the synchronous librbd calls run in goroutines of
	// their own (diff, resize), which Close waits for even when their
	// caller stopped waiting.
	calls sync.WaitGroup
	// pr is the image's reservation store, made by ReservationStore;
	// guarded by mu.
	pr *ReservationStore
}

// Open connects to the cluster and opens the image.
func Open(ctx context.Context, o Options) (*Device, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	conn, ioctx, err := connect(ctx, o)
	if err != nil {
		return nil, err
	}
	d := &Device{conn: conn, ioctx: ioctx, name: o.Pool + "/" + o.Image, readOnly: o.ReadOnly, timeout: o.timeout()}
	name := C.CString(o.Image)
	defer C.free(unsafe.Pointer(name))
	var r C.int
	if o.ReadOnly {
		r = C.rbd_open_read_only(C.rados_ioctx_t(ioctx.Pointer()), name, &d.img, nil)
	} else {
		r = C.rbd_open(C.rados_ioctx_t(ioctx.Pointer()), name, &d.img, nil)
	}
	if r < 0 {
		ioctx.Destroy()
		conn.Shutdown()
		return nil, fmt.Errorf("rbd: open %s: %w", d.name, errnoErr(r))
	}
	var size C.uint64_t
	if r := C.rbd_get_size(d.img, &size); r < 0 {
		d.Close()
		return nil, fmt.Errorf("rbd: size of %s: %w", d.name, errnoErr(r))
	}
	if size == 0 {
		d.Close()
		return nil, fmt.Errorf("rbd: %s is empty", d.name)
	}
	var info C.rbd_image_info_t
	if r := C.rbd_stat(d.img, &info, C.size_t(unsafe.Sizeof(info))); r < 0 {
		d.Close()
		return nil, fmt.Errorf("rbd: stat %s: %w", d.name, errnoErr(r))
	}
	d.objSize = max(int64(info.obj_size), 4096)
	var su C.uint64_t
	if r := C.rbd_get_stripe_unit(d.img, &su); r < 0 {
		d.Close()
		return nil, fmt.Errorf("rbd: stripe unit of %s: %w", d.name, errnoErr(r))
	}
	d.stripeUnit = int64(su)
	var features, flags C.uint64_t
	if C.rbd_get_features(d.img, &features) == 0 && C.rbd_get_flags(d.img, &flags) == 0 {
		d.fastDiff = features&C.RBD_FEATURE_FAST_DIFF != 0 && flags&C.RBD_FLAG_FAST_DIFF_INVALID == 0
	}
	d.size.Store(int64(size))
	return d, nil
}

// mapObjects is how many objects one Allocation call looks up in the
// object map (one read of the map, whatever the count).
const mapObjects = 4096

// Name returns "pool/image".
func (d *Device) Name() string { return d.name }

// Size reports the image's size in bytes as of Open or the last Resize.
func (d *Device) Size() int64 { return d.size.Load() }

// Timeout reports the deadline of one request.
func (d *Device) Timeout() time.Duration { return d.timeout }

func (d *Device) getOp(n int) *op {
	d.mu.Lock()
	if len(d.free) == 0 && len(d.limbo) > 0 {
		kept := d.limbo[:0]
		for _, o := range d.limbo {
			if o.idle() {
				d.free = append(d.free, o)
			} else {
				kept = append(kept, o)
			}
		}
		clear(d.limbo[len(kept):])
		d.limbo = kept
	}
	var o *op
	if k := len(d.free); k > 0 {
		o = d.free[k-1]
		d.free = d.free[:k-1]
	} else {
		o = newOp(d)
		d.all = append(d.all, o)
	}
	d.mu.Unlock()
	o.reserve(n)
	return o
}

func (d *Device) putOp(o *op) {
	d.mu.Lock()
	d.free = append(d.free, o)
	d.mu.Unlock()
}

func (d *Device) check(off, n int64, write bool) error {
	if d.closed.Load() {
		return backend.ErrClosed
	}
	if write && d.readOnly {
		return backend.ErrReadOnly
	}
	if size := d.size.Load(); off < 0 || n < 0 || off > size || n > size-off {
		return backend.ErrOutOfRange
	}
	return nil
}

// result returns a finished request's result, or its error.
func (d *Device) result(o *op, kind opKind) (int64, error) {
	if o.ret < 0 {
		return 0, d.errno(kind, o.ret)
	}
	return o.ret, nil
}

// ReadAt reads len(p) bytes at off in one asynchronous request.
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	return d.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that stops waiting when ctx ends (the command
// was aborted) and returns ctx's error; librbd keeps the request's own
// buffer until the request ends.
func (d *Device) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p)), false); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	o := d.getOp(len(p))
	if err := d.submit(ctx, o, opRead, off, len(p), 0); err != nil {
		return 0, err
	}
	defer d.putOp(o)
	n, err := d.result(o, opRead)
	if err != nil {
		return 0, err
	}
	if n != int64(len(p)) {
		return int(n), fmt.Errorf("rbd: %s: short read of %d of %d bytes at %d", d.name, n, len(p), off)
	}
	copy(p, o.bytes(len(p)))
	return len(p), nil
}

// WriteAt writes p at off in one asynchronous request. The write is
// durable after the next Sync (librbd may hold it in its cache).
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	return d.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext is WriteAt that stops waiting when ctx ends (the command
// was aborted) and returns ctx's error. The write may still happen: the
// request stays with librbd.
func (d *Device) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p)), true); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	o := d.getOp(len(p))
	copy(o.bytes(len(p)), p)
	if err := d.submit(ctx, o, opWrite, off, len(p), 0); err != nil {
		return 0, err
	}
	defer d.putOp(o)
	if _, err := d.result(o, opWrite); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync flushes librbd's cache to the cluster (rbd_aio_flush): every write
// that completed before it is then durable.
func (d *Device) Sync() error {
	ctx := context.Background()
	if d.closed.Load() {
		return backend.ErrClosed
	}
	o := d.getOp(0)
	if err := d.submit(ctx, o, opFlush, 0, 0, 0); err != nil {
		return err
	}
	defer d.putOp(o)
	_, err := d.result(o, opFlush)
	return err
}

// Unmap discards [off, off+length): whole objects are removed, partial
// ones zeroed, so the range reads back as zeroes.
func (d *Device) Unmap(off, length int64) error {
	ctx := context.Background()
	if err := d.check(off, length, true); err != nil || length == 0 {
		return err
	}
	o := d.getOp(0)
	if err := d.submit(ctx, o, opDiscard, off, int(length), 0); err != nil {
		return err
	}
	defer d.putOp(o)
	_, err := d.result(o, opDiscard)
	return err
}

// WriteSame writes block over [off, off+length) in one request
// (rbd_aio_writesame); length must be a multiple of len(block).
func (d *Device) WriteSame(block []byte, off, length int64) error {
	ctx := context.Background()
	if err := d.check(off, length, true); err != nil || length == 0 {
		return err
	}
	if len(block) == 0 || length%int64(len(block)) != 0 {
		return fmt.Errorf("rbd: %s: write same of %d bytes with a %d-byte block", d.name, length, len(block))
	}
	o := d.getOp(len(block))
	copy(o.bytes(len(block)), block)
	if err := d.submit(ctx, o, opWriteSame, off, int(length), len(block)); err != nil {
		return err
	}
	defer d.putOp(o)
	_, err := d.result(o, opWriteSame)
	return err
}

// casSector is the span librbd compares and writes atomically: Ceph 16
// takes rbd_aio_compare_and_write only within one 512-byte sector (and
// one stripe unit), and fails longer ranges with EINVAL
// (ImageCompareAndWriteRequest::prune_object_extents), as tcmu-runner's
// rbd handler, which offers one block, expects.
const casSector = 512

// CompareAndWriteSpan reports the span CompareAndWrite takes atomically
// (backend.CompareSpanner): one 512-byte sector, or none when the image's
// stripe unit is not a multiple of it. Every client of the image shares
// the span, so a SCSI unit over the device offers COMPARE AND WRITE of one
// 512-byte block, and none on a 4096-byte-block unit.
func (d *Device) CompareAndWriteSpan() int64 {
	if d.stripeUnit%casSector != 0 {
		return 0
	}
	return casSector
}

// AtomicWriteSpan reports the span within which a write is atomic for
// every client of the image (backend.AtomicSpanner): the stripe unit,
// which is the object size unless the image is striped. librbd turns a
// write within one stripe unit into one write of one RADOS object, which
// the OSD applies whole; a write crossing it becomes one operation per
// object, and a client of another gateway may read between them.
func (d *Device) AtomicWriteSpan() int64 { return d.stripeUnit }

// CompareAndWrite writes data at off if the image holds cmp there, as one
// operation of the cluster (rbd_aio_compare_and_write): no other client of
// the image can change the range between the compare and the write. On a
// mismatch it returns a *backend.MiscompareError with the offset in cmp of
// the first byte that differs. A range that crosses a 512-byte sector
// (CompareAndWriteSpan), which librbd refuses, gets an error wrapping
// errors.ErrUnsupported.
func (d *Device) CompareAndWrite(cmp, data []byte, off int64) error {
	ctx := context.Background()
	if len(cmp) != len(data) {
		return fmt.Errorf("rbd: %s: compare and write of %d bytes against %d", d.name, len(data), len(cmp))
	}
	if err := d.check(off, int64(len(data)), true); err != nil || len(data) == 0 {
		return err
	}
	if span := d.CompareAndWriteSpan(); span == 0 || off%span+int64(len(data)) > span {
		return fmt.Errorf("rbd: %s: compare and write of %d bytes at %d crosses a %d-byte span: %w",
			d.name, len(data), off, d.CompareAndWriteSpan(), errors.ErrUnsupported)
	}
	n := len(data)
	o := d.getOp(2 * n)
	buf := o.bytes(2 * n)
	copy(buf, cmp)
	copy(buf[n:], data)
	if err := d.submit(ctx, o, opCAW, off, n, 0); err != nil {
		return err
	}
	defer d.putOp(o)
	if o.ret == -int64(syscall.EILSEQ) {
		// librbd reports the image offset of the first differing byte.
		at := int64(o.mismatch())
		if at >= off {
			at -= off
		}
		return &backend.MiscompareError{Offset: min(at, int64(n-1))}
	}
	_, err := d.result(o, opCAW)
	return err
}

// Allocation reports whether off lies in an object of the image that
// exists (data) or in one that does not (never written, or discarded
// whole), and how far that run extends, from rbd_diff_iterate2 against
// the image's beginning. It knows objects, not bytes: librbd reports an
// object that exists as data throughout, even where a discard zeroed part
// of it. Each call costs the cluster one request, never a walk of the
// whole image, because QEMU (with cache.direct) asks GET LBA STATUS before
// every read of 32 KiB or more it does not know to be allocated: with
// fast-diff the object map tells up to mapObjects objects at once;
// without it only the object holding off is looked at, and the run
// reported ends with that object at the latest.
func (d *Device) Allocation(off int64) (bool, int64, error) {
	if err := d.check(off, 1, false); err != nil {
		return false, 0, err
	}
	size := d.size.Load()
	end := min(size, (off/d.objSize+1)*d.objSize)
	if d.fastDiff {
		end = min(size, off+mapObjects*d.objSize)
	}
	s, err := d.scan(off, end, d.fastDiff)
	if err != nil {
		return false, 0, err
	}
	return s.allocated, s.end - off, nil
}

// scan runs rbd_diff_iterate2 from off to end, within the device's
// deadline, and returns the run off lies in, clipped to end.
func (d *Device) scan(off, end int64, whole bool) (*diffScan, error) {
	s := &diffScan{start: off}
	done := make(chan int, 1)
	d.calls.Go(func() { done <- d.diff(s, off, end-off, whole) })
	t := time.NewTimer(d.timeout)
	defer t.Stop()
	var r int
	select {
	case r = <-done:
	case <-t.C:
		return nil, fmt.Errorf("rbd: %s: allocation at %d: no answer from the cluster within %v: %w",
			d.name, off, d.timeout, backend.ErrNotReady)
	}
	if r < 0 && r != errStop {
		return nil, d.errno(opRead, int64(r))
	}
	if !s.found {
		s.allocated, s.end = false, end
	}
	s.end = min(s.end, end)
	return s, nil
}

// Resize changes the image's size (rbd_resize); shrinking discards the
// data beyond the new end.
func (d *Device) Resize(ctx context.Context, size int64) error {
	if d.closed.Load() {
		return backend.ErrClosed
	}
	if d.readOnly {
		return backend.ErrReadOnly
	}
	if size <= 0 {
		return fmt.Errorf("rbd: %s: size %d is not positive", d.name, size)
	}
	done := make(chan C.int, 1)
	d.calls.Go(func() { done <- C.rbd_resize(d.img, C.uint64_t(size)) })
	select {
	case r := <-done:
		if r < 0 {
			return d.errno(opWrite, int64(r))
		}
	case <-ctx.Done():
		return fmt.Errorf("rbd: %s: resize: %w", d.name, ctx.Err())
	}
	d.size.Store(size)
	return nil
}

// Close closes the image (librbd waits for the requests still in flight,
// and Close for the allocation scans and resizes) and the cluster
// connection. Later calls fail with backend.ErrClosed.
func (d *Device) Close() error {
	if d.closed.Swap(true) {
		return backend.ErrClosed
	}
	d.mu.Lock()
	pr := d.pr
	d.mu.Unlock()
	if pr != nil {
		pr.close() // its watches end before the connection does
	}
	d.calls.Wait()
	r := C.rbd_close(d.img)
	d.mu.Lock()
	for _, o := range d.all {
		o.free()
	}
	d.all, d.free, d.limbo = nil, nil, nil
	d.mu.Unlock()
	d.ioctx.Destroy()
	d.conn.Shutdown()
	if r < 0 {
		return fmt.Errorf("rbd: close %s: %w", d.name, errnoErr(r))
	}
	return nil
}
