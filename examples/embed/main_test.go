package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// TestRunServesAndShutsDown runs the program on an ephemeral port: an
// initiator logs in, writes to and reads from the file LUN, and cancelling
// the context shuts the server down, ending the session, with no error.
func TestRunServesAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := config{listen: "127.0.0.1:0", iqn: "iqn.2026-11.io.iscsikit:embed-test", file: filepath.Join(t.TempDir(), "lun0.img"), size: 8 << 20}
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, c, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a net.Addr) { addrs <- a })
	}()
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("run: %v", err)
	}

	conn, err := initiator.Dial(ctx, addr.String(), initiator.Options{TargetName: c.iqn})
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.TestUnitReady(ctx, 0) // the power-on unit attention
	blocks, size, err := conn.ReadCapacity16(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(8<<20/512), blocks)
	require.Equal(t, uint32(512), size)
	data := make([]byte, 4096)
	copy(data, "embedded")
	require.NoError(t, conn.WriteBlocks(ctx, 0, 100, data, 512, true))
	back, err := conn.ReadBlocks(ctx, 0, 100, 8, 512)
	require.NoError(t, err)
	require.Equal(t, data, back)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	<-conn.Done()
}

func TestRunRefusesABadSize(t *testing.T) {
	err := run(context.Background(), config{listen: "127.0.0.1:0", iqn: "iqn.2026-11.io.iscsikit:x", size: 1000}, slog.New(slog.NewTextHandler(io.Discard, nil)), func(net.Addr) {})
	require.ErrorContains(t, err, "multiple of 512")
}
