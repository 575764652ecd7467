//go:build ceph

package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend/rbd"
	"github.com/iscsikit/iscsikit/internal/initiator"
)

// serveRBDGateway runs an iscsid exporting the image as LUN 0 of
// defaultTarget through one portal of group tag tag (the relative port
// of its nexuses), with librbd's cache off, and returns its address.
func serveRBDGateway(t *testing.T, o rbd.Options, tag int) string {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit"},
  "portals": [{"id": 1, "tag": %d, "listen": [{"ip": "127.0.0.1", "port": %d}]}],
  "targets": [{"id": 1, "name": "default", "groups": [{"portal": 1}]}],
  "extents": [{"id": 1, "name": "rbd0", "type": "RBD", "blocksize": 512,
    "params": {"pool": %q, "image": %q, "conf": %q, "timeout": "%d", "cache": "false"}}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, tag, port, o.Pool, o.Image, o.ConfigFile, int(o.Timeout/time.Second))
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startDaemonWithConfig(t, dir, cfg, addr)
	return addr
}

// prOut runs PERSISTENT RESERVE OUT and returns its status and sense.
func prOut(ctx context.Context, t *testing.T, c *initiator.Conn, sa, typ byte, key, saKey uint64) *initiator.Response {
	t.Helper()
	cdb := []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0}
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	resp, err := c.Command(ctx, 0, cdb, p, 0)
	require.NoError(t, err)
	return resp
}

// prIn runs PERSISTENT RESERVE IN service action sa and requires GOOD.
func prIn(ctx context.Context, t *testing.T, c *initiator.Conn, sa byte) []byte {
	t.Helper()
	resp, err := c.Command(ctx, 0, []byte{0x5e, sa, 0, 0, 0, 0, 0, 0x20, 0, 0}, nil, 0x2000)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "PERSISTENT RESERVE IN: sense %x", resp.Sense)
	return resp.Data
}

// prGateways runs two gateways on a new image, portal group tags 1 and
// 2, and returns a context for the test, the image, their addresses and
// a WRITE (16) of one block through a connection.
func prGateways(t *testing.T) (context.Context, rbd.Options, string, string, func(*initiator.Conn) *initiator.Response) {
	t.Helper()
	o := newRBDImage(t, 16<<20)
	a, b := serveRBDGateway(t, o, 1), serveRBDGateway(t, o, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	block := make([]byte, 512)
	write := func(c *initiator.Conn) *initiator.Response {
		resp, err := c.Command(ctx, 0, cdb16(0x8a, 7, 1), block, 0)
		require.NoError(t, err)
		return resp
	}
	return ctx, o, a, b, write
}

// TestRBDPersistentReservationsAcrossGateways runs two gateways (iscsid
// with their own cluster connections) on one image, portal group tags 1
// and 2, and checks that a reservation made through one holds through
// the other, a PREEMPT through the other ends the holder's access with
// a unit attention, and REGISTERs racing through both all land.
func TestRBDPersistentReservationsAcrossGateways(t *testing.T) {
	ctx, _, a, b, write := prGateways(t)
	holder := dialReady(t, a, "iqn.2026-11.io.test:holder")
	other := dialReady(t, b, "iqn.2026-11.io.test:other")
	stranger := dialReady(t, b, "iqn.2026-11.io.test:stranger")

	// REGISTER and RESERVE (write exclusive) through gateway A.
	require.Zero(t, prOut(ctx, t, holder, 0x00, 0, 0, 0xa).Status)
	require.Zero(t, prOut(ctx, t, holder, 0x01, 0x1, 0xa, 0).Status)

	// Gateway B reports them.
	keys := prIn(ctx, t, other, 0x00)
	require.EqualValues(t, 8, binary.BigEndian.Uint32(keys[4:]))
	require.EqualValues(t, 0xa, binary.BigEndian.Uint64(keys[8:]))
	res := prIn(ctx, t, other, 0x01)
	require.EqualValues(t, 16, binary.BigEndian.Uint32(res[4:]))
	require.EqualValues(t, 0xa, binary.BigEndian.Uint64(res[8:]))
	require.EqualValues(t, 0x1, res[8+13], "type write exclusive")
	full := prIn(ctx, t, other, 0x03)
	require.EqualValues(t, 1, binary.BigEndian.Uint16(full[8+18:]), "relative port of the holder: gateway A's tag")

	// An unregistered initiator's write through gateway B conflicts; the
	// holder's write through A does not.
	require.EqualValues(t, 0x18, write(stranger).Status, "RESERVATION CONFLICT")
	require.Zero(t, write(holder).Status)

	// PREEMPT through B: the holder's registration is gone, its next
	// command on A gets REGISTRATIONS PREEMPTED, then its writes conflict.
	require.Zero(t, prOut(ctx, t, other, 0x00, 0, 0, 0xb).Status)
	require.Zero(t, prOut(ctx, t, other, 0x04, 0x1, 0xb, 0xa).Status)
	resp := write(holder)
	require.EqualValues(t, 2, resp.Status)
	require.Equal(t, []byte{0x06, 0x2a, 0x05}, []byte{resp.Sense[2] & 0x0f, resp.Sense[12], resp.Sense[13]}, "sense %x", resp.Sense)
	require.EqualValues(t, 0x18, write(holder).Status)
	require.Zero(t, write(other).Status)

	// REGISTERs racing through both gateways all land (the losers of
	// each compare-and-swap try again).
	var wg sync.WaitGroup
	const each = 4
	errs := make(chan error, 2*each)
	for gi, addr := range []string{a, b} {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: defaultTarget, InitiatorName: fmt.Sprintf("iqn.2026-11.io.test:r%d-%d", gi, i)})
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				p := make([]byte, 24)
				binary.BigEndian.PutUint64(p[8:], uint64(0x100+10*gi+i))
				for range 3 { // past POWER ON OCCURRED
					resp, err := c.Command(ctx, 0, []byte{0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0}, p, 0)
					if err != nil {
						errs <- err
						return
					}
					if resp.Status == 0 {
						return
					}
				}
				errs <- fmt.Errorf("REGISTER through gateway %d failed", gi)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	keys = prIn(ctx, t, holder, 0x00)
	require.EqualValues(t, 8*(1+2*each), binary.BigEndian.Uint32(keys[4:]), "other's key and every racer's")

	// SPC-2 RESERVE conflicts with the persistent reservations, which
	// are held through the other gateway (SPC-4 §5.13.3).
	resp, err := stranger.Command(ctx, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	require.NoError(t, err)
	require.EqualValues(t, 0x18, resp.Status, "RESERVATION CONFLICT")
}

// TestRBDSPC2ReservationAcrossGateways checks that an SPC-2 RESERVE(6)
// through gateway A fences another initiator's writes through gateway B,
// and its RELEASE(6) through A frees them; the holder's logout on A
// releases a reservation B sees too.
func TestRBDSPC2ReservationAcrossGateways(t *testing.T) {
	ctx, _, a, b, write := prGateways(t)
	holder := dialReady(t, a, "iqn.2026-11.io.test:holder")
	other := dialReady(t, b, "iqn.2026-11.io.test:other")
	cmd := func(c *initiator.Conn, cdb ...byte) byte {
		resp, err := c.Command(ctx, 0, cdb, nil, 0)
		require.NoError(t, err)
		return resp.Status
	}
	require.Zero(t, cmd(holder, 0x16, 0, 0, 0, 0, 0), "RESERVE(6)")
	require.EqualValues(t, 0x18, write(other).Status, "RESERVATION CONFLICT")
	require.EqualValues(t, 0x18, cmd(other, 0x16, 0, 0, 0, 0, 0), "RESERVE(6) of another nexus")
	require.Zero(t, write(holder).Status)
	require.Zero(t, cmd(holder, 0x17, 0, 0, 0, 0, 0), "RELEASE(6)")
	require.Zero(t, write(other).Status)

	// The holder's session ends on A: A commits the release.
	require.Zero(t, cmd(holder, 0x16, 0, 0, 0, 0, 0))
	require.EqualValues(t, 0x18, write(other).Status)
	require.NoError(t, holder.Close())
	require.Eventually(t, func() bool { return write(other).Status == 0 }, time.Minute, 100*time.Millisecond,
		"the lost holder's reservation still fences gateway B")
}

// TestRBDPersistentReservationsLostWatch removes the reservation object
// under two gateways, which ends their watches: each watches again and
// reloads (the state is gone with the object, so a write the reservation
// blocked goes through), and a reservation made afterwards through one
// gateway holds at once through the other, by the new watch.
func TestRBDPersistentReservationsLostWatch(t *testing.T) {
	ctx, o, a, b, writeResp := prGateways(t)
	holder := dialReady(t, a, "iqn.2026-11.io.test:holder")
	stranger := dialReady(t, b, "iqn.2026-11.io.test:stranger")
	write := func(c *initiator.Conn) byte { return writeResp(c).Status }
	require.Zero(t, prOut(ctx, t, holder, 0x00, 0, 0, 0xa).Status)
	require.Zero(t, prOut(ctx, t, holder, 0x01, 0x1, 0xa, 0).Status)
	require.EqualValues(t, 0x18, write(stranger))

	var info struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(rbdCLI(t, "info", "--format", "json", o.Pool+"/"+o.Image), &info))
	conf, pool, _ := cephEnv(t)
	out, err := exec.Command("rados", "-c", conf, "-p", pool, "rm", "iscsikit_pr."+info.ID).CombinedOutput()
	require.NoError(t, err, "rados rm: %s", out)
	require.Eventually(t, func() bool { return write(stranger) == 0 }, time.Minute, 100*time.Millisecond,
		"gateway B never reloaded the removed state")

	// Both gateways watch the new object: a reservation through A holds
	// through B as soon as A's command completes. (The holder's first
	// command may report the change.)
	for range 2 {
		if prOut(ctx, t, holder, 0x00, 0, 0, 0xa).Status == 0 {
			break
		}
	}
	require.Zero(t, prOut(ctx, t, holder, 0x01, 0x1, 0xa, 0).Status)
	require.EqualValues(t, 0x18, write(stranger))
}
