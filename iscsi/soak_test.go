package iscsi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// soakDuration is how long TestSoak runs: ISCSIKIT_SOAK (a Go duration,
// e.g. ISCSIKIT_SOAK=30m) or two seconds, so the normal suite keeps the
// soak from rotting.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("ISCSIKIT_SOAK")
	if v == "" {
		return 2 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "ISCSIKIT_SOAK")
	return d
}

// shadow is what a worker believes its blocks hold.
type shadow struct {
	first uint64 // first LBA of the region
	data  []byte
}

func (s *shadow) at(lba uint64, n int) []byte {
	off := int(lba-s.first) * blockSize
	return s.data[off : off+n*blockSize]
}

// TestSoak runs many sessions, each with several workers doing mixed,
// verified I/O (writes with and without FUA, reads, UNMAP, WRITE SAME,
// COMPARE AND WRITE, SYNCHRONIZE CACHE) on regions of their own for the
// soak duration, then reads every block of the LUN through a new session
// and compares it with what the workers wrote.
func TestSoak(t *testing.T) {
	leakcheck.Check(t)
	const (
		sessions = 6
		workers  = 4
		region   = 256 // blocks per worker
	)
	total := sessions * workers * region
	h := startUnitsConfig(t, iscsi.Options{}, scsi.UnitConfig{BlockSize: blockSize, Serial: "soak", WriteCache: true, ThinProvisioning: true},
		backend.NewMemory(int64(total*blockSize)))
	dur := soakDuration(t)
	deadline := time.Now().Add(dur)
	shadows := make([]*shadow, sessions*workers)
	ops := make([]map[string]int, sessions*workers)
	var wg sync.WaitGroup
	errs := make(chan error, sessions*workers)
	for s := range sessions {
		c := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0x50, byte(s)}, Timeout: 30 * time.Second})
		for w := range workers {
			i := s*workers + w
			sh := &shadow{first: uint64(i * region), data: make([]byte, region*blockSize)}
			shadows[i] = sh
			ops[i] = map[string]int{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := soakWorker(c, sh, region, deadline, rand.New(rand.NewPCG(uint64(i), 42)), ops[i]); err != nil {
					errs <- fmt.Errorf("session %d worker %d: %w", s, w, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	check := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0x51, 0}})
	const chunk = 128
	for lba := 0; lba < total; lba += chunk {
		got, err := check.ReadBlocks(ctxT(t), 0, uint64(lba), chunk, blockSize)
		require.NoError(t, err)
		for b := range chunk {
			i := (lba + b) / region
			want := shadows[i].at(uint64(lba+b), 1)
			if !bytes.Equal(want, got[b*blockSize:(b+1)*blockSize]) {
				t.Fatalf("block %d differs from what worker %d wrote", lba+b, i)
			}
		}
	}
	sum := map[string]int{}
	for _, m := range ops {
		for k, v := range m {
			sum[k] += v
		}
	}
	t.Logf("soak %v: %d sessions x %d workers, operations %v, %d blocks verified", dur, sessions, workers, sum, total)
}

// soakWorker does random verified I/O on its region until the deadline.
func soakWorker(c *initiator.Conn, sh *shadow, region int, deadline time.Time, rng *rand.Rand, ops map[string]int) error {
	ctx := context.Background()
	for time.Now().Before(deadline) {
		n := 1 + rng.IntN(32)
		lba := sh.first + uint64(rng.IntN(region-n+1))
		switch op := rng.IntN(10); {
		case op < 4: // WRITE (16), FUA half of the time
			data := make([]byte, n*blockSize)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			if err := c.WriteBlocks(ctx, 0, lba, data, blockSize, rng.IntN(2) == 0); err != nil {
				return fmt.Errorf("write %d+%d: %w", lba, n, err)
			}
			copy(sh.at(lba, n), data)
			ops["write"]++
		case op < 7: // READ (16), verified
			got, err := c.ReadBlocks(ctx, 0, lba, uint32(n), blockSize)
			if err != nil {
				return fmt.Errorf("read %d+%d: %w", lba, n, err)
			}
			if !bytes.Equal(got, sh.at(lba, n)) {
				return fmt.Errorf("read %d+%d returned other data than written", lba, n)
			}
			ops["read"]++
		case op == 7: // UNMAP: reads back as zeroes
			param := make([]byte, 24)
			binary.BigEndian.PutUint16(param[0:2], 22)
			binary.BigEndian.PutUint16(param[2:4], 16)
			binary.BigEndian.PutUint64(param[8:16], lba)
			binary.BigEndian.PutUint32(param[16:20], uint32(n))
			cdb := []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}
			if err := run(ctx, c, cdb, param); err != nil {
				return fmt.Errorf("unmap %d+%d: %w", lba, n, err)
			}
			clear(sh.at(lba, n))
			ops["unmap"]++
		case op == 8: // WRITE SAME (16) with a pattern block
			block := make([]byte, blockSize)
			for i := range block {
				block[i] = byte(rng.Uint32())
			}
			cdb := make([]byte, 16)
			cdb[0] = 0x93
			binary.BigEndian.PutUint64(cdb[2:10], lba)
			binary.BigEndian.PutUint32(cdb[10:14], uint32(n))
			if err := run(ctx, c, cdb, block); err != nil {
				return fmt.Errorf("write same %d+%d: %w", lba, n, err)
			}
			for b := range n {
				copy(sh.at(lba+uint64(b), 1), block)
			}
			ops["writesame"]++
		default: // COMPARE AND WRITE of one block, then SYNCHRONIZE CACHE
			newData := make([]byte, blockSize)
			for i := range newData {
				newData[i] = byte(rng.Uint32())
			}
			cdb := make([]byte, 16)
			cdb[0] = 0x89
			binary.BigEndian.PutUint64(cdb[2:10], lba)
			cdb[13] = 1
			if err := run(ctx, c, cdb, append(append([]byte(nil), sh.at(lba, 1)...), newData...)); err != nil {
				return fmt.Errorf("compare and write %d: %w", lba, err)
			}
			copy(sh.at(lba, 1), newData)
			syncCDB := make([]byte, 16)
			syncCDB[0] = 0x91
			if err := run(ctx, c, syncCDB, nil); err != nil {
				return fmt.Errorf("synchronize cache: %w", err)
			}
			ops["caw+sync"]++
		}
	}
	return nil
}

// run executes a command and turns a non-GOOD status into an error.
func run(ctx context.Context, c *initiator.Conn, cdb, out []byte) error {
	resp, err := c.Command(ctx, 0, cdb, out, 0)
	if err != nil {
		return err
	}
	return resp.Check()
}
