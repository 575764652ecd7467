package main

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// runDaemon runs iscsid on stateDir until the returned stop is called.
func runDaemon(t *testing.T, stateDir, addr string) (stop func()) {
	t.Helper()
	return runInProcess(t, config{stateDir: stateDir, portal: addr}, nil, addr).stop
}

// dialReady logs in to defaultTarget as initiator name and consumes the
// unit attentions a new nexus meets.
func dialReady(t *testing.T, addr, name string) *initiator.Conn {
	t.Helper()
	return dialWith(t, addr, initiator.Options{TargetName: defaultTarget, InitiatorName: name})
}

// dialWith logs in to addr with opt and consumes the unit attentions a
// new nexus meets.
func dialWith(t *testing.T, addr string, opt initiator.Options) *initiator.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := initiator.Dial(ctx, addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	var err2 error
	for range 4 {
		if err2 = c.TestUnitReady(ctx, 0); err2 == nil {
			break
		}
	}
	require.NoError(t, err2)
	return c
}

func proutCDB(sa, typ byte) []byte { return []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0} }

func proutParams(key, saKey uint64, aptpl bool) []byte {
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	if aptpl {
		p[20] = 0x01
	}
	return p
}

// TestAPTPLReservationSurvivesRestart registers with APTPL and reserves
// (Write Exclusive), restarts iscsid on the same state directory, and
// finds the registration and the reservation in force.
func TestAPTPLReservationSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stop := runDaemon(t, state, addr)
	a := dialReady(t, addr, "iqn.2026-11.io.example:a")
	res, err := a.Command(ctx, 0, proutCDB(0x00, 0), proutParams(0, 0xabc, true), 0)
	require.NoError(t, err)
	require.Zero(t, res.Status, "REGISTER with APTPL: sense %x", res.Sense)
	res, err = a.Command(ctx, 0, proutCDB(0x01, 0x01), proutParams(0xabc, 0, false), 0)
	require.NoError(t, err)
	require.Zero(t, res.Status, "RESERVE: sense %x", res.Sense)
	entries, err := os.ReadDir(filepath.Join(state, "reservations"))
	require.NoError(t, err)
	require.Len(t, entries, 1)
	a.Close()
	stop()

	runDaemon(t, state, addr)
	b := dialReady(t, addr, "iqn.2026-11.io.example:b")
	keys, err := b.Command(ctx, 0, []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0x01, 0, 0}, nil, 256)
	require.NoError(t, err)
	require.Zero(t, keys.Status)
	require.Equal(t, uint32(8), binary.BigEndian.Uint32(keys.Data[4:]))
	require.Equal(t, uint64(0xabc), binary.BigEndian.Uint64(keys.Data[8:]))
	// B may read but not write: A still holds Write Exclusive.
	_, err = b.ReadBlocks(ctx, 0, 0, 1, 512)
	require.NoError(t, err)
	w, err := b.Command(ctx, 0, []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, make([]byte, 512), 0)
	require.NoError(t, err)
	require.Equal(t, byte(0x18), w.Status, "RESERVATION CONFLICT")
}

// TestReservationsAreSharedAcrossPortals reaches target beta's LUN
// through both portals, one session each (one initiator, two ISIDs, as a
// multipath initiator does): a reservation taken on one path governs the
// other, and a LUN reset on one path keeps it while both paths hear of
// the reset.
func TestReservationsAreSharedAcrossPortals(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	a1, a2 := "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	startDaemonWithConfig(t, dir, twoTargets(dir, p1, p2), a1)
	waitListening(t, a2, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const beta = "iqn.2026-11.io.example:beta"
	path := func(addr string, isid byte, name string) *initiator.Conn {
		c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: beta, InitiatorName: name, ISID: [6]byte{0x80, 0, 0, 0, 0, isid}})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		for range 4 {
			if c.TestUnitReady(ctx, 0) == nil {
				break
			}
		}
		require.NoError(t, c.TestUnitReady(ctx, 0))
		return c
	}
	x := path(a1, 1, "iqn.2026-11.io.example:x")
	y := path(a2, 2, "iqn.2026-11.io.example:y")
	do := func(c *initiator.Conn, cdb, out []byte) *initiator.Response {
		t.Helper()
		in := 512
		if out != nil {
			in = 0
		}
		res, err := c.Command(ctx, 0, cdb, out, in)
		require.NoError(t, err)
		return res
	}
	require.Zero(t, do(x, proutCDB(0x00, 0), proutParams(0, 0x1, false)).Status)
	require.Zero(t, do(x, proutCDB(0x01, 0x03), proutParams(0x1, 0, false)).Status) // Exclusive Access
	read := []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	require.Equal(t, byte(0x18), do(y, read, nil).Status, "the other portal conflicts")
	require.Zero(t, do(x, read, nil).Status)

	// A LUN reset on x's path: both paths get the unit attention, the
	// persistent reservation stays.
	resp, err := x.TaskManagement(ctx, pdu.TMFLogicalUnitReset, 0, pdu.ReservedTag)
	require.NoError(t, err)
	require.EqualValues(t, pdu.TMFResponseComplete, resp)
	for _, c := range []*initiator.Conn{x, y} {
		var se *initiator.StatusError
		require.ErrorAs(t, c.TestUnitReady(ctx, 0), &se)
		key, asc, ascq := se.SenseKey()
		require.Equal(t, [3]byte{6, 0x29, 0x03}, [3]byte{key, asc, ascq})
	}
	require.Equal(t, byte(0x18), do(y, read, nil).Status)
	keys := do(y, []byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0x01, 0, 0}, nil)
	require.Zero(t, keys.Status)
	require.Equal(t, uint64(1), binary.BigEndian.Uint64(keys.Data[8:]))
}
