package scsi_test

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

func rtpg(extended bool) []byte {
	cdb := []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0}
	if extended {
		cdb[1] |= 0x20
	}
	return cdb
}

func stpg(n int) []byte {
	return []byte{0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, byte(n), 0, 0}
}

// tpgDescs decodes REPORT TARGET PORT GROUPS data into group id -> state
// and status code, checking the descriptors' ports.
func tpgDescs(t *testing.T, data []byte, hdr int) map[uint16][2]byte {
	t.Helper()
	require.Equal(t, int(binary.BigEndian.Uint32(data)), len(data)-4)
	out := map[uint16][2]byte{}
	for off := hdr; off < len(data); {
		d := data[off:]
		id := binary.BigEndian.Uint16(d[2:4])
		require.Equal(t, byte(0x8f), d[1], "supported states")
		require.Equal(t, byte(1), d[7], "one port per group")
		require.Equal(t, uint32(id), binary.BigEndian.Uint32(d[8:12]), "port numbered like its group")
		out[id] = [2]byte{d[0] & 0x0f, d[5]}
		off += 8 + 4*int(d[7])
	}
	return out
}

func TestALUA(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	// Off: no TPGS, no RTPG, no STPG.
	inq := f.good([]byte{0x12, 0, 0, 0, 96, 0}, nil, 96)
	require.Zero(t, inq[5]&0x30)
	f.fails(rtpg(false), nil, 1024, scsi.SenseIllegalRequest, 0x24, 0)
	f.fails(stpg(0), nil, 0, scsi.SenseIllegalRequest, 0x20, 0)

	require.NoError(t, f.lu.SetPortGroups([]scsi.PortGroup{
		{ID: 1, Ports: []uint16{1}},
		{ID: 2, Ports: []uint16{2}, State: scsi.AccessStandby},
	}))
	require.Error(t, f.lu.SetPortGroups([]scsi.PortGroup{{ID: 1, Ports: []uint16{1}}, {ID: 2, Ports: []uint16{1}}}))
	require.Error(t, f.lu.SetPortGroups([]scsi.PortGroup{{ID: 1, State: 7}}))
	res := f.run(nexusA, 0, rtpg(false), nil, 1024)
	f.requireSense(res, scsi.SenseUnitAttention, 0x3f, 0x03)
	f.clearUAs(nexusB)
	f.clearUAs(nexusA2)

	inq = f.good([]byte{0x12, 0, 0, 0, 96, 0}, nil, 96)
	require.Equal(t, byte(0x30), inq[5]&0x30, "TPGS 11b")

	// VPD 0x83 names the target port group of the nexus's port.
	vpd := f.good([]byte{0x12, 1, 0x83, 0x01, 0, 0}, nil, 256)
	found := false
	for off := 4; off+4 <= len(vpd); off += 4 + int(vpd[off+3]) {
		if vpd[off+1]&0x3f == 0x15 {
			require.Equal(t, []byte{0, 0, 0, 1}, vpd[off+4:off+8])
			found = true
		}
	}
	require.True(t, found, "target port group designator in %x", vpd)

	// RTPG in both formats.
	for _, ext := range []bool{false, true} {
		hdr := 4
		if ext {
			hdr = 8
		}
		data := f.good(rtpg(ext), nil, 1024)
		if ext {
			require.Equal(t, byte(0x10), data[4])
		}
		require.Equal(t, map[uint16][2]byte{1: {0, 0}, 2: {2, 0}}, tpgDescs(t, data, hdr))
	}
	f.fails([]byte{0xa3, 0x4a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0}, nil, 1024, scsi.SenseIllegalRequest, 0x24, 0)

	// Through the standby group: media access fails with 04/0B, what
	// describes the unit is served; the active group serves reads.
	res = f.run(nexusA2, 0, read10(0, 1), nil, bs)
	f.requireSense(res, scsi.SenseNotReady, 0x04, 0x0b)
	res = f.run(nexusA2, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	f.requireSense(res, scsi.SenseNotReady, 0x04, 0x0b)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, rtpg(true), nil, 1024).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, []byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, []byte{0x03, 0, 0, 0, 18, 0}, nil, 18).Status)
	require.Equal(t, []byte{0x02, 0x04, 0x0b}, []byte{f.lastIn[2] & 0x0f, f.lastIn[12], f.lastIn[13]}, "REQUEST SENSE tells the standby state")
	f.good(read10(0, 1), nil, bs)

	// STPG from nexus A2 swaps the groups: the other nexuses are told,
	// the issuer is not; the status codes say it was explicit.
	param := []byte{0, 0, 0, 0, byte(scsi.AccessStandby), 0, 0, 1, byte(scsi.AccessActiveOptimized), 0, 0, 2}
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, stpg(len(param)), param, 0).Status)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, read10(0, 1), nil, bs).Status)
	for _, n := range []scsi.Nexus{nexusA, nexusB} {
		res := f.run(n, 0, read10(0, 1), nil, bs)
		f.requireSense(res, scsi.SenseUnitAttention, 0x2a, 0x06)
		res = f.run(n, 0, read10(0, 1), nil, bs)
		f.requireSense(res, scsi.SenseNotReady, 0x04, 0x0b)
	}
	require.Equal(t, map[uint16][2]byte{1: {2, 1}, 2: {0, 1}}, f.rtpgOn(nexusA2))

	// Bad STPG parameter data changes nothing.
	bad := []byte{0, 0, 0, 0, byte(scsi.AccessActiveOptimized), 0, 0, 1, byte(scsi.AccessTransitioning), 0, 0, 2}
	res = f.run(nexusA2, 0, stpg(len(bad)), bad, 0)
	f.requireSense(res, scsi.SenseIllegalRequest, 0x26, 0)
	bad = []byte{0, 0, 0, 0, byte(scsi.AccessActiveOptimized), 0, 0, 9}
	res = f.run(nexusA2, 0, stpg(len(bad)), bad, 0)
	f.requireSense(res, scsi.SenseIllegalRequest, 0x26, 0)
	res = f.run(nexusA2, 0, stpg(6), bad[:6], 0)
	f.requireSense(res, scsi.SenseIllegalRequest, 0x1a, 0)

	// An implicit change (the product's failover) reaches every nexus,
	// and each refusing state has its own sense.
	for _, c := range []struct {
		state scsi.AccessState
		ascq  byte
	}{{scsi.AccessUnavailable, 0x0c}, {scsi.AccessTransitioning, 0x0a}} {
		require.NoError(t, f.lu.SetAccessState(2, c.state))
		res := f.run(nexusA2, 0, read10(0, 1), nil, bs)
		f.requireSense(res, scsi.SenseUnitAttention, 0x2a, 0x06)
		res = f.run(nexusA2, 0, read10(0, 1), nil, bs)
		f.requireSense(res, scsi.SenseNotReady, 0x04, c.ascq)
		require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, rtpg(false), nil, 1024).Status)
	}
	res = f.run(nexusA2, 0, stpg(0), nil, 0)
	f.requireSense(res, scsi.SenseNotReady, 0x04, 0x0a)
	require.ErrorIs(t, f.lu.SetAccessState(7, scsi.AccessStandby), scsi.ErrNoPortGroup)
	require.Equal(t, map[uint16][2]byte{1: {2, 1}, 2: {0xf, 2}}, f.rtpgOn(nexusA2))

	// Off again: everything is served.
	require.NoError(t, f.lu.SetPortGroups(nil))
	f.clearUAs(nexusA2)
	require.Equal(t, scsi.StatusGood, f.run(nexusA2, 0, read10(0, 1), nil, bs).Status)
	require.Empty(t, f.lu.PortGroups())
}

func TestALUAInReportSupportedOpcodes(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	one := func(op byte, sa uint16) byte {
		cdb := []byte{0xa3, 0x0c, 0x02, op, byte(sa >> 8), byte(sa), 0, 0, 1, 0, 0, 0}
		return f.good(cdb, nil, 256)[1] & 0x07
	}
	require.Equal(t, byte(1), one(0xa3, 0x0a))
	require.Equal(t, byte(1), one(0xa4, 0x0a))
	require.NoError(t, f.lu.SetPortGroups([]scsi.PortGroup{{ID: 1, Ports: []uint16{1}}}))
	f.clearUAs(nexusA)
	require.Equal(t, byte(3), one(0xa3, 0x0a))
	require.Equal(t, byte(3), one(0xa4, 0x0a))
}

// TestALUARemoteGroup: a group served by another gateway is reported with
// the state it is given; while one exists the unit offers implicit ALUA
// only, since a SET TARGET PORT GROUPS here would not reach the other
// gateway.
func TestALUARemoteGroup(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	supported := func(op byte, sa uint16) byte {
		cdb := []byte{0xa3, 0x0c, 0x02, op, byte(sa >> 8), byte(sa), 0, 0, 1, 0, 0, 0}
		return f.good(cdb, nil, 256)[1] & 0x07
	}
	require.NoError(t, f.lu.SetPortGroups([]scsi.PortGroup{{ID: 1, Ports: []uint16{1}}}))
	f.clearUAs(nexusA)
	f.clearUAs(nexusB)
	require.Equal(t, byte(0x30), f.good([]byte{0x12, 0, 0, 0, 96, 0}, nil, 96)[5]&0x30, "TPGS 11b")

	// A remote group turns explicit ALUA off: INQUIRY DATA HAS CHANGED.
	require.NoError(t, f.lu.SetPortGroups([]scsi.PortGroup{
		{ID: 1, Ports: []uint16{1}},
		{ID: 2, Ports: []uint16{2}, State: scsi.AccessActiveNonOptimized, Remote: true},
	}))
	f.requireSense(f.run(nexusB, 0, rtpg(false), nil, 1024), scsi.SenseUnitAttention, 0x3f, 0x03)
	f.clearUAs(nexusA)
	require.Equal(t, byte(0x10), f.good([]byte{0x12, 0, 0, 0, 96, 0}, nil, 96)[5]&0x30, "TPGS 01b")
	require.Equal(t, map[uint16][2]byte{1: {0, 0}, 2: {1, 0}}, f.rtpgOn(nexusA))
	require.Equal(t, map[uint16][2]byte{1: {0, 0}, 2: {1, 0}}, f.rtpgOn(nexusB))
	require.Equal(t, byte(3), supported(0xa3, 0x0a), "RTPG offered")
	require.Equal(t, byte(1), supported(0xa4, 0x0a), "STPG not offered")
	param := []byte{0, 0, 0, 0, byte(scsi.AccessActiveOptimized), 0, 0, 2}
	f.requireSense(f.run(nexusA, 0, stpg(len(param)), param, 0), scsi.SenseIllegalRequest, 0x20, 0)
	require.Equal(t, map[uint16][2]byte{1: {0, 0}, 2: {1, 0}}, f.rtpgOn(nexusA), "nothing moved")
	require.True(t, f.lu.PortGroups()[1].Remote)

	// The remote group's state is moved by the product (both gateways
	// are told the same): every nexus hears of it.
	require.NoError(t, f.lu.SetAccessState(2, scsi.AccessStandby))
	for _, n := range []scsi.Nexus{nexusA, nexusB} {
		f.requireSense(f.run(n, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x06)
		require.Equal(t, map[uint16][2]byte{1: {0, 0}, 2: {2, 2}}, f.rtpgOn(n))
	}

	// No remote group left: explicit ALUA again.
	require.NoError(t, f.lu.SetPortGroups([]scsi.PortGroup{{ID: 1, Ports: []uint16{1}}, {ID: 2, Ports: []uint16{2}}}))
	f.clearUAs(nexusA)
	require.Equal(t, byte(0x30), f.good([]byte{0x12, 0, 0, 0, 96, 0}, nil, 96)[5]&0x30, "TPGS 11b")
	require.Equal(t, byte(3), supported(0xa4, 0x0a))
}

// rtpgOn returns the groups REPORT TARGET PORT GROUPS reports through n.
func (f *fixture) rtpgOn(n scsi.Nexus) map[uint16][2]byte {
	f.t.Helper()
	res := f.run(n, 0, rtpg(false), nil, 1024)
	require.Equal(f.t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
	return tpgDescs(f.t, f.lastIn, 4)
}

// BenchmarkRead4KALUA is BenchmarkRead4K with ALUA on: four target port
// groups, the command's port in the last, active/non-optimized.
func BenchmarkRead4KALUA(b *testing.B) {
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "bench"})
	require.NoError(b, err)
	defer lu.Close()
	require.NoError(b, lu.SetPortGroups([]scsi.PortGroup{
		{ID: 4, Ports: []uint16{4}, State: scsi.AccessStandby},
		{ID: 3, Ports: []uint16{3}, State: scsi.AccessStandby},
		{ID: 2, Ports: []uint16{2}, State: scsi.AccessUnavailable},
		{ID: 1, Ports: []uint16{1}, State: scsi.AccessActiveNonOptimized},
	}))
	tgt := scsi.NewTarget()
	require.NoError(b, tgt.Attach(0, lu))
	ctx := context.Background()
	tgt.Execute(ctx, &scsi.Command{Nexus: nexusA, CDB: []byte{0, 0, 0, 0, 0, 0}})
	cdb := read10(8, 8)
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		cmd := &scsi.Command{Nexus: nexusA, CDB: cdb, DataIn: make([]byte, 4096)}
		for pb.Next() {
			if res := tgt.Execute(ctx, cmd); res.Status != scsi.StatusGood {
				b.Fatalf("status %x", res.Status)
			}
		}
	})
}
