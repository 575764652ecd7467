package mgmt

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/scsi"
)

// TestSanitizeInterruptedByRestart starts a slow SANITIZE, closes the
// Manager under it as a restart would, and requires the extent to come
// back failed, from the record in the reservation directory, until a
// SANITIZE completes.
func TestSanitizeInterruptedByRestart(t *testing.T) {
	dir := t.TempDir()
	store := &MemoryStore{}
	e := NewExtent()
	e.ID, e.Name, e.Path, e.Filesize, e.SanitizeRateMiBps = 1, "lun0", filepath.Join(dir, "lun0.img"), 64<<20, 1
	tg := NewTarget()
	tg.ID, tg.Name = 1, "t"
	cfg := EmptyConfig()
	cfg.Targets, cfg.Extents = []Target{tg}, []Extent{e}
	cfg.TargetExtents = []TargetExtent{{ID: 1, Target: 1, Extent: 1, LunID: 0}}
	opt := Options{Store: store, Initial: cfg, ReservationDir: filepath.Join(dir, "state")}

	nexus := scsi.Nexus{InitiatorPort: "iqn.i,i,0x1", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}
	run := func(tgt *scsi.Target, cdb, out []byte) scsi.Result {
		return tgt.Execute(context.Background(), &scsi.Command{Nexus: nexus, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: out})
	}
	tur := []byte{0, 0, 0, 0, 0, 0}
	pattern := []byte{0x01, 0, 0, 1, 0xa5}
	overwrite := []byte{0x48, 0x81, 0, 0, 0, 0, 0, 0, byte(len(pattern)), 0} // IMMED

	m, err := New(ctx, opt)
	require.NoError(t, err)
	tgt := unitTarget(t, m, 1)
	run(tgt, tur, nil) // POWER ON OCCURRED
	require.Equal(t, scsi.StatusGood, run(tgt, overwrite, pattern).Status)
	m.Close() // 64 MiB at 1 MiB/s: cut short

	m, err = New(ctx, opt)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	tgt = unitTarget(t, m, 1)
	run(tgt, tur, nil) // POWER ON OCCURRED
	res := run(tgt, tur, nil)
	require.Equal(t, scsi.StatusCheckCondition, res.Status)
	require.Equal(t, []byte{0x31, 0x03}, res.Sense[12:14], "MEDIUM FORMAT CORRUPTED, SANITIZE COMMAND FAILED")
}
