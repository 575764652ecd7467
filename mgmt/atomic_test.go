package mgmt

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// failingStore is a MemoryStore whose Save fails while fail is set.
type failingStore struct {
	MemoryStore
	fail atomic.Bool
}

var errDiskFull = errors.New("disk full")

func (s *failingStore) Save(ctx context.Context, cfg *Config) error {
	if s.fail.Load() {
		return errDiskFull
	}
	return s.MemoryStore.Save(ctx, cfg)
}

// failingOpener opens memory, and fails while fail is set.
type failingOpener struct{ fail *atomic.Bool }

func (failingOpener) Check(e Extent) error    { return FileOpener{}.Check(e) }
func (failingOpener) Storage(e Extent) string { return FileOpener{}.Storage(e) }
func (o failingOpener) Open(e Extent) (backend.Device, error) {
	if o.fail.Load() {
		return nil, errors.New("storage offline")
	}
	return memoryOpen(e)
}

// TestFailedApplyChangesNothing is bug 6: a change that fails, at its
// save or opening storage or adding a target, leaves the served state and
// the store as they were; no session ends, no LUN goes.
func TestFailedApplyChangesNothing(t *testing.T) {
	store := &failingStore{}
	var openFails atomic.Bool
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "lun0", "/srv/lun0.img", 1<<20
	m, addr, id := serveLUN(t, Options{Store: store, Openers: map[string]Opener{ExtentFile: failingOpener{&openFails}}}, e)
	srv := m.opt.Server
	tg, _ := find(m.Config(false).Targets, 1)
	e, _ = find(m.Config(false).Extents, id)

	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":t"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }))
	alive := func() {
		t.Helper()
		select {
		case <-c.Done():
			t.Fatal("the session ended")
		default:
		}
		require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }))
	}
	before := m.Config(true)
	saved, err := store.Load(ctx)
	require.NoError(t, err)

	// A save that fails: a new alias would end the target's sessions
	// (the target is served again), an extent setting reopens the unit.
	store.fail.Store(true)
	_, err = m.UpdateTarget(ctx, tg.ID, func(t *Target) error { t.Alias = "renamed"; return nil })
	require.ErrorIs(t, err, errDiskFull)
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.RO = true; return nil })
	require.ErrorIs(t, err, errDiskFull)
	err = m.DeleteTargetExtent(ctx, 1)
	require.ErrorIs(t, err, errDiskFull)
	store.fail.Store(false)
	alive()
	require.False(t, m.app.units[e.ID].lu.Config().ReadOnly, "the refused reopen was not made")

	// Storage that fails to open on a reopen.
	openFails.Store(true)
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.RO = true; return nil })
	require.ErrorContains(t, err, "storage offline")
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "lun0", me.Name)
	openFails.Store(false)
	alive()

	// A target name the embedder serves on the same server itself.
	own := &iscsi.Target{Name: DefaultBasename + ":mine", Device: scsi.NewTarget()}
	require.NoError(t, srv.AddTarget(own))
	mine := NewTarget()
	mine.Name = "mine"
	_, err = m.CreateTarget(ctx, mine)
	require.ErrorIs(t, err, ErrExists)
	require.Same(t, own, srv.Target(own.Name), "the embedder's target stays")

	require.Equal(t, before, m.Config(true))
	now, err := store.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, saved, now)
	alive()
	_ = time.Second
}
