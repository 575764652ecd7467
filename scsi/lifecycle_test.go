package scsi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// stallingDevice holds every ReadAt until release is closed, once armed.
type stallingDevice struct {
	backend.Device
	armed   chan struct{} // receives when a read is held
	release chan struct{}
	closed  chan struct{}
}

func newStalling(size int64) *stallingDevice {
	return &stallingDevice{Device: backend.NewMemory(size), armed: make(chan struct{}, 16), release: make(chan struct{}), closed: make(chan struct{})}
}

func (d *stallingDevice) ReadAt(b []byte, off int64) (int, error) {
	d.armed <- struct{}{}
	<-d.release
	select {
	case <-d.closed:
		return 0, backend.ErrClosed
	default:
	}
	return d.Device.ReadAt(b, off)
}

func (d *stallingDevice) Close() error {
	close(d.closed)
	return d.Device.Close()
}

// readInFlight starts a READ of LUN 0 and returns, where its result
// will go, once the read is held in dev.
func readInFlight(t *testing.T, f *fixture, dev *stallingDevice) <-chan scsi.Result {
	t.Helper()
	done := make(chan scsi.Result, 1)
	go func() {
		cmd := &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: read10(0, 1), DataIn: make([]byte, bs)}
		done <- f.tgt.Execute(context.Background(), cmd)
	}()
	waitFor(t, dev.armed, "the READ to reach the device")
	return done
}

// heldCommand sends TEST UNIT READY through n until one is held (does
// not answer within a moment), and returns where its result will go.
// Those answered before are GOOD.
func heldCommand(t *testing.T, tgt *scsi.Target, n scsi.Nexus) <-chan scsi.Result {
	t.Helper()
	for {
		ch := make(chan scsi.Result, 1)
		go func() {
			ch <- tgt.Execute(context.Background(), &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: []byte{0, 0, 0, 0, 0, 0}})
		}()
		select {
		case res := <-ch:
			require.Equal(t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
		case <-time.After(200 * time.Millisecond):
			return ch
		}
	}
}

// waitFor fails the test unless ch receives within a generous deadline.
func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func TestReopenDrainsAndNeverFailsIO(t *testing.T) {
	dev := newStalling(blocks * bs)
	f := newFixtureOn(t, dev, scsi.UnitConfig{WriteCache: true})
	serial := f.lu.Config().Serial

	// A READ in flight, held in the device.
	readDone := readInFlight(t, f, dev)

	// Reopen on new storage holding other data, with the write cache off.
	next := backend.NewMemory(2 * blocks * bs)
	_, err := next.WriteAt(pattern(bs, 9), 0)
	require.NoError(t, err)
	reopened := make(chan error, 1)
	go func() { reopened <- f.lu.Reopen(context.Background(), next, scsi.UnitConfig{WriteCache: false}) }()

	// A command sent meanwhile waits rather than failing: send TEST UNIT
	// READY until one does not come back at once, as Reopen holds the
	// unit.
	tur := heldCommand(t, f.tgt, nexusB)
	select {
	case <-reopened:
		t.Fatal("Reopen did not wait for the READ in flight")
	default:
	}

	close(dev.release)
	res := waitFor(t, readDone, "the READ")
	require.Equal(t, scsi.StatusGood, res.Status, "the READ in flight completes on the old device: sense %x", res.Sense)
	require.NoError(t, waitFor(t, reopened, "Reopen"))
	select {
	case <-dev.closed:
	default:
		t.Fatal("the old device was not closed")
	}
	res = waitFor(t, tur, "the held command")
	f.requireSense(res, scsi.SenseUnitAttention, 0x2a, 0x09) // capacity doubled: the held command ran on the new unit

	// Every live nexus hears of the new capacity and then of the write
	// cache; the identity stays; the data is the new device's.
	f.requireSense(f.run(nexusA, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseUnitAttention, 0x2a, 0x09)
	f.requireSense(f.run(nexusA, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseUnitAttention, 0x2a, 0x01)
	f.requireSense(f.run(nexusB, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseUnitAttention, 0x2a, 0x01)
	rc := f.good([]byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, 32)
	require.Equal(t, uint64(2*blocks-1), binary.BigEndian.Uint64(rc[0:8]))
	require.Equal(t, pattern(bs, 9), f.good(read10(0, 1), nil, bs))
	require.Equal(t, serial, f.lu.Config().Serial, "a reopen keeps the identity")
	require.Equal(t, uint64(2*blocks), f.lu.Blocks())
}

func TestReopenThatCannotDrainChangesNothing(t *testing.T) {
	dev := newStalling(blocks * bs)
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	readDone := readInFlight(t, f, dev)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	next := backend.NewMemory(blocks * bs)
	err := f.lu.Reopen(ctx, next, scsi.UnitConfig{})
	require.ErrorIs(t, err, scsi.ErrBusy)
	close(dev.release)
	require.Equal(t, scsi.StatusGood, waitFor(t, readDone, "the READ").Status)
	f.good(read10(0, 1), nil, bs) // still served, by the old device

	// A configuration the new device cannot carry is refused up front.
	err = f.lu.Reopen(context.Background(), next, scsi.UnitConfig{ThinProvisioning: true, BlockSize: 520})
	require.ErrorIs(t, err, scsi.ErrInvalidConfig)
}

func TestCloseDrainsAndReroutesHeldCommands(t *testing.T) {
	dev := newStalling(blocks * bs)
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	readDone := readInFlight(t, f, dev)
	closed := make(chan error, 1)
	go func() { closed <- f.lu.Close() }()
	held := heldCommand(t, f.tgt, nexusA)
	// Replace the unit at LUN 0 while the old one drains.
	repl, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{})
	require.NoError(t, err)
	_, err = f.tgt.Detach(0)
	require.NoError(t, err)
	require.NoError(t, f.tgt.Attach(0, repl))
	close(dev.release)
	require.Equal(t, scsi.StatusGood, waitFor(t, readDone, "the READ").Status, "Close let the READ in flight finish")
	require.NoError(t, waitFor(t, closed, "Close"))
	res := waitFor(t, held, "the held command")
	// It ran on the replacement (its first command there: POWER ON
	// OCCURRED).
	f.requireSense(res, scsi.SenseUnitAttention, 0x29, 0x00)
	require.ErrorIs(t, f.lu.Close(), scsi.ErrUnitClosed)
	require.ErrorIs(t, f.lu.Reopen(context.Background(), backend.NewMemory(bs), scsi.UnitConfig{}), scsi.ErrUnitClosed)
}

func TestTargetClose(t *testing.T) {
	shared, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{})
	require.NoError(t, err)
	own, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{})
	require.NoError(t, err)
	a, b := scsi.NewTarget(), scsi.NewTarget()
	require.NoError(t, a.Attach(0, shared))
	require.NoError(t, a.Attach(1, own))
	require.NoError(t, b.Attach(0, shared))
	require.NoError(t, a.Close())
	require.ErrorIs(t, own.Close(), scsi.ErrUnitClosed, "a unit attached nowhere else is closed")
	require.ErrorIs(t, a.Attach(2, shared), scsi.ErrTargetClosed)
	require.Empty(t, a.LUNs())
	res := b.Execute(context.Background(), &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: []byte{0, 0, 0, 0, 0, 0}})
	require.Equal(t, scsi.StatusCheckCondition, res.Status, "the shared unit still serves b (POWER ON OCCURRED)")
	res = b.Execute(context.Background(), &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: []byte{0, 0, 0, 0, 0, 0}})
	require.Equal(t, scsi.StatusGood, res.Status)
	require.NoError(t, b.Close())
	require.True(t, errors.Is(shared.Close(), scsi.ErrUnitClosed))
}

// cachingDevice keeps its writes in a cache of its own until Sync, as a
// device with a volatile write cache (an RBD image with librbd's cache)
// does; Close drops what was not synced. Reads see the cache first.
type cachingDevice struct {
	backend.Device // the storage under the cache
	mu             sync.Mutex
	cache          map[int64][]byte
	synced, closed atomic.Bool
}

func (d *cachingDevice) WriteAt(b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cache[off] = append([]byte(nil), b...)
	d.synced.Store(false)
	return len(b), nil
}

func (d *cachingDevice) ReadAt(b []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.cache[off]; ok && len(c) == len(b) {
		return copy(b, c), nil
	}
	return d.Device.ReadAt(b, off)
}

func (d *cachingDevice) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for off, c := range d.cache {
		if _, err := d.Device.WriteAt(c, off); err != nil {
			return err
		}
	}
	clear(d.cache)
	d.synced.Store(true)
	return nil
}

func (d *cachingDevice) Close() error { d.closed.Store(true); return nil }

// watchedDevice is the new device over the same storage: it counts the
// I/O that reaches it before the old device was synced and closed.
type watchedDevice struct {
	backend.Device
	old   *cachingDevice
	early atomic.Int32
}

func (d *watchedDevice) check() {
	if !d.old.closed.Load() || !d.old.synced.Load() {
		d.early.Add(1)
	}
}

func (d *watchedDevice) ReadAt(b []byte, off int64) (int, error) {
	d.check()
	return d.Device.ReadAt(b, off)
}

func (d *watchedDevice) WriteAt(b []byte, off int64) (int, error) {
	d.check()
	return d.Device.WriteAt(b, off)
}

// TestReopenFlushesOldDeviceFirst: a reopen over the same storage syncs
// and closes the old device before any command reaches the new one, so
// what initiators wrote through a write cache reads back, also for a
// command that waited through the reopen.
func TestReopenFlushesOldDeviceFirst(t *testing.T) {
	storage := backend.NewMemory(blocks * bs)
	old := &cachingDevice{Device: storage, cache: map[int64][]byte{}}
	f := newFixtureOn(t, old, scsi.UnitConfig{WriteCache: true})
	f.good(write10(0, 1), pattern(bs, 5), 0)

	next := &watchedDevice{Device: storage, old: old}
	r, err := f.lu.PrepareReopen(context.Background(), next, scsi.UnitConfig{WriteCache: true})
	require.NoError(t, err)
	// A READ sent while the unit is held for the reopen runs after it.
	in := make([]byte, bs)
	done := make(chan scsi.Result, 1)
	go func() {
		done <- f.tgt.Execute(context.Background(), &scsi.Command{Nexus: nexusB, LUN: scsi.EncodeLUN(0), CDB: read10(0, 1), DataIn: in})
	}()
	require.NoError(t, r.Commit())
	res := waitFor(t, done, "the READ")
	require.Equal(t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
	require.Equal(t, pattern(bs, 5), in, "the write cached by the old device reads back through the new one")
	require.Equal(t, pattern(bs, 5), f.good(read10(0, 1), nil, bs))
	require.Zero(t, next.early.Load(), "no I/O reached the new device before the old one was synced and closed")
}
