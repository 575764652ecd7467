package mgmt

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/scsi"
)

// TestDescriptiveChangesKeepTheUnit: editing what only describes an
// extent leaves its logical unit (and so its reservations and a running
// sanitize) alone; a setting of the unit reopens it in place.
func TestDescriptiveChangesKeepTheUnit(t *testing.T) {
	dir := t.TempDir()
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "lun0", filepath.Join(dir, "lun0.img"), 1<<20
	m, err := New(ctx, Options{Store: &MemoryStore{}, Initial: oneLUN(e)})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	unit := func() *scsi.LogicalUnit {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.app.units[1].lu
	}
	before := unit()
	threshold := 80
	_, err = m.UpdateExtent(ctx, 1, func(e *Extent) error {
		e.Comment, e.AvailThreshold, e.Xen = "database disk", &threshold, true
		return nil
	})
	require.NoError(t, err)
	require.Same(t, before, unit())
	require.Equal(t, "database disk", m.Config(false).Extents[0].Comment)

	_, err = m.UpdateExtent(ctx, 1, func(e *Extent) error { e.RO = true; return nil })
	require.NoError(t, err)
	require.Same(t, before, unit(), "a setting of the unit reopens it in place: it stays attached")
	require.True(t, unit().Config().ReadOnly)
}
