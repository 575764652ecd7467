package scsi_test

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// atomicSpanDevice is a memory device whose writes are atomic for all its
// clients only within spans of its own, as librbd's within one RADOS
// object; it counts the writes reaching it.
type atomicSpanDevice struct {
	*backend.Memory
	span   int64
	writes int
}

func (d *atomicSpanDevice) AtomicWriteSpan() int64 { return d.span }

func (d *atomicSpanDevice) WriteAt(p []byte, off int64) (int, error) {
	d.writes++
	return d.Memory.WriteAt(p, off)
}

// atomicLimits returns the atomic fields of the unit's block limits page:
// MAXIMUM ATOMIC TRANSFER LENGTH, ATOMIC ALIGNMENT, ATOMIC TRANSFER LENGTH
// GRANULARITY, MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY and
// MAXIMUM ATOMIC BOUNDARY SIZE.
func atomicLimits(f *fixture) [5]uint32 {
	page := f.good([]byte{0x12, 1, 0xb0, 0, 255, 0}, nil, 255)
	var l [5]uint32
	for i := range l {
		l[i] = binary.BigEndian.Uint32(page[44+4*i:])
	}
	return l
}

func writeAtomic16(lba uint64, n uint16) []byte {
	c := rw16(0x9c, lba, 0)
	binary.BigEndian.PutUint16(c[12:], n)
	return c
}

// TestWriteAtomicWithinTheDeviceSpan checks that a unit on a device atomic
// for all its clients only within a span advertises no more than the
// span holds, serves ranges within a span at any alignment, and refuses
// a range crossing one without writing anything.
func TestWriteAtomicWithinTheDeviceSpan(t *testing.T) {
	rsoc := func(f *fixture) byte {
		return f.good([]byte{0xa3, 0x0c, 0x01, 0x9c, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)[1] & 0x07
	}

	// A memory device: 1 MiB at any alignment, as before.
	require.Equal(t, [5]uint32{(1 << 20) / bs, 1, 1, 0, 0}, atomicLimits(newFixture(t, scsi.UnitConfig{})))

	dev := &atomicSpanDevice{Memory: backend.NewMemory(blocks * bs), span: 64 << 10}
	f := newFixtureOn(t, dev, scsi.UnitConfig{})
	require.Equal(t, [5]uint32{128, 1, 1, 0, 0}, atomicLimits(f), "at most one 64 KiB span, no boundaries")
	require.Equal(t, byte(3), rsoc(f))

	// A whole span, and a few blocks within one at an odd LBA.
	data := pattern(128*bs, 7)
	f.good(writeAtomic16(128, 128), data, 0)
	require.Equal(t, data, f.good(read10(128, 128), nil, 128*bs))
	f.good(writeAtomic16(255, 1), pattern(bs, 8), 0)
	f.good(writeAtomic16(131, 9), pattern(9*bs, 9), 0)
	// The last blocks of the unit, as libiscsi writes them.
	f.good(writeAtomic16(blocks-5, 5), pattern(5*bs, 10), 0)
	writes := dev.writes

	// Crossing from the first span into the second: refused, the field
	// pointer naming the LBA, and nothing written.
	res := f.fails(writeAtomic16(120, 16), pattern(16*bs, 11), 0, scsi.SenseIllegalRequest, 0x24, 0)
	require.EqualValues(t, 0xc0, res.Sense[15], "SKSV and C/D: a field of the CDB")
	require.EqualValues(t, 2, binary.BigEndian.Uint16(res.Sense[16:18]), "the field pointer names the LOGICAL BLOCK ADDRESS")
	require.Equal(t, writes, dev.writes, "nothing reaches the device")
	require.Equal(t, make([]byte, 8*bs), f.good(read10(120, 8), nil, 8*bs), "and nothing is written")
	// Longer than a span: the TRANSFER LENGTH.
	res = f.fails(writeAtomic16(0, 129), pattern(129*bs, 12), 0, scsi.SenseIllegalRequest, 0x24, 0)
	require.EqualValues(t, 12, binary.BigEndian.Uint16(res.Sense[16:18]))
	// A plain WRITE across the span is no concern of the span.
	f.good(write10(120, 16), pattern(16*bs, 13), 0)

	// A span that is no power of two: the maximum is the largest power of
	// two dividing it, so naturally aligned power-of-two writes (Linux's)
	// never cross one.
	dev = &atomicSpanDevice{Memory: backend.NewMemory(blocks * bs), span: 96 << 10}
	f = newFixtureOn(t, dev, scsi.UnitConfig{})
	require.Equal(t, [5]uint32{64, 1, 1, 0, 0}, atomicLimits(f))
	f.good(writeAtomic16(128, 64), pattern(64*bs, 14), 0)
	f.fails(writeAtomic16(160, 64), pattern(64*bs, 15), 0, scsi.SenseIllegalRequest, 0x24, 0)

	// A span larger than 1 MiB leaves the 1 MiB maximum.
	dev = &atomicSpanDevice{Memory: backend.NewMemory(blocks * bs), span: 4 << 20}
	require.Equal(t, [5]uint32{(1 << 20) / bs, 1, 1, 0, 0}, atomicLimits(newFixtureOn(t, dev, scsi.UnitConfig{})))

	// A block larger than the span: no WRITE ATOMIC at all.
	dev = &atomicSpanDevice{Memory: backend.NewMemory(blocks * bs), span: 512}
	f = newFixtureOn(t, dev, scsi.UnitConfig{BlockSize: 4096})
	require.Equal(t, [5]uint32{}, atomicLimits(f))
	require.Equal(t, byte(1), rsoc(f), "not supported")
	f.fails(writeAtomic16(0, 1), make([]byte, 4096), 0, scsi.SenseIllegalRequest, 0x20, 0)
	require.Zero(t, dev.writes)
}

// BenchmarkWriteAtomic measures WRITE ATOMIC(16) of 4 KiB within the spans
// of a device atomic only within 64 KiB spans: the span check adds no
// allocation to the command.
func BenchmarkWriteAtomic(b *testing.B) {
	const span = 64 << 10
	dev := &atomicSpanDevice{Memory: backend.NewMemory(1 << 24), span: span}
	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{Serial: "bench", WriteCache: true})
	require.NoError(b, err)
	defer lu.Close()
	tgt := scsi.NewTarget()
	require.NoError(b, tgt.Attach(0, lu))
	ctx := context.Background()
	tgt.Execute(ctx, &scsi.Command{Nexus: nexusA, CDB: make([]byte, 6)})
	cmd := scsi.Command{Nexus: nexusA, CDB: writeAtomic16(0, 8), DataOut: make([]byte, 8*bs)}
	b.SetBytes(8 * bs)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		binary.BigEndian.PutUint64(cmd.CDB[2:], i%(1<<24/bs/8)*8)
		i++
		if res := tgt.Execute(ctx, &cmd); res.Status != scsi.StatusGood {
			b.Fatalf("status 0x%02x sense % x", res.Status, res.Sense)
		}
	}
}
