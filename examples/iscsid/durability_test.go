package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// buildDaemon compiles iscsid into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iscsid")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

// process is iscsid running as a child process.
type process struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// spawn starts the iscsid binary on stateDir and waits until it listens.
func spawn(t *testing.T, bin, stateDir, addr string) *process {
	t.Helper()
	cmd := exec.Command(bin, "--state", stateDir, "--portal", addr)
	log, err := os.Create(filepath.Join(stateDir, "iscsid.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, addr: addr, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); log.Close() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	waitListening(t, addr, p.done)
	return p
}

// killHard sends SIGKILL and waits for the process to be gone.
func (p *process) killHard(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	select {
	case err := <-p.done:
		p.done <- err
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee)
		require.Equal(t, syscall.SIGKILL, ee.Sys().(syscall.WaitStatus).Signal())
	case <-time.After(10 * time.Second):
		t.Fatal("iscsid survived SIGKILL")
	}
}

// TestKill9KeepsAcknowledgedWrites writes through the Go initiator with
// FUA, and without FUA followed by SYNCHRONIZE CACHE, kills the daemon
// with SIGKILL the moment the last write is acknowledged, restarts it on
// the same state directory and reads every block back.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	bin := buildDaemon(t)
	state := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := spawn(t, bin, state, addr)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const bs = 512
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: defaultTarget})
	require.NoError(t, err)
	_ = c.TestUnitReady(ctx, 0) // power-on unit attention

	type extent struct {
		lba  uint64
		data []byte
	}
	var written []extent
	// FUA writes, 64 KiB each, spread over the LUN.
	for i := range 32 {
		e := extent{lba: uint64(i) * 7919 * 8, data: make([]byte, 64<<10)}
		_, err := rand.Read(e.data)
		require.NoError(t, err)
		require.NoError(t, c.WriteBlocks(ctx, 0, e.lba, e.data, bs, true))
		written = append(written, e)
	}
	// Cached writes made durable by SYNCHRONIZE CACHE (16).
	for i := range 32 {
		e := extent{lba: 1<<20 + uint64(i)*256, data: make([]byte, 32<<10)}
		_, err := rand.Read(e.data)
		require.NoError(t, err)
		require.NoError(t, c.WriteBlocks(ctx, 0, e.lba, e.data, bs, false))
		written = append(written, e)
	}
	sync := make([]byte, 16)
	sync[0] = 0x91
	resp, err := c.Command(ctx, 0, sync, nil, 0)
	require.NoError(t, err)
	require.NoError(t, resp.Check())
	// One last FUA write, then SIGKILL with no grace at all.
	last := extent{lba: 12345, data: make([]byte, 4096)}
	_, err = rand.Read(last.data)
	require.NoError(t, err)
	binary.BigEndian.PutUint64(last.data, 0xfeedface)
	require.NoError(t, c.WriteBlocks(ctx, 0, last.lba, last.data, bs, true))
	written = append(written, last)
	p.killHard(t)
	c.Close()

	p2 := spawn(t, bin, state, addr)
	c2, err := initiator.Dial(ctx, p2.addr, initiator.Options{TargetName: defaultTarget})
	require.NoError(t, err)
	defer c2.Close()
	_ = c2.TestUnitReady(ctx, 0)
	for _, e := range written {
		got, err := c2.ReadBlocks(ctx, 0, e.lba, uint32(len(e.data)/bs), bs)
		require.NoError(t, err)
		require.Equal(t, e.data, got, "blocks at LBA %d lost across kill -9", e.lba)
	}
	require.NoError(t, c2.Logout(ctx))
}
