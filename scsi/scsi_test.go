package scsi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

const (
	bs     = 512
	blocks = 2048
)

var (
	nexusA = scsi.Nexus{InitiatorPort: "iqn.a,i,0x000000000001", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}
	// nexusA2 is a second path of initiator iqn.a, through another port.
	nexusA2 = scsi.Nexus{InitiatorPort: "iqn.a,i,0x000000000002", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x2", RelativePortID: 2}
	nexusB  = scsi.Nexus{InitiatorPort: "iqn.b,i,0x000000000001", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}
)

// fixture is a target with LUN 0 on a memory device.
type fixture struct {
	t   *testing.T
	tgt *scsi.Target
	lu  *scsi.LogicalUnit
	// lastIn is the data-in of the last command run.
	lastIn []byte
}

func newFixture(t *testing.T, cfg scsi.UnitConfig) *fixture {
	t.Helper()
	return newFixtureOn(t, backend.NewMemory(blocks*bs), cfg)
}

// newFixtureOn is newFixture with LUN 0 on dev.
func newFixtureOn(t *testing.T, dev backend.Device, cfg scsi.UnitConfig) *fixture {
	t.Helper()
	if cfg.Serial == "" {
		cfg.Serial = "unit0"
	}
	lu, err := scsi.NewLogicalUnit(dev, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	f := &fixture{t: t, tgt: tgt, lu: lu}
	// Clear POWER ON OCCURRED for both nexuses.
	for _, n := range []scsi.Nexus{nexusA, nexusB} {
		res := f.run(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
		f.requireSense(res, scsi.SenseUnitAttention, 0x29, 0x00)
	}
	return f
}

// run executes cdb on lun through nexus n with data out and a data-in
// buffer of inLen bytes.
func (f *fixture) run(n scsi.Nexus, lun uint16, cdb, out []byte, inLen int) scsi.Result {
	cmd := &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(lun), CDB: cdb, DataOut: out}
	if inLen > 0 {
		cmd.DataIn = make([]byte, inLen)
	}
	res := f.tgt.Execute(context.Background(), cmd)
	if res.DataInLen > 0 {
		f.lastIn = cmd.DataIn[:res.DataInLen]
	} else {
		f.lastIn = nil
	}
	return res
}

func (f *fixture) good(cdb, out []byte, inLen int) []byte {
	f.t.Helper()
	res := f.run(nexusA, 0, cdb, out, inLen)
	require.Equal(f.t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
	return f.lastIn
}

func (f *fixture) requireSense(res scsi.Result, key scsi.SenseKey, asc, ascq byte) {
	f.t.Helper()
	require.Equal(f.t, scsi.StatusCheckCondition, res.Status)
	require.GreaterOrEqual(f.t, len(res.Sense), 8)
	if res.Sense[0]&0x7f == 0x72 {
		require.Equal(f.t, []byte{byte(key), asc, ascq}, res.Sense[1:4], "sense %x", res.Sense)
		return
	}
	require.GreaterOrEqual(f.t, len(res.Sense), 14)
	require.Equal(f.t, byte(key), res.Sense[2]&0x0f, "sense %x", res.Sense)
	require.Equal(f.t, []byte{asc, ascq}, res.Sense[12:14], "sense %x", res.Sense)
}

func (f *fixture) fails(cdb, out []byte, inLen int, key scsi.SenseKey, asc, ascq byte) scsi.Result {
	f.t.Helper()
	res := f.run(nexusA, 0, cdb, out, inLen)
	f.requireSense(res, key, asc, ascq)
	return res
}

func read10(lba uint32, n uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x28
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], n)
	return c
}

func write10(lba uint32, n uint16) []byte {
	c := read10(lba, n)
	c[0] = 0x2a
	return c
}

func rw16(op byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], n)
	return c
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

func TestInquiry(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true, RotationRate: 1})
	std := f.good([]byte{0x12, 0, 0, 0, 255, 0}, nil, 255)
	require.Equal(t, byte(0), std[0])
	require.Equal(t, byte(0x12), std[3])
	require.Equal(t, int(std[4])+5, len(std))
	require.Equal(t, "ISCSIKIT", string(std[8:16]))
	require.Equal(t, "VIRTUAL-DISK    ", string(std[16:32]))

	pages := f.good([]byte{0x12, 1, 0, 0, 255, 0}, nil, 255)
	require.Equal(t, []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}, pages[4:])
	for _, p := range pages[4:] {
		data := f.good([]byte{0x12, 1, p, 0, 255, 0}, nil, 255)
		require.Equal(t, p, data[1])
		require.Equal(t, int(binary.BigEndian.Uint16(data[2:]))+4, len(data))
	}
	serial := f.good([]byte{0x12, 1, 0x80, 0, 255, 0}, nil, 255)
	require.Equal(t, "unit0", string(serial[4:]))
	ids := f.good([]byte{0x12, 1, 0x83, 0, 255, 0}, nil, 255)
	require.Equal(t, byte(0x03), ids[5]&0x0f, "first designator is NAA")
	require.Equal(t, byte(0x6), ids[8]>>4, "a generated NAA is IEEE Registered Extended")
	require.Equal(t, byte(16), ids[7])
	require.Equal(t, f.lu.Config().NAA, ids[8:24])
	require.True(t, bytes.Contains(ids, []byte("iqn.t,t,0x1\x00")))

	// Allocation length truncates and reports what was transferred.
	res := f.run(nexusA, 0, []byte{0x12, 0, 0, 0, 5, 0}, nil, 255)
	require.Equal(t, 5, res.DataInLen)
	require.Equal(t, 5, res.TransferLen)

	// A page code without EVPD, an unknown page, and the obsolete CMDDT bit.
	res = f.fails([]byte{0x12, 0, 0x80, 0, 255, 0}, nil, 255, scsi.SenseIllegalRequest, 0x24, 0)
	require.Equal(t, []byte{0xc0, 0, 2}, res.Sense[15:18], "field pointer to CDB byte 2")
	f.fails([]byte{0x12, 1, 0x42, 0, 255, 0}, nil, 255, scsi.SenseIllegalRequest, 0x24, 0)
	res = f.fails([]byte{0x12, 2, 0, 0, 255, 0}, nil, 255, scsi.SenseIllegalRequest, 0x24, 0)
	require.Equal(t, []byte{0xc9, 0, 1}, res.Sense[15:18], "field pointer to CDB byte 1 bit 1")
}

func TestUnknownLUNAndOpcode(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	f.fails([]byte{0xff, 0, 0, 0, 0, 0}, nil, 0, scsi.SenseIllegalRequest, 0x20, 0)
	f.fails(nil, nil, 0, scsi.SenseIllegalRequest, 0x20, 0)
	f.fails([]byte{0x28, 0, 0}, nil, 0, scsi.SenseIllegalRequest, 0x24, 0)

	res := f.run(nexusA, 7, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96)
	require.Equal(t, scsi.StatusGood, res.Status)
	require.Equal(t, byte(0x7f), f.lastIn[0], "peripheral qualifier 011b, no device type")
	f.requireSense(f.run(nexusA, 7, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseIllegalRequest, 0x25, 0)
	res = f.run(nexusA, 7, []byte{0x03, 0, 0, 0, 18, 0}, nil, 18)
	require.Equal(t, scsi.StatusGood, res.Status)
	require.Equal(t, byte(0x25), f.lastIn[12])
}

func TestReadWrite(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	data := pattern(8*bs, 1)
	f.good(write10(100, 8), data, 0)
	require.Equal(t, data, f.good(read10(100, 8), nil, 8*bs))
	require.Equal(t, data, f.good(rw16(0x88, 100, 8), nil, 8*bs))
	f.good(rw16(0x8a, blocks-1, 1), data[:bs], 0)
	require.Equal(t, data[:bs], f.good([]byte{0x08, 0, 0x07, 0xff, 1, 0}, nil, bs))

	// A short data-in buffer gets what fits, and the transfer length says
	// what the command wanted.
	res := f.run(nexusA, 0, read10(100, 8), nil, bs)
	require.Equal(t, scsi.StatusGood, res.Status)
	require.Equal(t, bs, res.DataInLen)
	require.Equal(t, 8*bs, res.TransferLen)

	f.fails(read10(blocks-1, 2), nil, 2*bs, scsi.SenseIllegalRequest, 0x21, 0)
	f.fails(rw16(0x88, 1<<63, 1), nil, bs, scsi.SenseIllegalRequest, 0x21, 0)
	f.good(read10(blocks, 0), nil, 0)
	f.fails(write10(blocks+1, 0), nil, 0, scsi.SenseIllegalRequest, 0x21, 0)
	rdprotect := read10(0, 1)
	rdprotect[1] = 0x20
	f.fails(rdprotect, nil, bs, scsi.SenseIllegalRequest, 0x24, 0)

	// Less data than the CDB asks for: the whole blocks sent are written,
	// the rest is an overflow residual; a partial block is refused.
	res = f.run(nexusA, 0, write10(200, 2), data[:bs], 0)
	require.Equal(t, scsi.StatusGood, res.Status)
	require.Equal(t, 2*bs, res.TransferLen)
	require.Equal(t, data[:bs], f.good(read10(200, 1), nil, bs))
	require.Equal(t, make([]byte, bs), f.good(read10(201, 1), nil, bs))
	res = f.fails(write10(300, 2), data[:bs+100], 0, scsi.SenseIllegalRequest, 0x0e, 0x03)
	require.Equal(t, 2*bs, res.TransferLen)
	require.Equal(t, make([]byte, 2*bs), f.good(read10(300, 2), nil, 2*bs))
}

func TestReadOnly(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ReadOnly: true})
	f.fails(write10(0, 1), make([]byte, bs), 0, scsi.SenseDataProtect, 0x27, 0)
	f.good(read10(0, 1), nil, bs)
	hdr := f.good([]byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	require.Equal(t, byte(0x80), hdr[2]&0x80, "WP bit")
}

func TestVerifyAndCompareAndWrite(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	data := pattern(4*bs, 3)
	f.good(write10(10, 4), data, 0)
	verify := []byte{0x2f, 0x02, 0, 0, 0, 10, 0, 0, 4, 0}
	f.good(verify, data, 0)
	bad := bytes.Clone(data)
	bad[bs+17] ^= 1
	res := f.fails(verify, bad, 0, scsi.SenseMiscompare, 0x1d, 0)
	require.Equal(t, byte(0x80), res.Sense[0]&0x80, "VALID")
	require.Equal(t, uint32(bs+17), binary.BigEndian.Uint32(res.Sense[3:7]))
	bytchk2 := bytes.Clone(verify)
	bytchk2[1] = 0x04
	f.fails(bytchk2, data, 0, scsi.SenseIllegalRequest, 0x24, 0)

	caw := make([]byte, 16)
	caw[0] = 0x89
	binary.BigEndian.PutUint64(caw[2:], 10)
	caw[13] = 1
	newBlock := pattern(bs, 9)
	f.good(caw, append(bytes.Clone(data[:bs]), newBlock...), 0)
	require.Equal(t, newBlock, f.good(read10(10, 1), nil, bs))
	res = f.fails(caw, append(bytes.Clone(data[:bs]), newBlock...), 0, scsi.SenseMiscompare, 0x1d, 0)
	require.Equal(t, newBlock, f.good(read10(10, 1), nil, bs), "nothing written on miscompare")

	orw := rw16(0x8b, 11, 1)
	mask := bytes.Repeat([]byte{0x80}, bs)
	f.good(orw, mask, 0)
	got := f.good(read10(11, 1), nil, bs)
	for i := range got {
		require.Equal(t, data[bs+i]|0x80, got[i])
	}
}

func TestThinProvisioning(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true})
	cap16 := f.good([]byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, nil, 32)
	require.Equal(t, uint64(blocks-1), binary.BigEndian.Uint64(cap16))
	require.Equal(t, byte(0xc0), cap16[14]&0xc0, "LBPME and LBPRZ")

	f.good(write10(0, 16), pattern(16*bs, 5), 0)
	lbaStatus := []byte{0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	st := f.good(lbaStatus, nil, 256)
	require.Equal(t, uint64(0), binary.BigEndian.Uint64(st[8:]))
	require.Equal(t, byte(0), st[8+12], "first run mapped")

	// UNMAP everything, then the data reads back as zeroes.
	param := make([]byte, 24)
	binary.BigEndian.PutUint16(param[0:], 22)
	binary.BigEndian.PutUint16(param[2:], 16)
	binary.BigEndian.PutUint32(param[16:], blocks)
	f.good([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, param, 0)
	require.Equal(t, make([]byte, 16*bs), f.good(read10(0, 16), nil, 16*bs))
	st = f.good(lbaStatus, nil, 256)
	require.Equal(t, byte(1), st[8+12], "deallocated")
	binary.BigEndian.PutUint64(param[8:], blocks)
	f.fails([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, param, 0, scsi.SenseIllegalRequest, 0x21, 0)
	f.fails([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0}, param[:4], 0, scsi.SenseIllegalRequest, 0x1a, 0)

	// WRITE SAME writes a block over a range; with UNMAP and zeroes it deallocates.
	ws := []byte{0x41, 0, 0, 0, 0, 50, 0, 0, 4, 0}
	blk := pattern(bs, 7)
	f.good(ws, blk, 0)
	require.Equal(t, bytes.Repeat(blk, 4), f.good(read10(50, 4), nil, 4*bs))
	ws[1] = 0x08
	f.good(ws, make([]byte, bs), 0)
	require.Equal(t, make([]byte, 4*bs), f.good(read10(50, 4), nil, 4*bs))
	// Zero blocks (WSNZ clear) writes through the last LBA.
	ws[1], ws[8] = 0, 0
	binary.BigEndian.PutUint32(ws[2:], blocks-3)
	f.good(ws, blk, 0)
	require.Equal(t, bytes.Repeat(blk, 3), f.good(read10(blocks-3, 3), nil, 3*bs))
	binary.BigEndian.PutUint32(ws[2:], blocks)
	f.fails(ws, blk, 0, scsi.SenseIllegalRequest, 0x21, 0)
}

func TestWriteSameWithoutThin(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	f.fails([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, make([]byte, 24), 0, scsi.SenseIllegalRequest, 0x20, 0)
	// UNMAP on a fully provisioned unit writes the block instead.
	f.good(write10(5, 1), bytes.Repeat([]byte{0xff}, bs), 0)
	f.good([]byte{0x41, 0x08, 0, 0, 0, 5, 0, 0, 1, 0}, make([]byte, bs), 0)
	require.Equal(t, make([]byte, bs), f.good(read10(5, 1), nil, bs))
	pages := f.good([]byte{0x12, 1, 0, 0, 255, 0}, nil, 255)
	require.NotContains(t, pages[4:], byte(0xb2))
}

func TestModePagesAndUnitAttentions(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{WriteCache: true})
	all := f.good([]byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
	require.Equal(t, int(all[0])+1, len(all))
	require.Equal(t, byte(8), all[3], "block descriptor")
	caching := f.good([]byte{0x1a, 0x08, 0x08, 0, 255, 0}, nil, 255)
	require.Equal(t, byte(0x08), caching[4])
	require.Equal(t, byte(0x04), caching[6]&0x04, "WCE")
	f.fails([]byte{0x1a, 0, 0xc8, 0, 255, 0}, nil, 255, scsi.SenseIllegalRequest, 0x39, 0)
	f.fails([]byte{0x1a, 0, 0x05, 0, 255, 0}, nil, 255, scsi.SenseIllegalRequest, 0x24, 0)

	// Turn descriptor sense on through MODE SELECT(6).
	control := f.good([]byte{0x1a, 0x08, 0x0a, 0, 255, 0}, nil, 255)
	sel := append([]byte{0, 0, 0, 0}, control[4:]...)
	sel[4+2] |= 0x04
	f.good([]byte{0x15, 0x10, 0, 0, byte(len(sel)), 0}, sel, 0)
	res := f.run(nexusA, 0, []byte{0xff, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, byte(0x72), res.Sense[0])

	// The other nexus learns that mode parameters changed, once.
	f.requireSense(f.run(nexusB, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseUnitAttention, 0x2a, 0x01)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0).Status)

	// Changing a byte that is not changeable is refused.
	sel[4+3] ^= 0x80
	f.fails([]byte{0x15, 0x10, 0, 0, byte(len(sel)), 0}, sel, 0, scsi.SenseIllegalRequest, 0x26, 0)

	// A LU reset restores the defaults and raises a unit attention for
	// every live nexus, the issuer's included since there are others.
	require.NoError(t, f.tgt.Transport().ResetLogicalUnit(nexusB, scsi.EncodeLUN(0)))
	f.requireSense(f.run(nexusB, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0), scsi.SenseUnitAttention, 0x29, 0x03)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0).Status)
	f.fails([]byte{0, 0, 0, 0, 0, 0}, nil, 0, scsi.SenseUnitAttention, 0x29, 0x03)
	res = f.run(nexusA, 0, []byte{0xff, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, byte(0x70), res.Sense[0])
	require.ErrorIs(t, f.tgt.Transport().ResetLogicalUnit(nexusA, scsi.EncodeLUN(3)), scsi.ErrNoLUN)

	// REQUEST SENSE reports a pending unit attention and clears it. A
	// target reset reaches the other nexuses of the issuing initiator.
	f.tgt.Transport().ResetTarget(nexusA2, false)
	rs := f.good([]byte{0x03, 0, 0, 0, 18, 0}, nil, 18)
	require.Equal(t, []byte{0x29, 0x02}, rs[12:14])
	f.good([]byte{0, 0, 0, 0, 0, 0}, nil, 0)
}

func TestReservations(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	f.good([]byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, []byte{0x12, 0, 0, 0, 36, 0}, nil, 36).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, []byte{0x17, 0, 0, 0, 0, 0}, nil, 0).Status, "release by a non-holder is a no-op")
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	f.tgt.Transport().NexusLost(nexusA)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
}

func TestReportLUNsAndAttach(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	rl := []byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}
	out := f.good(rl, nil, 256)
	require.Equal(t, []byte{0, 0, 0, 8}, out[:4])

	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit1"})
	require.NoError(t, err)
	require.NoError(t, f.tgt.Attach(300, lu))
	require.ErrorIs(t, f.tgt.Attach(300, lu), scsi.ErrLUNInUse)
	require.Equal(t, []uint16{0, 300}, f.tgt.LUNs())
	f.fails([]byte{0, 0, 0, 0, 0, 0}, nil, 0, scsi.SenseUnitAttention, 0x3f, 0x0e)

	// REPORT LUNS clears the pending REPORTED LUNS DATA HAS CHANGED.
	require.NoError(t, f.tgt.Transport().ResetLogicalUnit(nexusA, scsi.EncodeLUN(300)))
	lu2, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit2"})
	require.NoError(t, err)
	require.NoError(t, f.tgt.Attach(2, lu2))
	out = f.good(rl, nil, 256)
	require.Equal(t, uint32(24), binary.BigEndian.Uint32(out))
	lun, ok := scsi.DecodeLUN(binary.BigEndian.Uint64(out[24:]))
	require.True(t, ok)
	require.Equal(t, uint16(300), lun)
	f.good([]byte{0, 0, 0, 0, 0, 0}, nil, 0)

	got, err := f.tgt.Detach(300)
	require.NoError(t, err)
	require.Same(t, lu, got)
	require.NoError(t, lu.Close())
	_, err = f.tgt.Detach(300)
	require.ErrorIs(t, err, scsi.ErrNoLUN)
	f.fails(rl[:6], nil, 0, scsi.SenseIllegalRequest, 0x24, 0)
}

func TestLUNEncoding(t *testing.T) {
	for _, l := range []uint16{0, 1, 255, 256, 1023, scsi.MaxLUN} {
		got, ok := scsi.DecodeLUN(scsi.EncodeLUN(l))
		require.True(t, ok)
		require.Equal(t, l, got)
	}
	_, ok := scsi.DecodeLUN(0x0001_0000_0000_0001)
	require.False(t, ok)
	_, ok = scsi.DecodeLUN(0xc000_0000_0000_0000)
	require.False(t, ok)
}

func TestReportSupportedOpcodes(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	all := f.good([]byte{0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, nil, 4096)
	n := int(binary.BigEndian.Uint32(all))
	require.Equal(t, n+4, len(all))
	require.Zero(t, n%8)
	seen := map[byte]bool{}
	for i := 4; i < len(all); i += 8 {
		seen[all[i]] = true
	}
	require.True(t, seen[0x28] && seen[0x2a] && seen[0x12] && seen[0xa0])
	require.False(t, seen[0x42], "UNMAP only on thin units")

	one := f.good([]byte{0xa3, 0x0c, 0x01, 0x28, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, byte(0x03), one[1]&0x07)
	require.Equal(t, uint16(10), binary.BigEndian.Uint16(one[2:]))
	require.Equal(t, byte(0x28), one[4])
	one = f.good([]byte{0xa3, 0x0c, 0x02, 0x9e, 0, 0x10, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, byte(0x03), one[1]&0x07)
	require.Equal(t, []byte{0x9e, 0x10}, one[4:6])
	one = f.good([]byte{0xa3, 0x0c, 0x01, 0xee, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, byte(0x01), one[1]&0x07)
	f.fails([]byte{0xa3, 0x0c, 0x01, 0x9e, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256, scsi.SenseIllegalRequest, 0x24, 0)
}

func TestStartStopUnit(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	f.good([]byte{0x1b, 0, 0, 0, 0, 0}, nil, 0)
	f.fails(read10(0, 1), nil, bs, scsi.SenseNotReady, 0x04, 0x02)
	f.fails([]byte{0, 0, 0, 0, 0, 0}, nil, 0, scsi.SenseNotReady, 0x04, 0x02)
	f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	f.good([]byte{0x1b, 0, 0, 0, 1, 0}, nil, 0)
	f.good(read10(0, 1), nil, bs)
}

func TestLUNInventoryChangeStaysInItsTarget(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	// A second target (another initiator's LUN view) shares the unit.
	view := scsi.NewTarget()
	require.NoError(t, view.Attach(0, f.lu))
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit1"})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	require.NoError(t, view.Attach(1, lu))
	// The nexuses of the first target hear nothing of it.
	f.good([]byte{0, 0, 0, 0, 0, 0}, nil, 0)
	// A change of the first target's inventory reaches them.
	lu2, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit2"})
	require.NoError(t, err)
	t.Cleanup(func() { lu2.Close() })
	require.NoError(t, f.tgt.Attach(2, lu2))
	f.fails([]byte{0, 0, 0, 0, 0, 0}, nil, 0, scsi.SenseUnitAttention, 0x3f, 0x0e)
}

func BenchmarkRead4K(b *testing.B) {
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "bench"})
	require.NoError(b, err)
	defer lu.Close()
	tgt := scsi.NewTarget()
	require.NoError(b, tgt.Attach(0, lu))
	ctx := context.Background()
	tgt.Execute(ctx, &scsi.Command{Nexus: nexusA, CDB: []byte{0, 0, 0, 0, 0, 0}})
	cdb := read10(8, 8)
	in := make([]byte, 4096)
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cmd := &scsi.Command{Nexus: nexusA, CDB: cdb, DataIn: make([]byte, len(in))}
		for pb.Next() {
			if res := tgt.Execute(ctx, cmd); res.Status != scsi.StatusGood {
				b.Fatalf("status %x", res.Status)
			}
		}
	})
}
