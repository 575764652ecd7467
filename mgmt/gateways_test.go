package mgmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// gatewayConfig is the configuration of one of two gateways exporting
// the file image under target "ha": its own portal (tag local, listening
// on port) and the other gateway's as a remote portal (tag remote), with
// the same extent identity on both.
func gatewayConfig(t *testing.T, image string, local, remote, port int, localState, remoteState string) *Config {
	t.Helper()
	text := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example", "alua": true},
  "portals": [
    {"id": %d, "tag": %d, "listen": [{"ip": "127.0.0.1", "port": %d}], "alua_state": %q},
    {"id": %d, "tag": %d, "remote": true, "alua_state": %q}
  ],
  "targets": [{"id": 1, "name": "ha", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "ha0", "type": "FILE", "path": %q, "filesize": 4194304,
               "direct": true, "write_cache": false,
               "serial": "ha0serial0000001", "naa": "0x6001405a1b2c3d4e5f60718293a4b5c6"}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, local, local, port, localState, remote, remote, remoteState, image)
	var cfg Config
	require.NoError(t, json.Unmarshal([]byte(text), &cfg))
	return &cfg
}

// designators reads VPD page 0x83 through c: the designator of each
// association and type (association<<4 | type).
func designators(t *testing.T, c *initiator.Conn) map[byte][]byte {
	t.Helper()
	s, vpd := senseOf(t, c, []byte{0x12, 1, 0x83, 0x01, 0, 0}, nil, 256)
	require.Zero(t, s, "VPD 0x83")
	out := map[byte][]byte{}
	for off := 4; off+4 <= len(vpd); off += 4 + int(vpd[off+3]) {
		out[vpd[off+1]&0x3f] = vpd[off+4 : off+4+int(vpd[off+3])]
	}
	return out
}

// TestTwoGatewaysALUA runs two Managers, each with its own Server, as two
// gateways exporting one file image (opened O_DIRECT on both, so neither
// reads a cache of its own) under the same target name: gateway A serves
// portal group 1, active/optimized, and knows group 2 as remote; gateway B
// serves group 2, active/non-optimized, and knows group 1 as remote.
// Through either path the initiator sees one logical unit (the same NAA
// and serial) with both groups in the same states, each path naming its
// own group and relative port; implicit ALUA only, SET TARGET PORT GROUPS
// refused on both; a write through A reads back through B; no
// reservation commands (a file has no shared reservation store); a failover
// configured on both gateways reaches both paths.
func TestTwoGatewaysALUA(t *testing.T) {
	image := filepath.Join(t.TempDir(), "ha0.img")
	type gateway struct {
		m    *Manager
		addr string
		c    *initiator.Conn
	}
	start := func(local, remote int, localState, remoteState string, isid byte) *gateway {
		srv, addr, port := liveServer(t)
		cfg := gatewayConfig(t, image, local, remote, port, localState, remoteState)
		m, err := New(ctx, Options{Store: &MemoryStore{}, Server: srv, Initial: cfg})
		require.NoError(t, err)
		t.Cleanup(func() { m.Close() })
		c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: "iqn.2026-11.io.example:ha", ISID: [6]byte{0x80, 0, 0, 0, 0, isid}})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		drainUAs(t, c)
		return &gateway{m: m, addr: addr, c: c}
	}
	a := start(1, 2, ALUAActiveOptimized, ALUAActiveNonOptimized, 1)
	b := start(2, 1, ALUAActiveNonOptimized, ALUAActiveOptimized, 2)

	want := map[uint16][2]byte{1: {0, 0}, 2: {1, 0}}
	var naa, serial []byte
	for i, g := range []*gateway{a, b} {
		tag := uint32(i + 1)
		require.Equal(t, want, groupsOf(t, g.c), "RTPG through gateway %d", tag)
		s, inq := senseOf(t, g.c, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96)
		require.Zero(t, s)
		require.Equal(t, byte(0x10), inq[5]&0x30, "TPGS 01b: implicit only")
		d := designators(t, g.c)
		require.Equal(t, []byte{0, 0, 0, byte(tag)}, d[0x15], "target port group through gateway %d", tag)
		require.Equal(t, []byte{0, 0, 0, byte(tag)}, d[0x14], "relative target port through gateway %d", tag)
		s, sn := senseOf(t, g.c, []byte{0x12, 1, 0x80, 0, 255, 0}, nil, 255)
		require.Zero(t, s)
		if i == 0 {
			naa, serial = d[0x03], sn[4:]
			require.Len(t, naa, 16)
			continue
		}
		require.Equal(t, naa, d[0x03], "the same NAA through both gateways")
		require.Equal(t, serial, sn[4:], "the same serial through both gateways")
		// SET TARGET PORT GROUPS is not offered: its state would stay on
		// one gateway.
		param := []byte{0, 0, 0, 0, 0, 0, 0, 2}
		s, _ = senseOf(t, g.c, []byte{0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, byte(len(param)), 0, 0}, param, 0)
		require.Equal(t, [3]byte{5, 0x20, 0}, s)
	}

	// A write through A is read through B.
	block := bytes.Repeat([]byte("gateway A wrote this block. "), 19)[:512]
	s, _ := senseOf(t, a.c, []byte{0x2a, 0x08, 0, 0, 0, 7, 0, 0, 1, 0}, block, 0)
	require.Zero(t, s, "WRITE(10) FUA through A")
	s, got := senseOf(t, b.c, []byte{0x28, 0, 0, 0, 0, 7, 0, 0, 1, 0}, nil, 512)
	require.Zero(t, s)
	require.Equal(t, block, got)

	// A FILE extent has no store the two gateways share, so neither
	// offers reservations: one kept by a gateway alone would fence
	// nothing from the other's initiators.
	for _, g := range []*gateway{a, b} {
		s, _ := senseOf(t, g.c, []byte{0x5e, 0, 0, 0, 0, 0, 0, 0, 8, 0}, nil, 8)
		require.Equal(t, [3]byte{5, 0x20, 0}, s, "PERSISTENT RESERVE IN")
		s, _ = senseOf(t, g.c, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
		require.Equal(t, [3]byte{5, 0x20, 0}, s, "RESERVE(6)")
	}

	// Fail over: the operator swaps the states on both gateways; each
	// path hears ASYMMETRIC ACCESS STATE CHANGED and both report the new
	// states.
	_, err := a.m.UpdatePortal(ctx, 1, func(p *Portal) error { p.ALUAState = ALUAStandby; return nil })
	require.NoError(t, err)
	_, err = a.m.UpdatePortal(ctx, 2, func(p *Portal) error { p.ALUAState = ALUAActiveOptimized; return nil })
	require.NoError(t, err)
	_, err = b.m.UpdatePortal(ctx, 1, func(p *Portal) error { p.ALUAState = ALUAStandby; return nil })
	require.NoError(t, err)
	_, err = b.m.UpdatePortal(ctx, 2, func(p *Portal) error { p.ALUAState = ALUAActiveOptimized; return nil })
	require.NoError(t, err)
	for _, g := range []*gateway{a, b} {
		require.Contains(t, drainUAs(t, g.c), uaALUA)
		require.Equal(t, map[uint16][2]byte{1: {2, 2}, 2: {0, 2}}, groupsOf(t, g.c))
	}
	s, _ = senseOf(t, a.c, read10, nil, 512)
	require.Equal(t, notReadyStby, s, "A is standby now")
	s, _ = senseOf(t, b.c, read10, nil, 512)
	require.Zero(t, s)

	// A remote portal without addresses: discovery through A lists A's
	// own portal only.
	require.Nil(t, a.m.PortalAddrs(2))
	d, err := initiator.Dial(ctx, a.addr, initiator.Options{})
	require.NoError(t, err)
	defer d.Close()
	st, err := d.SendTargets(ctx, "All")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{"iqn.2026-11.io.example:ha": {a.addr + ",1"}}, st)

	// Each gateway given the addresses the other listens on (and an IPv6
	// one, in brackets per RFC 7143 §13.12): SendTargets through either
	// lists both portal groups with their tags; neither listens on the
	// other's addresses.
	listenOf := func(addr string) []Listen {
		ap := netip.MustParseAddrPort(addr)
		return []Listen{{IP: ap.Addr().String(), Port: int(ap.Port())}, {IP: "::1", Port: 3999}}
	}
	_, err = a.m.UpdatePortal(ctx, 2, func(p *Portal) error { p.Listen = listenOf(b.addr); return nil })
	require.NoError(t, err)
	_, err = b.m.UpdatePortal(ctx, 1, func(p *Portal) error { p.Listen = listenOf(a.addr); return nil })
	require.NoError(t, err)
	require.Nil(t, a.m.PortalAddrs(2), "A does not listen on B's portal")
	for g, want := range map[*gateway][]string{
		a: {a.addr + ",1", b.addr + ",2", "[::1]:3999,2"},
		b: {a.addr + ",1", "[::1]:3999,1", b.addr + ",2"},
	} {
		d, err := initiator.Dial(ctx, g.addr, initiator.Options{})
		require.NoError(t, err)
		st, err := d.SendTargets(ctx, "All")
		d.Close()
		require.NoError(t, err)
		require.Equal(t, map[string][]string{"iqn.2026-11.io.example:ha": want}, st, "SendTargets through %s", g.addr)
	}

	// A remote portal names the other gateway's real addresses: no
	// wildcard, no port 0.
	_, err = a.m.UpdatePortal(ctx, 2, func(p *Portal) error {
		p.Listen = []Listen{{IP: "0.0.0.0", Port: 3260}, {IP: "10.0.0.2", Port: 0}}
		return nil
	})
	var me *Error
	require.ErrorAs(t, err, &me)
	require.ErrorContains(t, err, "wildcard")
	require.ErrorContains(t, err, "not 0")
}
