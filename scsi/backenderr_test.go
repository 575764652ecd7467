package scsi_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// erring fails every read and write with err.
type erring struct {
	backend.Device
	err error
}

func (d *erring) ReadAt(b []byte, off int64) (int, error)  { return 0, d.err }
func (d *erring) WriteAt(b []byte, off int64) (int, error) { return 0, d.err }

// TestBackendErrorContract checks the table of package backend's
// documentation, one row at a time, for a READ and a WRITE at LBA 8.
func TestBackendErrorContract(t *testing.T) {
	custom := &scsi.Sense{Key: scsi.SenseDataProtect, ASC: 0x27, ASCQ: 0x03}
	for _, tt := range []struct {
		name         string
		err          error
		status       scsi.Status
		key          scsi.SenseKey
		asc, ascq    byte
		writeASC     byte
		info         uint64 // 0: no INFORMATION checked
		wrappedCheck bool
	}{
		{"no space", fmt.Errorf("pool: %w", backend.ErrNoSpace), scsi.StatusCheckCondition, scsi.SenseDataProtect, 0x27, 0x07, 0x27, 0, true},
		{"not ready", backend.ErrNotReady, scsi.StatusCheckCondition, scsi.SenseNotReady, 0x04, 0x00, 0x04, 0, false},
		{"busy", backend.ErrBusy, scsi.StatusBusy, 0, 0, 0, 0, 0, false},
		{"transient", fmt.Errorf("rados: %w", backend.ErrTransient), scsi.StatusCheckCondition, scsi.SenseAbortedCommand, 0, 0, 0, 0, false},
		{"medium error", &backend.MediumError{Off: 20 * bs}, scsi.StatusCheckCondition, scsi.SenseMediumError, 0x11, 0x00, 0x0c, 20, false},
		{"other", errors.New("EIO"), scsi.StatusCheckCondition, scsi.SenseMediumError, 0x11, 0x00, 0x0c, 8, false},
		{"sense of its own", fmt.Errorf("device: %w", custom), scsi.StatusCheckCondition, scsi.SenseDataProtect, 0x27, 0x03, 0x27, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev := &erring{Device: backend.NewMemory(blocks * bs), err: tt.err}
			f := newFixtureOn(t, dev, scsi.UnitConfig{})
			for _, write := range []bool{false, true} {
				cdb, out, in := read10(8, 1), []byte(nil), bs
				if write {
					cdb, out, in = write10(8, 1), make([]byte, bs), 0
				}
				res := f.run(nexusA, 0, cdb, out, in)
				require.Equal(t, tt.status, res.Status, "write %v", write)
				if tt.status != scsi.StatusCheckCondition {
					continue
				}
				asc := tt.asc
				if write {
					asc = tt.writeASC
				}
				f.requireSense(res, tt.key, asc, tt.ascq)
				if tt.info != 0 {
					require.Equal(t, byte(0x80), res.Sense[0]&0x80, "INFORMATION valid")
					require.Equal(t, []byte{0, 0, 0, byte(tt.info)}, res.Sense[3:7], "the LBA of the bad block")
				}
			}
		})
	}
}

// slowDevice is a ContextDevice whose reads wait for their context.
type slowDevice struct {
	backend.Device
	started chan struct{}
}

func (d *slowDevice) ReadAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	d.started <- struct{}{}
	<-ctx.Done()
	return 0, ctx.Err()
}

func (d *slowDevice) WriteAtContext(ctx context.Context, b []byte, off int64) (int, error) {
	return d.Device.WriteAt(b, off)
}

// TestAbortCancelsAContextDevice: the command's context reaches a
// ContextDevice, and cancelling it (as the transport does for ABORT TASK,
// LU RESET or a lost session) ends the call and the command.
func TestAbortCancelsAContextDevice(t *testing.T) {
	dev := &slowDevice{Device: backend.NewMemory(blocks * bs), started: make(chan struct{}, 1)}
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan scsi.Result, 1)
	go func() {
		done <- f.tgt.Execute(ctx, &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: read10(0, 1), DataIn: make([]byte, bs)})
	}()
	waitFor(t, dev.started, "the read to reach the device")
	cancel()
	require.Equal(t, scsi.StatusTaskAborted, waitFor(t, done, "the aborted READ").Status)
	f.good(write10(0, 1), make([]byte, bs), 0) // writes go through WriteAtContext
}
