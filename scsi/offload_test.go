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

// spanDevice compares and writes only within spans of its own, as librbd
// of Ceph 16 does (one 512-byte sector): it is shared with other clients.
type spanDevice struct {
	offloadDevice
	span int64
}

func (d *spanDevice) CompareAndWriteSpan() int64 { return d.span }

// TestCompareAndWriteWithinTheDeviceSpan checks that a unit on a shared
// device offers COMPARE AND WRITE only as far as the device does it
// atomically: one block when a block fits the span (advertised in the
// block limits page, longer ranges refused without a local fallback),
// and not at all when it does not.
func TestCompareAndWriteWithinTheDeviceSpan(t *testing.T) {
	rsoc := func(f *fixture) byte {
		return f.good([]byte{0xa3, 0x0c, 0x01, 0x89, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)[1] & 0x07
	}

	dev := &spanDevice{offloadDevice: offloadDevice{Memory: backend.NewMemory(blocks * bs)}, span: 512}
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	require.EqualValues(t, 1, f.good([]byte{0x12, 1, 0xb0, 0, 255, 0}, nil, 255)[5], "MAXIMUM COMPARE AND WRITE LENGTH")
	require.Equal(t, byte(3), rsoc(f))
	caw := rw16(0x89, 20, 0)
	caw[13] = 1
	next := pattern(bs, 3)
	f.good(caw, append(make([]byte, bs), next...), 0)
	require.Equal(t, 1, dev.cawCalls)
	caw[13] = 2
	res := f.fails(caw, make([]byte, 4*bs), 0, scsi.SenseIllegalRequest, 0x24, 0)
	require.EqualValues(t, 13, binary.BigEndian.Uint16(res.Sense[16:18]), "the field pointer names NUMBER OF LOGICAL BLOCKS")
	require.Equal(t, 1, dev.cawCalls, "nothing reaches the device")
	require.Equal(t, make([]byte, bs), f.good(read10(21, 1), nil, bs), "and nothing is written")

	// A device that refuses a range within its span anyway is not
	// stood in for: the compare would hold for this unit only.
	big := &spanDevice{offloadDevice: offloadDevice{Memory: backend.NewMemory(blocks * bs)}, span: 4096}
	f = newFixtureOn(t, big, scsi.UnitConfig{BlockSize: 4096})
	caw = rw16(0x89, 2, 0)
	caw[13] = 1
	f.fails(caw, make([]byte, 2*4096), 0, scsi.SenseIllegalRequest, 0x24, 0)
	require.Equal(t, 1, big.cawCalls)

	// A block larger than the span: no COMPARE AND WRITE at all.
	dev = &spanDevice{offloadDevice: offloadDevice{Memory: backend.NewMemory(blocks * bs)}, span: 512}
	f = newFixtureOn(t, dev, scsi.UnitConfig{BlockSize: 4096})
	require.Zero(t, f.good([]byte{0x12, 1, 0xb0, 0, 255, 0}, nil, 255)[5])
	require.Equal(t, byte(1), rsoc(f), "not supported")
	f.fails(caw, make([]byte, 2*4096), 0, scsi.SenseIllegalRequest, 0x20, 0)
	require.Zero(t, dev.cawCalls)
}
