package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
)

// TestDaemonStopsWithoutLeaks runs iscsid in-process with a session doing
// I/O and one left logged in, stops it, and requires every goroutine it
// started to be gone.
func TestDaemonStopsWithoutLeaks(t *testing.T) {
	leakcheck.Check(t)
	d := startDaemon(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := initiator.Dial(ctx, d.addr, initiator.Options{TargetName: defaultTarget})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_ = c.TestUnitReady(ctx, 0)
	data := make([]byte, 64<<10)
	require.NoError(t, c.WriteBlocks(ctx, 0, 0, data, 512, true))
	_, err = c.ReadBlocks(ctx, 0, 0, 128, 512)
	require.NoError(t, err)
	disc, err := initiator.Dial(ctx, d.addr, initiator.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { disc.Close() })
	_, err = disc.SendTargets(ctx, "All")
	require.NoError(t, err)
}
