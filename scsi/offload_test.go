package scsi_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// offloadDevice is a memory device that compares and writes and writes
// the same block in operations of its own, as a networked device does in
// its storage, counting them; it takes compare and write of one block
// only, and refuses longer ones with errors.ErrUnsupported.
type offloadDevice struct {
	*backend.Memory
	cawCalls, sameCalls int
}

func (d *offloadDevice) CompareAndWrite(cmp, data []byte, off int64) error {
	d.cawCalls++
	if len(cmp) > bs {
		return fmt.Errorf("offload: %d bytes: %w", len(cmp), errors.ErrUnsupported)
	}
	cur := make([]byte, len(cmp))
	if _, err := d.ReadAt(cur, off); err != nil {
		return err
	}
	for i := range cur {
		if cur[i] != cmp[i] {
			return &backend.MiscompareError{Offset: int64(i)}
		}
	}
	_, err := d.WriteAt(data, off)
	return err
}

func (d *offloadDevice) WriteSame(block []byte, off, length int64) error {
	d.sameCalls++
	for done := int64(0); done < length; done += int64(len(block)) {
		if _, err := d.WriteAt(block, off+done); err != nil {
			return err
		}
	}
	return nil
}

func TestCompareAndWriteAndWriteSameGoToTheDevice(t *testing.T) {
	dev := &offloadDevice{Memory: backend.NewMemory(blocks * bs)}
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	old := pattern(2*bs, 5)
	f.good(write10(20, 2), old, 0)

	caw := rw16(0x89, 20, 0)
	caw[13] = 1
	next := pattern(bs, 11)
	f.good(caw, append(bytes.Clone(old[:bs]), next...), 0)
	require.Equal(t, 1, dev.cawCalls)
	require.Equal(t, next, f.good(read10(20, 1), nil, bs))

	// The device's miscompare offset is the sense's INFORMATION.
	res := f.fails(caw, append(bytes.Clone(old[:bs]), next...), 0, scsi.SenseMiscompare, 0x1d, 0)
	require.EqualValues(t, 0, binary.BigEndian.Uint32(res.Sense[3:7]))
	cmp := bytes.Clone(next)
	cmp[300] ^= 1
	res = f.fails(caw, append(cmp, old[:bs]...), 0, scsi.SenseMiscompare, 0x1d, 0)
	require.EqualValues(t, 300, binary.BigEndian.Uint32(res.Sense[3:7]))
	require.Equal(t, next, f.good(read10(20, 1), nil, bs), "nothing written on miscompare")

	// Two blocks: the device refuses, the unit compares and writes itself.
	caw[13] = 2
	cur := append(bytes.Clone(next), old[bs:]...)
	two := pattern(2*bs, 17)
	f.good(caw, append(cur, two...), 0)
	require.Equal(t, 4, dev.cawCalls)
	require.Equal(t, two, f.good(read10(20, 2), nil, 2*bs))
	bad := bytes.Clone(two)
	bad[bs+9] ^= 1
	res = f.fails(caw, append(bad, old...), 0, scsi.SenseMiscompare, 0x1d, 0)
	require.EqualValues(t, bs+9, binary.BigEndian.Uint32(res.Sense[3:7]))

	ws := rw16(0x93, 40, 8)
	block := pattern(bs, 23)
	f.good(ws, block, 0)
	require.Equal(t, 1, dev.sameCalls)
	require.Equal(t, bytes.Repeat(block, 8), f.good(read10(40, 8), nil, 8*bs))
}

// notReadyDevice fails every read as a device whose cluster is gone.
type notReadyDevice struct{ *backend.Memory }

func (notReadyDevice) ReadAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("cluster: no answer within 5s: %w", backend.ErrNotReady)
}

func TestUnreachableStorageIsNotReady(t *testing.T) {
	f := newFixtureOn(t, notReadyDevice{backend.NewMemory(blocks * bs)}, scsi.UnitConfig{})
	f.fails(read10(0, 1), nil, bs, scsi.SenseNotReady, 0x04, 0x00)
}
