package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// haTarget is the target both gateways of the two-gateway tests export.
const haTarget = "iqn.2026-11.io.example:ha"

// Identity both gateways give the shared extent, so the initiator sees
// one logical unit through either.
const (
	haSerial = "ha0serial0000001"
	haNAA    = "0x6001405a1b2c3d4e5f60718293a4b5c6"
)

// gateway is one of two iscsid exporting the same storage under
// haTarget: its own portal group (tag, listening on addr) and the other
// gateway's as a remote portal.
type gateway struct {
	tag, remote int
	port        int
	addr        string
	extent      string
	dir         string
	d           *daemon
}

// startGateway runs iscsid as the gateway of portal group local (in
// localState), knowing group remote (in remoteState) as the other
// gateway's, with extent (the JSON of extent 1, without its identity) as
// LUN 0 of haTarget. FILE extents may live in dirs.
func startGateway(t *testing.T, local, remote int, localState, remoteState, extent string, dirs ...string) *gateway {
	t.Helper()
	g := &gateway{tag: local, remote: remote, port: freePort(t), extent: extent, dir: t.TempDir()}
	g.addr = "127.0.0.1:" + strconv.Itoa(g.port)
	g.write(t, localState, remoteState)
	g.d = runInProcess(t, config{stateDir: g.dir, portal: "127.0.0.1:1", dirs: dirs}, nil, g.addr)
	return g
}

// write writes g's config.json with its groups in these states.
func (g *gateway) write(t *testing.T, localState, remoteState string) {
	t.Helper()
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example", "alua": true},
  "portals": [
    {"id": 1, "tag": %d, "listen": [{"ip": "127.0.0.1", "port": %d}], "alua_state": %q},
    {"id": 2, "tag": %d, "remote": true, "alua_state": %q}
  ],
  "targets": [{"id": 1, "name": "ha", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "ha0", "serial": %q, "naa": %q, %s}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, g.tag, g.port, localState, g.remote, remoteState, haSerial, haNAA, g.extent)
	require.NoError(t, os.WriteFile(filepath.Join(g.dir, "config.json"), []byte(cfg), 0o600))
}

// reconfigure rewrites g's config.json with new states and makes the
// daemon apply it (kill -HUP).
func (g *gateway) reconfigure(t *testing.T, localState, remoteState string) {
	t.Helper()
	g.write(t, localState, remoteState)
	g.d.hup <- syscall.SIGHUP
}

// dialGateway logs in to haTarget through g and takes the unit
// attentions a new nexus gets.
func dialGateway(t *testing.T, g *gateway, isid byte) *initiator.Conn {
	return dialWith(t, g.addr, initiator.Options{TargetName: haTarget, ISID: [6]byte{0x80, 0, 0, 0, 0, isid}})
}

// good runs cdb through c and requires GOOD; it returns the data read.
func good(ctx context.Context, t *testing.T, c *initiator.Conn, cdb, out []byte, in int) []byte {
	t.Helper()
	resp, err := c.Command(ctx, 0, cdb, out, in)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "CDB %x: sense %x", cdb, resp.Sense)
	return resp.Data
}

// rtpgCDB is REPORT TARGET PORT GROUPS (length-only header) for 256
// bytes.
var rtpgCDB = []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}

// portGroups reads REPORT TARGET PORT GROUPS data: group -> access
// state, each group holding the one relative target port of its number.
func portGroups(t *testing.T, data []byte) map[uint16]byte {
	t.Helper()
	got := map[uint16]byte{}
	for off := 4; off+8 <= len(data); off += 8 + 4*int(data[off+7]) {
		d := data[off:]
		id := binary.BigEndian.Uint16(d[2:4])
		require.Equal(t, byte(1), d[7], "one port in group %d", id)
		require.Equal(t, uint32(id), binary.BigEndian.Uint32(d[8:12]), "group %d's relative port", id)
		got[id] = d[0] & 0x0f
	}
	return got
}

// awaitStates asks REPORT TARGET PORT GROUPS through c until it reports
// want, and requires ASYMMETRIC ACCESS STATE CHANGED (2A/06) on the way.
func awaitStates(ctx context.Context, t *testing.T, c *initiator.Conn, want map[uint16]byte) {
	t.Helper()
	told := false
	var got map[uint16]byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := c.Command(ctx, 0, rtpgCDB, nil, 256)
		require.NoError(t, err)
		if resp.Status != 0 {
			k, asc, ascq := initiator.ParseSense(resp.Sense)
			told = told || (k == 6 && asc == 0x2a && ascq == 0x06)
			continue
		}
		if got = portGroups(t, resp.Data); reflect.DeepEqual(got, want) {
			require.True(t, told, "ASYMMETRIC ACCESS STATE CHANGED")
			return
		}
	}
	t.Fatalf("REPORT TARGET PORT GROUPS reports %v, not %v", got, want)
}

// requireOneUnit checks what each path (conns[i] through gateways[i])
// reports: the same NAA and serial, TPGS 01b (implicit ALUA only), every
// gateway's target port group in want (group -> access state) through
// every path, each path naming its own group and relative target port in
// VPD page 0x83, and SET TARGET PORT GROUPS refused (20/00).
func requireOneUnit(ctx context.Context, t *testing.T, gateways []*gateway, conns []*initiator.Conn, want map[uint16]byte) {
	t.Helper()
	naa, err := hex.DecodeString(haNAA[2:])
	require.NoError(t, err)
	for i, c := range conns {
		tag := uint32(gateways[i].tag)
		require.Equal(t, byte(0x10), good(ctx, t, c, []byte{0x12, 0, 0, 0, 96, 0}, nil, 96)[5]&0x30, "TPGS 01b through group %d", tag)
		require.Equal(t, haSerial, string(good(ctx, t, c, []byte{0x12, 1, 0x80, 0, 255, 0}, nil, 255)[4:]))
		vpd := good(ctx, t, c, []byte{0x12, 1, 0x83, 0x01, 0, 0}, nil, 256)
		ids := map[byte][]byte{}
		for off := 4; off+4 <= len(vpd); off += 4 + int(vpd[off+3]) {
			ids[vpd[off+1]&0x3f] = vpd[off+4 : off+4+int(vpd[off+3])]
		}
		require.Equal(t, naa, ids[0x03], "NAA through group %d", tag)
		require.Equal(t, binary.BigEndian.AppendUint32(nil, tag), ids[0x14], "relative target port through group %d", tag)
		require.Equal(t, binary.BigEndian.AppendUint32(nil, tag), ids[0x15], "target port group through group %d", tag)

		require.Equal(t, want, portGroups(t, good(ctx, t, c, rtpgCDB, nil, 256)), "REPORT TARGET PORT GROUPS through group %d", tag)

		resp, err := c.Command(ctx, 0, []byte{0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, []byte{0, 0, 0, 0, 0, 0, 0, byte(tag)}, 0)
		require.NoError(t, err)
		require.EqualValues(t, 2, resp.Status)
		require.Equal(t, []byte{5, 0x20, 0}, []byte{resp.Sense[2] & 0x0f, resp.Sense[12], resp.Sense[13]}, "SET TARGET PORT GROUPS refused")
	}
}

// requireWritesCross writes through each path and reads it back through
// the other.
func requireWritesCross(ctx context.Context, t *testing.T, a, b *initiator.Conn) {
	t.Helper()
	for i, pair := range [][2]*initiator.Conn{{a, b}, {b, a}} {
		lba := uint32(1000 + 100*i)
		data := make([]byte, 64<<10)
		rand.Read(data)
		good(ctx, t, pair[0], []byte{0x2a, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, 0, 128, 0}, data, 0)
		got := good(ctx, t, pair[1], []byte{0x28, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, 0, 128, 0}, nil, len(data))
		require.True(t, bytes.Equal(data, got), "written through one gateway, read through the other (%d)", i)
	}
}

// TestTwoGatewaysALUA runs two iscsid exporting one file image (opened
// O_DIRECT by both, write cache off) under one target name: gateway A
// serves portal group 1 active/optimized, gateway B group 2
// active/non-optimized, each knowing the other's group as remote. Through
// either path the initiator sees one logical unit with both groups, data
// written through one path is read through the other, and libiscsi's
// iscsi-inq sees TPGS 1 and the target port group designator. A failover
// (both configurations edited, kill -HUP) reaches both paths.
func TestTwoGatewaysALUA(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	shared := t.TempDir()
	extent := fmt.Sprintf(`"type": "FILE", "path": %q, "filesize": 16777216, "direct": true, "write_cache": false`, filepath.Join(shared, "ha0.img"))
	a := startGateway(t, 1, 2, "ACTIVE_OPTIMIZED", "ACTIVE_NON_OPTIMIZED", extent, shared)
	b := startGateway(t, 2, 1, "ACTIVE_NON_OPTIMIZED", "ACTIVE_OPTIMIZED", extent, shared)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, cb := dialGateway(t, a, 1), dialGateway(t, b, 2)
	requireOneUnit(ctx, t, []*gateway{a, b}, []*initiator.Conn{ca, cb}, map[uint16]byte{1: 0, 2: 1})
	requireWritesCross(ctx, t, ca, cb)
	for _, g := range []*gateway{a, b} {
		url := "iscsi://" + g.addr + "/" + haTarget + "/0"
		out, err := exec.Command(inq, url).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "TPGS:1")
		out, err = exec.Command(inq, "-e", "1", "-c", "131", url).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "Designator Type:(5) TARGET_PORT_GROUP")
	}

	// Fail over to B: both gateways' configurations change and are
	// reloaded; each path hears of it and reports the new states, and
	// the standby path refuses reads.
	a.reconfigure(t, "STANDBY", "ACTIVE_OPTIMIZED")
	b.reconfigure(t, "ACTIVE_OPTIMIZED", "STANDBY")
	for _, c := range []*initiator.Conn{ca, cb} {
		awaitStates(ctx, t, c, map[uint16]byte{1: 2, 2: 0})
	}
	resp, err := ca.Command(ctx, 0, []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, 512)
	require.NoError(t, err)
	k, asc, ascq := initiator.ParseSense(resp.Sense)
	require.Equal(t, [3]byte{2, 0x04, 0x0b}, [3]byte{k, asc, ascq}, "READ through the standby gateway")
	good(ctx, t, cb, []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, 512)
}
