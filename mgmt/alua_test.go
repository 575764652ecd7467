package mgmt

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/scsi"
)

// senseOf runs cdb and returns the sense key, ASC and ASCQ it ended with
// (zeros for GOOD) and the data it read.
func senseOf(t *testing.T, c *initiator.Conn, cdb, out []byte, in int) ([3]byte, []byte) {
	t.Helper()
	resp, err := c.Command(ctx, 0, cdb, out, in)
	require.NoError(t, err)
	if resp.Status == 0 {
		return [3]byte{}, resp.Data
	}
	k, asc, ascq := initiator.ParseSense(resp.Sense)
	return [3]byte{k, asc, ascq}, nil
}

// drainUAs consumes the unit attentions pending for c's nexus and
// returns them.
func drainUAs(t *testing.T, c *initiator.Conn) [][3]byte {
	t.Helper()
	var got [][3]byte
	for range 8 {
		err := c.TestUnitReady(ctx, 0)
		var se *initiator.StatusError
		if !errors.As(err, &se) {
			break
		}
		k, asc, ascq := se.SenseKey()
		if k != 6 {
			break
		}
		got = append(got, [3]byte{k, asc, ascq})
	}
	return got
}

// groupsOf reads REPORT TARGET PORT GROUPS (extended header) through c:
// group id -> access state and status code.
func groupsOf(t *testing.T, c *initiator.Conn) map[uint16][2]byte {
	t.Helper()
	s, data := senseOf(t, c, []byte{0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Zero(t, s, "RTPG failed")
	require.Equal(t, byte(0x10), data[4], "extended header")
	out := map[uint16][2]byte{}
	for off := 8; off+8 <= len(data); off += 8 + 4*int(data[off+7]) {
		d := data[off:]
		id := binary.BigEndian.Uint16(d[2:4])
		require.Equal(t, uint32(id), binary.BigEndian.Uint32(d[8:12]), "relative port of group %d", id)
		out[id] = [2]byte{d[0] & 0x0f, d[5]}
	}
	return out
}

var (
	read10       = []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	uaALUA       = [3]byte{6, 0x2a, 0x06}
	notReadyStby = [3]byte{2, 0x04, 0x0b}
)

// TestALUAThroughPortals serves one LUN through two portals with ALUA
// on: the access states set through mgmt show in REPORT TARGET PORT
// GROUPS, reads through the standby portal fail while the active one
// serves, SET TARGET PORT GROUPS moves them with a unit attention on the
// other nexus, and a changed portal state reaches both.
func TestALUAThroughPortals(t *testing.T) {
	srv, addr1, port1 := liveServer(t)
	_, addr2, port2 := liveServer(t)
	m, _ := newManager(t, srv)
	p1, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port1}}})
	require.NoError(t, err)
	_, err = m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, ALUAState: ALUAStandby, Listen: []Listen{{IP: "127.0.0.1", Port: port2}}})
	var me *Error
	require.ErrorAs(t, err, &me, "a standby portal without ALUA on")
	require.Equal(t, "alua_state", me.Field)
	_, err = m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, ALUAState: "PASSIVE", Listen: []Listen{{IP: "127.0.0.1", Port: port2}}})
	require.ErrorAs(t, err, &me)
	require.Equal(t, "alua_state", me.Field)

	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.ALUA = true; return nil })
	require.NoError(t, err)
	p2, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, ALUAState: ALUAStandby, Listen: []Listen{{IP: "127.0.0.1", Port: port2}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "ha", []TargetGroup{{Portal: p1.ID, AuthMethod: AuthNone}, {Portal: p2.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "ha0", "/srv/ha0.img", 1<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 0})
	require.NoError(t, err)

	name := DefaultBasename + ":ha"
	c1, err := initiator.Dial(ctx, addr1, initiator.Options{TargetName: name})
	require.NoError(t, err)
	defer c1.Close()
	c2, err := initiator.Dial(ctx, addr2, initiator.Options{TargetName: name, ISID: [6]byte{0x80, 0, 0, 0, 0, 2}})
	require.NoError(t, err)
	defer c2.Close()
	drainUAs(t, c1)
	drainUAs(t, c2)

	tag1, tag2 := uint16(p1.Tag), uint16(p2.Tag)
	require.Equal(t, map[uint16][2]byte{tag1: {0, 0}, tag2: {2, 0}}, groupsOf(t, c1))
	require.Equal(t, map[uint16][2]byte{tag1: {0, 0}, tag2: {2, 0}}, groupsOf(t, c2))
	s, inq := senseOf(t, c2, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96)
	require.Zero(t, s)
	require.Equal(t, byte(0x30), inq[5]&0x30, "TPGS: implicit and explicit")

	// The standby path refuses reads; the active one serves them.
	s, _ = senseOf(t, c2, read10, nil, 512)
	require.Equal(t, notReadyStby, s)
	s, _ = senseOf(t, c1, read10, nil, 512)
	require.Zero(t, s)

	// SET TARGET PORT GROUPS through the standby path swaps them.
	param := []byte{0, 0, 0, 0, byte(scsi.AccessStandby), 0, byte(tag1 >> 8), byte(tag1), byte(scsi.AccessActiveOptimized), 0, byte(tag2 >> 8), byte(tag2)}
	s, _ = senseOf(t, c2, []byte{0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, byte(len(param)), 0, 0}, param, 0)
	require.Zero(t, s)
	require.Equal(t, [][3]byte{uaALUA}, drainUAs(t, c1))
	require.Empty(t, drainUAs(t, c2), "the issuer of SET TARGET PORT GROUPS")
	s, _ = senseOf(t, c1, read10, nil, 512)
	require.Equal(t, notReadyStby, s)
	s, _ = senseOf(t, c2, read10, nil, 512)
	require.Zero(t, s)
	require.Equal(t, map[uint16][2]byte{tag1: {2, 1}, tag2: {0, 1}}, groupsOf(t, c1))

	// A change elsewhere in the configuration leaves the states alone.
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Comment = "moved"; return nil })
	require.NoError(t, err)
	require.Equal(t, map[uint16][2]byte{tag1: {2, 1}, tag2: {0, 1}}, groupsOf(t, c2))

	// The product fails back through mgmt: every nexus hears of it.
	_, err = m.UpdatePortal(ctx, p1.ID, func(p *Portal) error { p.ALUAState = ALUAActiveNonOptimized; return nil })
	require.NoError(t, err)
	require.Equal(t, [][3]byte{uaALUA}, drainUAs(t, c1))
	require.Equal(t, [][3]byte{uaALUA}, drainUAs(t, c2))
	s, _ = senseOf(t, c1, read10, nil, 512)
	require.Zero(t, s)
	require.Equal(t, map[uint16][2]byte{tag1: {1, 2}, tag2: {0, 1}}, groupsOf(t, c1))

	// ALUA off: no groups, every path serves.
	_, err = m.UpdatePortal(ctx, p1.ID, func(p *Portal) error { p.ALUAState = ""; return nil })
	require.NoError(t, err)
	_, err = m.UpdatePortal(ctx, p2.ID, func(p *Portal) error { p.ALUAState = ""; return nil })
	require.NoError(t, err)
	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.ALUA = false; return nil })
	require.NoError(t, err)
	drainUAs(t, c1)
	s, _ = senseOf(t, c1, []byte{0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, [3]byte{5, 0x24, 0}, s)
	s, _ = senseOf(t, c1, read10, nil, 512)
	require.Zero(t, s)
}
