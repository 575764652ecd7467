package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// startDaemon runs iscsid in-process on a loopback port with a fresh state
// directory and returns its portal address.
func startDaemon(t *testing.T) (addr, stateDir string) {
	t.Helper()
	stateDir = t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() { done <- run(ctx, stateDir, l, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("iscsid did not shut down")
		}
	})
	return l.Addr().String(), stateDir
}

func TestDefaultTargetListedByIscsiLs(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	addr, stateDir := startDaemon(t)
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
	qemu := needTool(t, "qemu-img")
	addr, _ := startDaemon(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	data := make([]byte, 64<<20)
	_, err := rand.Read(data)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(src, data, 0o644))
	url := "iscsi://" + addr + "/" + defaultTarget + "/0"

	out, err := exec.Command(qemu, "convert", "-n", "-f", "raw", "-O", "raw", src, url).CombinedOutput()
	require.NoError(t, err, string(out))

	dst := filepath.Join(dir, "dst.raw")
	out, err = exec.Command(qemu, "convert", "-O", "raw", "--image-opts",
		"driver=raw,size="+strconv.Itoa(len(data))+",file.driver=iscsi,file.transport=tcp,file.portal="+addr+
			",file.target="+defaultTarget+",file.lun=0", dst).CombinedOutput()
	require.NoError(t, err, string(out))
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.Equal(t, len(data), len(got))
	require.True(t, bytes.Equal(data, got), "data read back differs from data written")
}
