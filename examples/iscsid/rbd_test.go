//go:build ceph

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend/rbd"
	"github.com/iscsikit/iscsikit/examples/api/targetd"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/mgmt"
)

// cephEnv returns the test cluster's config file, pool and directory
// (backend/rbd/testcluster/start.sh).
func cephEnv(t *testing.T) (conf, pool, dir string) {
	t.Helper()
	conf, pool, dir = os.Getenv("ISCSIKIT_CEPH_CONF"), os.Getenv("ISCSIKIT_CEPH_POOL"), os.Getenv("ISCSIKIT_CEPH_DIR")
	if conf == "" || pool == "" || dir == "" {
		t.Fatal("ISCSIKIT_CEPH_CONF, ISCSIKIT_CEPH_POOL and ISCSIKIT_CEPH_DIR are unset: start a cluster with backend/rbd/testcluster/start.sh and source its env")
	}
	return conf, pool, dir
}

// newRBDImage creates an image of size bytes in the test cluster, removed
// when the test ends.
func newRBDImage(t *testing.T, size int64) rbd.Options {
	t.Helper()
	conf, pool, _ := cephEnv(t)
	o := rbd.Options{ConfigFile: conf, Pool: pool, Image: fmt.Sprintf("e2e-%d", time.Now().UnixNano()), Timeout: 10 * time.Second}
	require.NoError(t, rbd.Create(context.Background(), o, size))
	t.Cleanup(func() {
		// A client the test cut off from its OSD keeps its watch on the
		// image until the OSD times it out (30 s).
		var err error
		for range 45 {
			if err = rbd.Remove(context.Background(), o); err == nil {
				return
			}
			time.Sleep(time.Second)
		}
		t.Logf("remove %s: %v", o.Image, err)
	})
	return o
}

// serveRBD runs iscsid with the image as LUN 0 of defaultTarget, an
// extent of type RBD in its config.json, and returns the portal's address.
func serveRBD(t *testing.T, o rbd.Options) string {
	t.Helper()
	cache := "true"
	if o.NoCache {
		cache = "false"
	}
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit"},
  "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": %d}]}],
  "targets": [{"id": 1, "name": "default", "groups": [{"portal": 1}]}],
  "extents": [{"id": 1, "name": "rbd0", "type": "RBD", "blocksize": 512, "thin": true,
    "params": {"pool": %q, "image": %q, "conf": %q, "timeout": "%d", "cache": %q}}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, port, o.Pool, o.Image, o.ConfigFile, int(o.Timeout/time.Second), cache)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startDaemonWithConfig(t, dir, cfg, addr)
	return addr
}

// rbdCLI runs the rbd tool against the test cluster.
func rbdCLI(t *testing.T, args ...string) []byte {
	t.Helper()
	conf, _, _ := cephEnv(t)
	out, err := exec.Command("rbd", append([]string{"-c", conf}, args...)...).Output()
	require.NoError(t, err, "rbd %s", strings.Join(args, " "))
	return out
}

// rbdUsed reports the bytes the image's objects use (rbd du).
func rbdUsed(t *testing.T, o rbd.Options) int64 {
	t.Helper()
	var du struct {
		Images []struct {
			Name     string `json:"name"`
			UsedSize int64  `json:"used_size"`
		} `json:"images"`
	}
	require.NoError(t, json.Unmarshal(rbdCLI(t, "du", "--format", "json", o.Pool+"/"+o.Image), &du))
	require.Len(t, du.Images, 1)
	return du.Images[0].UsedSize
}

// dialRBD logs in to defaultTarget on addr and takes the unit attention a
// new nexus gets (POWER ON OCCURRED) with TEST UNIT READY.
func dialRBD(ctx context.Context, t *testing.T, addr string) *initiator.Conn {
	t.Helper()
	return dialReady(t, addr, "")
}

func cdb16(op byte, lba uint64, blocks uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:], lba)
	binary.BigEndian.PutUint32(c[10:], blocks)
	return c
}

// TestRBDQemuImgExportUnmap writes 256 MiB with qemu-img through the target
// to an RBD image, reads it back, checks rbd export against it, then
// UNMAPs it all and sees rbd du shrink.
func TestRBDQemuImgExportUnmap(t *testing.T) {
	const size = 256 << 20
	o := newRBDImage(t, size)
	addr := serveRBD(t, o)
	data := make([]byte, size)
	_, err := rand.Read(data)
	require.NoError(t, err)
	qemuWrite(t, addr, data)
	require.True(t, bytes.Equal(data, qemuRead(t, addr, size)), "data read back through the target differs")

	export := filepath.Join(t.TempDir(), "export.raw")
	rbdCLI(t, "export", o.Pool+"/"+o.Image, export)
	got, err := os.ReadFile(export)
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got), "rbd export differs from what qemu-img wrote")

	before := rbdUsed(t, o)
	require.Greater(t, before, int64(size/2))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := dialRBD(ctx, t, addr)
	// One UNMAP descriptor per 32 MiB, all but the last 4 MiB object.
	var param []byte
	const step = 32 << 20 / 512
	for lba := uint64(0); lba < (size-4<<20)/512; lba += step {
		d := make([]byte, 16)
		binary.BigEndian.PutUint64(d, lba)
		binary.BigEndian.PutUint32(d[8:], uint32(min(step, (size-4<<20)/512-lba)))
		param = append(param, d...)
	}
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint16(hdr, uint16(6+len(param)))
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(param)))
	param = append(hdr, param...)
	unmap := make([]byte, 10)
	unmap[0] = 0x42
	binary.BigEndian.PutUint16(unmap[7:], uint16(len(param)))
	resp, err := c.Command(ctx, 0, unmap, param, 0)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "UNMAP: sense %x", resp.Sense)
	resp, err = c.Command(ctx, 0, []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0) // SYNCHRONIZE CACHE
	require.NoError(t, err)
	require.Zero(t, resp.Status)
	after := rbdUsed(t, o)
	t.Logf("rbd du: %d bytes used before UNMAP, %d after", before, after)
	require.LessOrEqual(t, after, int64(4<<20), "UNMAP leaves only the last object")

	// GET LBA STATUS sees the hole the UNMAP left and the data after it.
	gls := cdb16(0x9e, 0, 0)
	gls[1] = 0x12
	binary.BigEndian.PutUint32(gls[10:], 64)
	resp, err = c.Command(ctx, 0, gls, nil, 64)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "GET LBA STATUS: sense %x", resp.Sense)
	require.GreaterOrEqual(t, len(resp.Data), 24)
	require.EqualValues(t, 0, binary.BigEndian.Uint64(resp.Data[8:]))
	n := binary.BigEndian.Uint32(resp.Data[16:])
	require.True(t, n > 0 && n <= (size-4<<20)/512, "first descriptor within the unmapped range: %d blocks", n)
	require.EqualValues(t, 1, resp.Data[20]&0x0f, "deallocated")
	// The last object still holds data.
	binary.BigEndian.PutUint64(gls[2:], (size-4<<20)/512)
	resp, err = c.Command(ctx, 0, gls, nil, 64)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "GET LBA STATUS: sense %x", resp.Sense)
	require.EqualValues(t, (size-4<<20)/512, binary.BigEndian.Uint64(resp.Data[8:]))
	require.EqualValues(t, 0, resp.Data[20]&0x0f, "mapped")
}

// TestRBDCompareAndWriteSeesOtherClient changes a block through librbd
// directly (another client of the image) and sends COMPARE AND WRITE with
// the old contents through the target: the cluster detects the miscompare.
func TestRBDCompareAndWriteSeesOtherClient(t *testing.T) {
	o := newRBDImage(t, 64<<20)
	addr := serveRBD(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := dialRBD(ctx, t, addr)

	const lba = 4096
	old := make([]byte, 512)
	rand.Read(old)
	resp, err := c.Command(ctx, 0, cdb16(0x8a, lba, 1), old, 0) // WRITE(16)
	require.NoError(t, err)
	require.Zero(t, resp.Status)
	caw := cdb16(0x89, lba, 0)
	caw[13] = 1
	next := make([]byte, 512)
	rand.Read(next)
	resp, err = c.Command(ctx, 0, caw, append(bytes.Clone(old), next...), 0)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "COMPARE AND WRITE that matches: sense %x", resp.Sense)

	other, err := rbd.Open(ctx, o)
	require.NoError(t, err)
	defer other.Close()
	got := make([]byte, 512)
	_, err = other.ReadAt(got, lba*512)
	require.NoError(t, err)
	require.Equal(t, next, got, "the other client sees the write")
	_, err = other.WriteAt([]byte{next[77] ^ 0x5a}, lba*512+77)
	require.NoError(t, err)
	require.NoError(t, other.Sync())

	resp, err = c.Command(ctx, 0, caw, append(bytes.Clone(next), old...), 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.Status, "CHECK CONDITION")
	require.GreaterOrEqual(t, len(resp.Sense), 14)
	require.EqualValues(t, 0x0e, resp.Sense[2]&0x0f, "MISCOMPARE: sense %x", resp.Sense)
	require.EqualValues(t, 0x1d, resp.Sense[12])
	require.EqualValues(t, 77, binary.BigEndian.Uint32(resp.Sense[3:7]), "offset of the first differing byte")
	_, err = other.ReadAt(got, lba*512)
	require.NoError(t, err)
	want := bytes.Clone(next)
	want[77] ^= 0x5a
	require.Equal(t, want, got, "a miscompare writes nothing")
}

// TestRBDOSDLossThroughTarget stops the cluster's OSD while an initiator
// reads: the command ends with NOT READY within the device's deadline (no
// hang), and reads succeed again once the OSD is back.
func TestRBDOSDLossThroughTarget(t *testing.T) {
	conf, _, dir := cephEnv(t)
	o := newRBDImage(t, 16<<20)
	o.Timeout = 5 * time.Second
	addr := serveRBD(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := dialRBD(ctx, t, addr)
	read := cdb16(0x88, 2048, 8)
	resp, err := c.Command(ctx, 0, read, nil, 8*512)
	require.NoError(t, err)
	require.Zero(t, resp.Status)

	pidb, err := os.ReadFile(filepath.Join(dir, "run", "osd.0.pid"))
	require.NoError(t, err)
	pid := strings.TrimSpace(string(pidb))
	require.NoError(t, exec.Command("kill", "-9", pid).Run())
	up := false
	startOSD := func() {
		out, err := exec.Command("ceph-osd", "-c", conf, "-i", "0").CombinedOutput()
		require.NoError(t, err, string(out))
		up = true
	}
	defer func() {
		if !up {
			startOSD()
		}
	}()
	require.Eventually(t, func() bool { return exec.Command("kill", "-0", pid).Run() != nil }, time.Minute, 100*time.Millisecond)

	start := time.Now()
	resp, err = c.Command(ctx, 0, read, nil, 8*512)
	took := time.Since(start)
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.Status, "CHECK CONDITION with the OSD down")
	require.EqualValues(t, 0x02, resp.Sense[2]&0x0f, "NOT READY: sense %x", resp.Sense)
	t.Logf("READ with the OSD down: NOT READY after %v (deadline %v)", took, o.Timeout)
	require.Less(t, took, 60*time.Second, "no hang")

	startOSD()
	require.Eventually(t, func() bool {
		resp, err := c.Command(ctx, 0, read, nil, 8*512)
		return err == nil && resp.Status == 0
	}, 2*time.Minute, time.Second, "reads work again once the OSD is back")
}

func TestRBDExtentParamsChecked(t *testing.T) {
	for _, tc := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"image": "i"}, "params.pool"},
		{map[string]string{"pool": "p"}, "params.image"},
		{map[string]string{"pool": "p/q", "image": "i"}, "not a valid RBD pool name"},
		{map[string]string{"pool": "p", "image": "i@snap"}, "not a valid RBD image name"},
		{map[string]string{"pool": "p", "image": "i", "conf": "ceph.conf"}, "not an absolute path"},
		{map[string]string{"pool": "p", "image": "i", "user": "client.admin"}, "without \"client.\""},
		{map[string]string{"pool": "p", "image": "i", "timeout": "0"}, "from 1 to 3600"},
		{map[string]string{"pool": "p", "image": "i", "size": "1"}, "not a setting of an RBD extent"},
		{map[string]string{"pool": "p", "image": "i", "cache": "off"}, "not true or false"},
	} {
		err := rbdOpener{}.Check(mgmt.Extent{Type: extentRBD, Params: tc.params})
		require.ErrorContains(t, err, tc.want, "%v", tc.params)
	}
	e := mgmt.Extent{Type: extentRBD, Params: map[string]string{"pool": "rbd", "image": "lun0", "user": "iscsi", "timeout": "10"}}
	require.NoError(t, rbdOpener{}.Check(e))
	require.Equal(t, "rbd:rbd/lun0", rbdOpener{}.Storage(e))
}

// TestRBDPoolVolumes makes volumes in Ceph through a pool of type RBD, as
// targetd's vol_create and vol_destroy do through mgmt.
func TestRBDPoolVolumes(t *testing.T) {
	conf, pool, _ := cephEnv(t)
	ctx := context.Background()
	cfg := &mgmt.Config{Version: mgmt.ConfigVersion, Global: mgmt.Global{Basename: mgmt.DefaultBasename},
		Pools: []mgmt.Pool{{ID: 1, Name: "ceph", Type: extentRBD, Params: map[string]string{"pool": pool, "conf": conf}}}}
	m, err := mgmt.New(ctx, mgmt.Options{Initial: cfg, Openers: extentOpeners()})
	require.NoError(t, err)
	defer m.Close()
	name := fmt.Sprintf("vol%d", time.Now().UnixNano())
	v, err := m.CreateVolume(ctx, "ceph", name, 48<<20)
	require.NoError(t, err)
	require.EqualValues(t, 48<<20, v.Size)
	var info struct {
		Size int64 `json:"size"`
	}
	require.NoError(t, json.Unmarshal(rbdCLI(t, "info", "--format", "json", pool+"/"+name), &info))
	require.EqualValues(t, 48<<20, info.Size, "the volume is an image in Ceph")
	_, err = m.CreateVolume(ctx, "ceph", name, 48<<20)
	require.Error(t, err, "a second volume of that name")
	_, err = m.CopyVolume(ctx, "ceph", name, name+"copy")
	require.ErrorContains(t, err, "not supported")

	// targetd's pool_list: a pool of block volumes, with the Ceph pool's
	// space (ceph df's, which needs a ceph-mgr).
	res, err := targetd.Methods(m, targetd.Options{})["pool_list"](ctx, json.RawMessage(`{}`))
	if os.Getenv("ISCSIKIT_CEPH_MGR") == "1" {
		require.NoError(t, err)
		pools := res.([]mgmt.PoolInfo)
		require.Len(t, pools, 1)
		require.Equal(t, "block", pools[0].Type)
		require.Positive(t, pools[0].FreeSize)
		require.GreaterOrEqual(t, pools[0].Size, pools[0].FreeSize)
		t.Logf("pool_list: %+v", pools)
	} else {
		require.ErrorContains(t, err, rbd.ErrNoPoolStats.Error())
	}

	require.NoError(t, m.DestroyVolume(ctx, "ceph", name))
	out, err := exec.Command("rbd", "-c", conf, "info", pool+"/"+name).CombinedOutput()
	require.Error(t, err, "the image is gone: %s", out)
	vols, err := m.Volumes("ceph")
	require.NoError(t, err)
	require.Empty(t, vols)

	// A pool of a type that makes no volumes is refused.
	bad := &mgmt.Config{Version: mgmt.ConfigVersion, Pools: []mgmt.Pool{{ID: 1, Name: "x", Type: "NOPE"}}}
	require.ErrorContains(t, mgmt.Validate(bad, nil), "not fs, block or an extent type that makes volumes")
}

// TestRBDTwoGateways runs two iscsid processes exporting one image under
// one target name, each on its own portal, with librbd's cache off: what
// an initiator writes through one gateway it reads through the other, both
// ways, and COMPARE AND WRITE through one sees a write made through the
// other. (No ALUA and no shared reservations yet: see the README.)
func TestRBDTwoGateways(t *testing.T) {
	o := newRBDImage(t, 64<<20)
	o.NoCache = true
	a, b := serveRBD(t, o), serveRBD(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, cb := dialRBD(ctx, t, a), dialRBD(ctx, t, b)
	for i, pair := range [][2]*initiator.Conn{{ca, cb}, {cb, ca}} {
		w, r := pair[0], pair[1]
		lba := uint64(1000 + 100*i)
		data := make([]byte, 64<<10)
		rand.Read(data)
		resp, err := w.Command(ctx, 0, cdb16(0x8a, lba, 128), data, 0)
		require.NoError(t, err)
		require.Zero(t, resp.Status, "WRITE: sense %x", resp.Sense)
		resp, err = r.Command(ctx, 0, cdb16(0x88, lba, 128), nil, len(data))
		require.NoError(t, err)
		require.Zero(t, resp.Status, "READ: sense %x", resp.Sense)
		require.Equal(t, data, resp.Data, "written through gateway %d, read through the other", i)
	}
	block := make([]byte, 512)
	rand.Read(block)
	resp, err := ca.Command(ctx, 0, cdb16(0x8a, 3000, 1), block, 0)
	require.NoError(t, err)
	require.Zero(t, resp.Status)
	caw := cdb16(0x89, 3000, 0)
	caw[13] = 1
	stale := make([]byte, 512)
	resp, err = cb.Command(ctx, 0, caw, append(stale, block...), 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.Status, "the other gateway's write is seen")
	require.EqualValues(t, 0x0e, resp.Sense[2]&0x0f, "MISCOMPARE: sense %x", resp.Sense)
	resp, err = cb.Command(ctx, 0, caw, append(bytes.Clone(block), stale...), 0)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "COMPARE AND WRITE against the current data: sense %x", resp.Sense)
	resp, err = ca.Command(ctx, 0, cdb16(0x88, 3000, 1), nil, 512)
	require.NoError(t, err)
	require.Equal(t, stale, resp.Data)

	// librbd compares and writes one 512-byte sector at a time: each
	// gateway says so in its block limits page and refuses two blocks,
	// which it could make atomic only among its own writers.
	for _, c := range []*initiator.Conn{ca, cb} {
		resp, err = c.Command(ctx, 0, []byte{0x12, 1, 0xb0, 0, 255, 0}, nil, 255)
		require.NoError(t, err)
		require.EqualValues(t, 1, resp.Data[5], "MAXIMUM COMPARE AND WRITE LENGTH")
		caw[13] = 2
		resp, err = c.Command(ctx, 0, caw, make([]byte, 4*512), 0)
		require.NoError(t, err)
		require.EqualValues(t, 2, resp.Status)
		require.Equal(t, []byte{0x05, 0x24}, []byte{resp.Sense[2] & 0x0f, resp.Sense[12]}, "INVALID FIELD IN CDB: sense %x", resp.Sense)
	}
}
