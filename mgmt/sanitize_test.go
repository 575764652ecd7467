package mgmt

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/scsi"
)

// TestSanitizeInterruptedByRestart starts a slow SANITIZE, closes the
// Manager under it as a restart would, and requires the extent to come
// back sanitizing, resumed from the record in the reservation directory.
func TestSanitizeInterruptedByRestart(t *testing.T) {
	dir := t.TempDir()
	e := NewExtent()
	e.Name, e.Path, e.Filesize, e.SanitizeRateMiBps = "lun0", filepath.Join(dir, "lun0.img"), 64<<20, 1
	opt := Options{Store: &MemoryStore{}, Initial: oneLUN(e), ReservationDir: filepath.Join(dir, "state")}
	tur := []byte{0, 0, 0, 0, 0, 0}
	pattern := []byte{0x01, 0, 0, 1, 0xa5}
	overwrite := []byte{0x48, 0x81, 0, 0, 0, 0, 0, 0, byte(len(pattern)), 0} // IMMED

	m, err := New(ctx, opt)
	require.NoError(t, err)
	require.Equal(t, scsi.StatusGood, unitRunner(t, m, 1)(overwrite, pattern).Status)
	m.Close() // 64 MiB at 1 MiB/s: cut short

	m, err = New(ctx, opt)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	res := unitRunner(t, m, 1)(tur, nil)
	require.Equal(t, scsi.StatusCheckCondition, res.Status)
	require.Equal(t, []byte{0x04, 0x1b}, res.Sense[12:14], "LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS")
}
