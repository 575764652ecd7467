package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// needTool returns the path of an initiator tool, skipping the test when it
// is missing unless ISCSIKIT_REQUIRE_INITIATORS is set (as in CI).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("ISCSIKIT_REQUIRE_INITIATORS") != "" {
			t.Fatalf("%s not found and ISCSIKIT_REQUIRE_INITIATORS is set", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon is iscsid running in-process.
type daemon struct {
	addr string
	hup  chan os.Signal
	// stop ends the daemon and requires a clean shutdown; it runs at the
	// end of the test at the latest and may be called more than once.
	stop func()
}

// runInProcess runs iscsid with c in this process (logging to log, or
// nowhere when nil) and returns once it listens on every address of
// listen. The daemon stops when the test ends or when stop is called.
func runInProcess(t *testing.T, c config, log *slog.Logger, listen ...string) *daemon {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d := &daemon{hup: make(chan os.Signal, 1)}
	if len(listen) > 0 {
		d.addr = listen[0]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, d.hup, log) }()
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Error("iscsid did not shut down")
			}
		})
	}
	t.Cleanup(d.stop)
	for _, addr := range listen {
		waitListening(t, addr, done)
	}
	return d
}

// startDaemon runs iscsid in-process with stateDir (fresh when empty) and
// a new configuration's portal on a free loopback port.
func startDaemon(t *testing.T, stateDir string) *daemon {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	return runInProcess(t, config{stateDir: stateDir, portal: addr}, nil, addr)
}

// waitListening waits until addr accepts connections or the daemon fails.
func waitListening(t *testing.T, addr string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if done != nil {
			select {
			case err := <-done:
				done <- err
				t.Fatalf("iscsid exited: %v", err)
			default:
			}
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func TestDefaultTargetListedByIscsiLs(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	stateDir := t.TempDir()
	addr := startDaemon(t, stateDir).addr
	out, err := exec.Command(ls, "-s", "iscsi://"+addr).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Target:"+defaultTarget)
	require.Contains(t, string(out), "Lun:0")
	// iscsi-ls prints the last LBA times the block size; the exact
	// capacity comes from READ CAPACITY (16).
	rc16 := needTool(t, "iscsi-readcapacity16")
	out, err = exec.Command(rc16, "iscsi://"+addr+"/"+defaultTarget+"/0").CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Total size:"+strconv.Itoa(defaultSize))

	fi, err := os.Stat(filepath.Join(stateDir, defaultImage))
	require.NoError(t, err)
	require.Equal(t, int64(defaultSize), fi.Size())
}

func TestQemuImgWriteReadBack64MiB(t *testing.T) {
	qemuWriteReadBack(t, startDaemon(t, "").addr, 64<<20)
}

// qemuWriteReadBack writes size random bytes to LUN 0 of the default
// target on addr with qemu-img, reads them back the same way and requires
// them identical.
func qemuWriteReadBack(t *testing.T, addr string, size int) {
	t.Helper()
	data := make([]byte, size)
	_, err := rand.Read(data)
	require.NoError(t, err)
	qemuWrite(t, addr, data)
	require.True(t, bytes.Equal(data, qemuRead(t, addr, len(data))), "data read back differs from data written")
}

// qemuWrite writes data at the start of LUN 0 of the default target on
// addr with qemu-img.
func qemuWrite(t *testing.T, addr string, data []byte) {
	t.Helper()
	qemu := needTool(t, "qemu-img")
	src := filepath.Join(t.TempDir(), "src.raw")
	require.NoError(t, os.WriteFile(src, data, 0o644))
	url := "iscsi://" + addr + "/" + defaultTarget + "/0"
	out, err := exec.Command(qemu, "convert", "-n", "-f", "raw", "-O", "raw", src, url).CombinedOutput()
	require.NoError(t, err, string(out))
}

// qemuRead reads the first size bytes of LUN 0 of the default target on
// addr with qemu-img.
func qemuRead(t *testing.T, addr string, size int) []byte {
	t.Helper()
	qemu := needTool(t, "qemu-img")
	dst := filepath.Join(t.TempDir(), "dst.raw")
	out, err := exec.Command(qemu, "convert", "-O", "raw", "--image-opts",
		"driver=raw,size="+strconv.Itoa(size)+",file.driver=iscsi,file.transport=tcp,file.portal="+addr+
			",file.target="+defaultTarget+",file.lun=0", dst).CombinedOutput()
	require.NoError(t, err, string(out))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.Len(t, got, size)
	return got
}

// startDaemonWithConfig writes config.json into a fresh state directory
// and starts iscsid on it; addr is a portal of the configuration.
func startDaemonWithConfig(t *testing.T, stateDir, cfg, addr string) *daemon {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(stateDir, "config.json"), []byte(cfg), 0o600))
	return runInProcess(t, config{stateDir: stateDir, portal: "127.0.0.1:1"}, nil, addr)
}

// twoTargets is a hand-written configuration: two portals, two targets,
// three extents. Target "alpha" is on portal 1 only, with two LUNs;
// "beta" is on both portals.
func twoTargets(dir string, port1, port2 int) string {
	return fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example"},
  "portals": [
    {"id": 1, "tag": 1, "comment": "first", "listen": [{"ip": "127.0.0.1", "port": %d}]},
    {"id": 2, "tag": 2, "comment": "second", "listen": [{"ip": "127.0.0.1", "port": %d}]}
  ],
  "initiators": [{"id": 1, "comment": "everyone", "initiators": [], "auth_network": ["127.0.0.0/8"]}],
  "targets": [
    {"id": 1, "name": "alpha", "groups": [{"portal": 1, "initiator": 1}]},
    {"id": 2, "name": "beta", "alias": "Beta", "groups": [{"portal": 1}, {"portal": 2}]}
  ],
  "extents": [
    {"id": 1, "name": "a0", "type": "FILE", "path": "%[3]s/a0.img", "filesize": 67108864, "blocksize": 512},
    {"id": 2, "name": "a1", "type": "FILE", "path": "%[3]s/a1.img", "filesize": 33554432, "blocksize": 4096, "ro": true},
    {"id": 3, "name": "b0", "type": "FILE", "path": "%[3]s/b0.img", "filesize": 134217728, "blocksize": 512}
  ],
  "targetextents": [
    {"id": 1, "target": 1, "extent": 1, "lunid": 0},
    {"id": 2, "target": 1, "extent": 2, "lunid": 1},
    {"id": 3, "target": 2, "extent": 3, "lunid": 0}
  ]
}
`, port1, port2, dir)
}

func TestHandWrittenConfigComesUpAsWritten(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	startDaemonWithConfig(t, dir, twoTargets(dir, p1, p2), "127.0.0.1:"+strconv.Itoa(p1))
	waitListening(t, "127.0.0.1:"+strconv.Itoa(p2), nil)

	out, err := exec.Command(ls, "-s", "iscsi://127.0.0.1:"+strconv.Itoa(p1)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:alpha")
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:beta")
	require.Regexp(t, `Lun:0\s+Type:DIRECT_ACCESS \(Size:6[34]M\)`, string(out))
	require.Regexp(t, `Lun:1\s+Type:DIRECT_ACCESS \(Size:3[12]M\)`, string(out))

	// The second portal serves beta only.
	out, err = exec.Command(ls, "-s", "iscsi://127.0.0.1:"+strconv.Itoa(p2)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.NotContains(t, string(out), "alpha")
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:beta")

	fi, err := os.Stat(filepath.Join(dir, "b0.img"))
	require.NoError(t, err)
	require.Equal(t, int64(128<<20), fi.Size())
}

func TestBrokenConfigIsRefused(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	broken := strings.Replace(twoTargets(dir, p1, p2), `"blocksize": 4096`, `"blocksize": 1000`, 1)
	broken = strings.Replace(broken, `{"portal": 2}`, `{"portal": 7}`, 1)
	path := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(path, []byte(broken), 0o600))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := run(context.Background(), config{stateDir: dir, portal: "127.0.0.1:1"}, nil, log)
	require.Error(t, err)
	require.Contains(t, err.Error(), "extent 2 (a1): blocksize: 1000 is not 512, 1024, 2048 or 4096")
	require.Contains(t, err.Error(), "target 2 (beta): groups[1].portal: no portal 7")
	after, rerr := os.ReadFile(path)
	require.NoError(t, rerr)
	require.Equal(t, broken, string(after), "a refused file is left as it was")
}

func TestSIGHUPAppliesChangesWhileAnInitiatorWorks(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	qemu := needTool(t, "qemu-img")
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	cfg := twoTargets(dir, p1, p2)
	d := startDaemonWithConfig(t, dir, cfg, "127.0.0.1:"+strconv.Itoa(p1))

	// Keep an initiator writing to beta while the configuration changes.
	bench := exec.Command(qemu, "bench", "-f", "raw", "-t", "none", "-w", "-c", "20000", "-d", "16", "-s", "4096",
		"iscsi://127.0.0.1:"+strconv.Itoa(p1)+"/iqn.2026-11.io.example:beta/0")
	var benchOut bytes.Buffer
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	require.NoError(t, bench.Start())

	// A broken edit is refused and changes nothing.
	path := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(cfg, `"lunid": 1`, `"lunid": 5000`, 1)), 0o600))
	d.hup <- syscall.SIGHUP
	// A good edit adds target gamma with a new extent and drops alpha's LUN 1.
	grown := strings.Replace(cfg, `"targets": [`, `"targets": [
    {"id": 3, "name": "gamma", "groups": [{"portal": 2}]},`, 1)
	grown = strings.Replace(grown, `"extents": [`, `"extents": [
    {"id": 4, "name": "g0", "type": "FILE", "path": "`+dir+`/g0.img", "filesize": 16777216},`, 1)
	grown = strings.Replace(grown, `{"id": 2, "target": 1, "extent": 2, "lunid": 1},`, `{"id": 4, "target": 3, "extent": 4, "lunid": 0},`, 1)
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, os.WriteFile(path, []byte(grown), 0o600))
	d.hup <- syscall.SIGHUP

	var out []byte
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, _ = exec.Command(ls, "-s", "iscsi://127.0.0.1:"+strconv.Itoa(p2)).CombinedOutput()
		if strings.Contains(string(out), "gamma") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:gamma", string(out))
	out, err := exec.Command(ls, "-s", "iscsi://127.0.0.1:"+strconv.Itoa(p1)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.NotRegexp(t, `Lun:1\s`, string(out), "alpha's LUN 1 was unmapped")

	require.NoError(t, bench.Wait(), "the initiator on beta saw an error:\n%s", benchOut.String())
	require.Contains(t, benchOut.String(), "Run completed")
}
