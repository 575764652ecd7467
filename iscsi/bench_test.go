package iscsi_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
)

// benchmarkLoopback measures the whole stack over loopback TCP: the Go test
// initiator against an in-process Server over a memory LUN, with depth
// commands in flight on one session (READ (16) / WRITE (16) of size bytes
// at rotating LBAs).
func benchmarkLoopback(b *testing.B, write bool, size, depth int, digests bool) {
	h := startServer(b, iscsi.Options{})
	c := h.login(b, initiator.Options{HeaderDigest: digests, DataDigest: digests})
	blocks := uint32(size / blockSize)
	slots := uint64(lunBlocks / blocks)
	data := randomData(b, size)
	var next atomic.Uint64
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.SetParallelism((depth + 1) / 2) // GOMAXPROCS x this goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			lba := (next.Add(1) % slots) * uint64(blocks)
			var err error
			if write {
				err = c.WriteBlocks(ctxT(b), 0, lba, data, blockSize, false)
			} else {
				_, err = c.ReadBlocks(ctxT(b), 0, lba, blocks, blockSize)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkLoopback(b *testing.B) {
	for _, bc := range []struct {
		write   bool
		size    int
		depth   int
		digests bool
	}{
		{false, 4 << 10, 1, false},
		{true, 4 << 10, 1, false},
		{false, 4 << 10, 32, false},
		{true, 4 << 10, 32, false},
		{false, 64 << 10, 32, false},
		{true, 64 << 10, 32, false},
		{false, 64 << 10, 32, true},
		{true, 64 << 10, 32, true},
	} {
		op := "read"
		if bc.write {
			op = "write"
		}
		name := fmt.Sprintf("%s%dK-qd%d", op, bc.size>>10, bc.depth)
		if bc.digests {
			name += "-digests"
		}
		b.Run(name, func(b *testing.B) {
			if bc.depth == 1 {
				b.SetParallelism(1)
			}
			benchmarkLoopback(b, bc.write, bc.size, bc.depth, bc.digests)
		})
	}
}

// TestLoopbackBenchmarkRuns keeps the benchmark's setup honest in plain
// test runs: a short parallel read and write mix completes without error.
func TestLoopbackBenchmarkRuns(t *testing.T) {
	res := testing.Benchmark(func(b *testing.B) { benchmarkLoopback(b, true, 4096, 8, true) })
	require.Positive(t, res.N)
}
