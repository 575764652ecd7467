//go:build ceph

package rbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"

	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
)

// The interfaces the SCSI layer looks for.
var (
	_ backend.ContextDevice      = (*Device)(nil)
	_ backend.Unmapper           = (*Device)(nil)
	_ backend.AllocationReporter = (*Device)(nil)
	_ backend.SameWriter         = (*Device)(nil)
	_ backend.CompareWriter      = (*Device)(nil)
	_ backend.CompareSpanner     = (*Device)(nil)
	_ backend.AtomicSpanner      = (*Device)(nil)
)

// testOptions returns the options of a new image of size bytes in the test
// cluster (testcluster/start.sh), removed when the test ends.
func testOptions(t testing.TB, size int64) Options {
	t.Helper()
	conf, pool := os.Getenv("ISCSIKIT_CEPH_CONF"), os.Getenv("ISCSIKIT_CEPH_POOL")
	if conf == "" || pool == "" {
		t.Fatal("ISCSIKIT_CEPH_CONF and ISCSIKIT_CEPH_POOL are unset: start a cluster with backend/rbd/testcluster/start.sh and source its env")
	}
	o := Options{ConfigFile: conf, Pool: pool, Image: fmt.Sprintf("test-%s-%d", strings.ToLower(t.Name()), time.Now().UnixNano()), Timeout: 20 * time.Second}
	o.Image = strings.NewReplacer("/", "-", "_", "-").Replace(o.Image)
	ctx := context.Background()
	require.NoError(t, Create(ctx, o, size))
	t.Cleanup(func() {
		// A client the test cut off from its OSD keeps its watch on the
		// image until the OSD times it out (30 s).
		var err error
		for range 45 {
			if err = Remove(context.Background(), o); err == nil {
				return
			}
			time.Sleep(time.Second)
		}
		t.Logf("remove %s: %v", o.Image, err)
	})
	return o
}

func openTest(t testing.TB, o Options) *Device {
	t.Helper()
	d, err := Open(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Image: "i", Monitors: "127.0.0.1"}, "no pool"},
		{Options{Pool: "p", Monitors: "127.0.0.1"}, "no image"},
		{Options{Pool: "p", Image: "i"}, "neither a config file nor monitor"},
		{Options{Pool: "p", Image: "i", Monitors: "127.0.0.1", Timeout: -1}, "negative timeout"},
	} {
		require.ErrorContains(t, tc.o.Validate(), tc.want)
	}
	require.NoError(t, Options{Pool: "p", Image: "i", ConfigFile: "/etc/ceph/ceph.conf"}.Validate())
}

func TestOpenMissingImage(t *testing.T) {
	o := testOptions(t, 1<<20)
	o.Image += "-missing"
	_, err := Open(context.Background(), o)
	require.ErrorContains(t, err, "no such file")
}

func TestReadWriteAndRange(t *testing.T) {
	const size = 16 << 20
	d := openTest(t, testOptions(t, size))
	require.EqualValues(t, size, d.Size())

	zero := make([]byte, 64<<10)
	got := make([]byte, len(zero))
	_, err := d.ReadAt(got, 1<<20)
	require.NoError(t, err)
	require.Equal(t, zero, got, "a new image reads as zeroes")

	// Across the 4 MiB object boundary, unaligned.
	data := random(t, 1<<20+517)
	off := int64(4<<20 - 12345)
	n, err := d.WriteAt(data, off)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.NoError(t, d.Sync())
	got = make([]byte, len(data))
	_, err = d.ReadAt(got, off)
	require.NoError(t, err)
	require.Equal(t, data, got)

	_, err = d.ReadAt(make([]byte, 2), size-1)
	require.ErrorIs(t, err, backend.ErrOutOfRange)
	_, err = d.WriteAt(make([]byte, 1), -1)
	require.ErrorIs(t, err, backend.ErrOutOfRange)
	require.ErrorIs(t, d.Unmap(size-512, 1024), backend.ErrOutOfRange)
}

func TestReadOnly(t *testing.T) {
	o := testOptions(t, 1<<20)
	o.ReadOnly = true
	d := openTest(t, o)
	_, err := d.WriteAt([]byte{1}, 0)
	require.ErrorIs(t, err, backend.ErrReadOnly)
	require.ErrorIs(t, d.Unmap(0, 512), backend.ErrReadOnly)
	_, err = d.ReadAt(make([]byte, 512), 0)
	require.NoError(t, err)
}

// TestConcurrentIO runs many requests at once on one device: each
// goroutine writes and reads back its own region.
func TestConcurrentIO(t *testing.T) {
	const workers, chunk = 32, 256 << 10
	d := openTest(t, testOptions(t, workers*chunk))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := make([]byte, chunk)
			rand.Read(data)
			off := int64(i * chunk)
			for range 4 {
				if _, err := d.WriteAt(data, off); err != nil {
					errs <- err
					return
				}
				got := make([]byte, chunk)
				if _, err := d.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, data) {
					errs <- fmt.Errorf("worker %d read back other data", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestUnmapAndAllocation(t *testing.T) {
	const obj = 4 << 20
	d := openTest(t, testOptions(t, 4*obj))

	alloc, n, err := d.Allocation(0)
	require.NoError(t, err)
	require.False(t, alloc)
	require.EqualValues(t, 4*obj, n, "a new image is one hole")

	// Data in objects 1 and 2.
	_, err = d.WriteAt(random(t, 2*obj), obj)
	require.NoError(t, err)
	require.NoError(t, d.Sync())
	alloc, n, err = d.Allocation(0)
	require.NoError(t, err)
	require.False(t, alloc)
	require.EqualValues(t, obj, n)
	alloc, n, err = d.Allocation(obj + 4096)
	require.NoError(t, err)
	require.True(t, alloc)
	require.EqualValues(t, 2*obj-4096, n)

	// A partial discard reads back as zeroes.
	require.NoError(t, d.Unmap(obj+4096, 8192))
	got := make([]byte, 8192)
	_, err = d.ReadAt(got, obj+4096)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 8192), got)

	// A whole-object discard leaves a hole.
	require.NoError(t, d.Unmap(2*obj, obj))
	require.NoError(t, d.Sync())
	alloc, n, err = d.Allocation(2 * obj)
	require.NoError(t, err)
	require.False(t, alloc)
	require.EqualValues(t, 2*obj, n)
	alloc, _, err = d.Allocation(obj)
	require.NoError(t, err)
	require.True(t, alloc)
}

func TestWriteSame(t *testing.T) {
	d := openTest(t, testOptions(t, 8<<20))
	block := random(t, 512)
	require.NoError(t, d.WriteSame(block, 4<<20-512*3, 512*10))
	got := make([]byte, 512*12)
	_, err := d.ReadAt(got, 4<<20-512*4)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 512), got[:512])
	for i := 1; i <= 10; i++ {
		require.Equal(t, block, got[i*512:(i+1)*512], "block %d", i)
	}
	require.Equal(t, make([]byte, 512), got[11*512:])
	require.ErrorContains(t, d.WriteSame(block, 0, 700), "700 bytes with a 512-byte block")
}

// TestCompareAndWrite checks the compare in the cluster: a change made by
// another client of the image (a second open) is seen.
func TestCompareAndWrite(t *testing.T) {
	o := testOptions(t, 8<<20)
	d := openTest(t, o)
	other := openTest(t, o)

	old := random(t, 512)
	_, err := d.WriteAt(old, 8192)
	require.NoError(t, err)
	require.NoError(t, d.Sync())
	next := random(t, 512)
	require.NoError(t, d.CompareAndWrite(old, next, 8192))
	got := make([]byte, 512)
	_, err = other.ReadAt(got, 8192)
	require.NoError(t, err)
	require.Equal(t, next, got, "the other client sees the write")

	// The other client changes byte 300; the compare against what d
	// wrote fails there and writes nothing.
	_, err = other.WriteAt([]byte{next[300] ^ 0xff}, 8192+300)
	require.NoError(t, err)
	require.NoError(t, other.Sync())
	err = d.CompareAndWrite(next, random(t, 512), 8192)
	var mis *backend.MiscompareError
	require.ErrorAs(t, err, &mis)
	require.EqualValues(t, 300, mis.Offset)
	_, err = other.ReadAt(got, 8192)
	require.NoError(t, err)
	want := bytes.Clone(next)
	want[300] ^= 0xff
	require.Equal(t, want, got, "a miscompare writes nothing")

	// Within one sector at an unaligned offset too.
	require.NoError(t, d.CompareAndWrite(want[100:200], next[100:200], 8192+100))

	// Ceph 16 compares and writes within one 512-byte sector only.
	err = d.CompareAndWrite(make([]byte, 1024), make([]byte, 1024), 0)
	require.ErrorIs(t, err, errors.ErrUnsupported)
	err = d.CompareAndWrite(make([]byte, 16), make([]byte, 16), 510)
	require.ErrorIs(t, err, errors.ErrUnsupported)
}

// TestCompareAndWriteRacesAcrossClients runs counters on two opens of one
// image (two gateways) at once: each increment reads the sector, then
// compares it and writes the next value, retrying on a miscompare. Only
// a compare and write atomic in the cluster loses no increment; one made
// atomic per open would let both opens write over the same value.
func TestCompareAndWriteRacesAcrossClients(t *testing.T) {
	o := testOptions(t, 8<<20)
	o.NoCache = true
	opens := []*Device{openTest(t, o), openTest(t, o)}
	require.EqualValues(t, 512, opens[0].CompareAndWriteSpan())
	const off, workers, rounds = 4 << 20, 3, 30
	_, err := opens[0].WriteAt(make([]byte, 512), off)
	require.NoError(t, err)
	var wg sync.WaitGroup
	var misses atomic.Int64
	errs := make(chan error, 2*workers)
	for _, d := range opens {
		for range workers {
			wg.Go(func() {
				cur, next := make([]byte, 512), make([]byte, 512)
				for range rounds {
					for {
						if _, err := d.ReadAt(cur, off); err != nil {
							errs <- err
							return
						}
						copy(next, cur)
						binary.BigEndian.PutUint64(next, binary.BigEndian.Uint64(cur)+1)
						err := d.CompareAndWrite(cur, next, off)
						var mis *backend.MiscompareError
						if errors.As(err, &mis) {
							misses.Add(1)
							continue
						}
						if err != nil {
							errs <- err
							return
						}
						break
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := make([]byte, 512)
	_, err = opens[1].ReadAt(got, off)
	require.NoError(t, err)
	require.EqualValues(t, 2*workers*rounds, binary.BigEndian.Uint64(got), "every increment counted once")
	t.Logf("%d increments, %d miscompares retried", 2*workers*rounds, misses.Load())
	require.Positive(t, misses.Load(), "the two opens raced")
}

// cephDF returns STORED and MAX AVAIL of pool as ceph df reports them.
func cephDF(t *testing.T, conf, pool string) (stored, maxAvail int64) {
	out, err := exec.Command("ceph", "-c", conf, "df", "-f", "json").Output()
	require.NoError(t, err)
	var df struct {
		Pools []struct {
			Name  string
			Stats struct {
				Stored   int64 `json:"stored"`
				MaxAvail int64 `json:"max_avail"`
			}
		}
	}
	require.NoError(t, json.Unmarshal(out, &df))
	for _, p := range df.Pools {
		if p.Name == pool {
			return p.Stats.Stored, p.Stats.MaxAvail
		}
	}
	t.Fatalf("ceph df reports no pool %s: %s", pool, out)
	return 0, 0
}

// TestPoolSpace compares PoolSpace with ceph df, and sees data written to
// the pool, when the test cluster runs a ceph-mgr (CEPH_MGR=1); without
// one the cluster has no pool statistics, and PoolSpace says so.
func TestPoolSpace(t *testing.T) {
	ctx := context.Background()
	o := testOptions(t, 64<<20)
	if os.Getenv("ISCSIKIT_CEPH_MGR") != "1" {
		_, _, err := PoolSpace(ctx, o)
		require.ErrorIs(t, err, ErrNoPoolStats)
		return
	}
	size, free, err := PoolSpace(ctx, o)
	require.NoError(t, err)
	require.Positive(t, free)
	require.GreaterOrEqual(t, size, free)
	stored, avail := cephDF(t, o.ConfigFile, o.Pool)
	t.Logf("PoolSpace: size %d free %d; ceph df: stored %d max avail %d", size, free, stored, avail)
	// Other tests write to the pool meanwhile: allow 1 GiB of drift.
	require.InDelta(t, avail, free, 1<<30)
	require.InDelta(t, stored+avail, size, 1<<30)

	d := openTest(t, o)
	_, err = d.WriteAt(random(t, 32<<20), 0)
	require.NoError(t, err)
	require.NoError(t, d.Sync())
	require.Eventually(t, func() bool {
		s, f, err := PoolSpace(ctx, o)
		return err == nil && s-f >= (size-free)+16<<20
	}, time.Minute, time.Second, "32 MiB written show as stored")

	o.Pool = "no-such-pool"
	_, _, err = PoolSpace(ctx, o)
	require.ErrorIs(t, err, rados.ErrNotFound)
}

func TestResize(t *testing.T) {
	o := testOptions(t, 4<<20)
	d := openTest(t, o)
	require.NoError(t, d.Resize(context.Background(), 12<<20))
	require.EqualValues(t, 12<<20, d.Size())
	_, err := d.WriteAt([]byte{7}, 12<<20-1)
	require.NoError(t, err)
	d2 := openTest(t, o)
	require.EqualValues(t, 12<<20, d2.Size(), "the new size is the image's")
}

func TestClosed(t *testing.T) {
	d, err := Open(context.Background(), testOptions(t, 1<<20))
	require.NoError(t, err)
	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Close(), backend.ErrClosed)
	_, err = d.ReadAt(make([]byte, 1), 0)
	require.ErrorIs(t, err, backend.ErrClosed)
	require.ErrorIs(t, d.Sync(), backend.ErrClosed)
}

// TestOSDLoss stops the cluster's only OSD: requests fail with
// backend.ErrNotReady within their deadline instead of hanging, and
// succeed again once the OSD is back.
func TestOSDLoss(t *testing.T) {
	dir := os.Getenv("ISCSIKIT_CEPH_DIR")
	if dir == "" {
		t.Fatal("ISCSIKIT_CEPH_DIR is unset: the test stops and restarts the OSD of testcluster/start.sh")
	}
	o := testOptions(t, 8<<20)
	o.Timeout = 5 * time.Second
	d := openTest(t, o)
	data := random(t, 64<<10)
	_, err := d.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, d.Sync())

	stopOSD(t, dir)
	restarted := false
	defer func() {
		if !restarted {
			startOSD(t, dir)
		}
	}()
	start := time.Now()
	_, err = d.ReadAt(make([]byte, 4096), 0)
	took := time.Since(start)
	require.ErrorIs(t, err, backend.ErrNotReady)
	t.Logf("read with the OSD down: %v after %v", err, took)
	// The deadline is 5 s; allow for a loaded machine, never a hang.
	require.Less(t, took, 30*time.Second)
	// An aborted command stops waiting at once.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = d.ReadAtContext(ctx, make([]byte, 4096), 4096)
	require.ErrorIs(t, err, context.Canceled)

	// A write may land in librbd's write-back cache; then the flush that
	// makes it durable fails.
	if _, err = d.WriteAt(data, 1<<20); err == nil {
		err = d.Sync()
	}
	require.ErrorIs(t, err, backend.ErrNotReady)

	startOSD(t, dir)
	restarted = true
	var got []byte
	require.Eventually(t, func() bool {
		got = make([]byte, len(data))
		_, err := d.ReadAt(got, 0)
		return err == nil
	}, 2*time.Minute, time.Second, "reads work again once the OSD is back")
	require.Equal(t, data, got)
	_, err = d.WriteAt(data, 1<<20)
	require.NoError(t, err)
	require.NoError(t, d.Sync())
}

// TestOSDLossUnderLoad kills the OSD while 16 workers read and write: every
// request ends within the deadline (NOT READY, never a hang), every
// worker works again once the OSD is back, and the requests abandoned at
// their deadline come back to the device's pool when librbd ends them.
func TestOSDLossUnderLoad(t *testing.T) {
	dir := os.Getenv("ISCSIKIT_CEPH_DIR")
	if dir == "" {
		t.Fatal("ISCSIKIT_CEPH_DIR is unset: the test stops and restarts the OSD of testcluster/start.sh")
	}
	const workers, span = 16, 4 << 20
	o := testOptions(t, span)
	o.Timeout = 5 * time.Second
	d := openTest(t, o)
	_, err := d.WriteAt(make([]byte, span), 0)
	require.NoError(t, err)
	require.NoError(t, d.Sync())

	type worker struct {
		failed, okAfter atomic.Bool
		longest         atomic.Int64
		other           atomic.Value
	}
	var restarted atomic.Bool
	ws := make([]*worker, workers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{}
		ws[i] = w
		wg.Go(func() {
			buf := make([]byte, 4096)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				off := int64((i*977+n*4099)%(span/4096)) * 4096
				start := time.Now()
				var err error
				if n%2 == 0 {
					_, err = d.ReadAtContext(context.Background(), buf, off)
				} else {
					_, err = d.WriteAtContext(context.Background(), buf, off)
				}
				if took := int64(time.Since(start)); took > w.longest.Load() {
					w.longest.Store(took)
				}
				switch {
				case err == nil:
					if restarted.Load() {
						w.okAfter.Store(true)
					}
				case errors.Is(err, backend.ErrNotReady):
					w.failed.Store(true)
					time.Sleep(50 * time.Millisecond)
				default:
					w.other.CompareAndSwap(nil, err.Error())
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()
	time.Sleep(time.Second)
	stopOSD(t, dir)
	up := false
	defer func() {
		if !up {
			startOSD(t, dir)
		}
	}()
	require.Eventually(t, func() bool {
		for _, w := range ws {
			if !w.failed.Load() {
				return false
			}
		}
		return true
	}, 2*time.Minute, 100*time.Millisecond, "every worker gets NOT READY")
	startOSD(t, dir)
	up = true
	restarted.Store(true)
	require.Eventually(t, func() bool {
		for _, w := range ws {
			if !w.okAfter.Load() {
				return false
			}
		}
		return true
	}, 3*time.Minute, time.Second, "every worker works again once the OSD is back")
	halt()
	for i, w := range ws {
		// The deadline is 5 s; allow for a loaded machine, never a hang.
		require.Less(t, time.Duration(w.longest.Load()), 30*time.Second, "worker %d's longest request", i)
		if e := w.other.Load(); e != nil {
			// librados may end a request it timed out itself with
			// ETIMEDOUT, which is NOT READY too; anything else is not.
			t.Errorf("worker %d: %v", i, e)
		}
	}
	require.Eventually(t, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		n := len(d.free)
		for _, o := range d.limbo {
			if o.idle() {
				n++
			}
		}
		return n == len(d.all)
	}, 2*time.Minute, time.Second, "abandoned requests come back to the pool")
	t.Logf("%d requests' states in the pool", len(d.all))
}

// stopOSD kills osd.0 of the test cluster in dir and waits for it to end.
func stopOSD(t *testing.T, dir string) {
	t.Helper()
	pidb, err := os.ReadFile(filepath.Join(dir, "run", "osd.0.pid"))
	require.NoError(t, err)
	pid := strings.TrimSpace(string(pidb))
	require.NoError(t, exec.Command("kill", "-9", pid).Run())
	require.Eventually(t, func() bool { return exec.Command("kill", "-0", pid).Run() != nil }, time.Minute, 100*time.Millisecond)
}

// startOSD starts osd.0 of the test cluster in dir again.
func startOSD(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("ceph-osd", "-c", filepath.Join(dir, "ceph.conf"), "-i", "0").CombinedOutput()
	require.NoError(t, err, string(out))
}

// TestAllocationRuns: runs of objects that exist or not are told at their
// full length across objects, from the object map.
func TestAllocationRuns(t *testing.T) {
	const obj = 4 << 20
	d := openTest(t, testOptions(t, 16*obj))
	require.True(t, d.fastDiff, "the cluster's default features include fast-diff")
	_, err := d.WriteAt(random(t, 3*obj), 5*obj)
	require.NoError(t, err)
	require.NoError(t, d.Unmap(6*obj, obj))
	require.NoError(t, d.Sync())
	for _, tc := range []struct {
		off   int64
		alloc bool
		n     int64
	}{
		{0, false, 5 * obj},
		{obj + 512, false, 4*obj - 512},
		{5*obj + 4096, true, obj - 4096},
		{6 * obj, false, obj},
		{7 * obj, true, obj},
		{8 * obj, false, 8 * obj},
	} {
		alloc, n, err := d.Allocation(tc.off)
		require.NoError(t, err)
		require.Equal(t, tc.alloc, alloc, "at %d", tc.off)
		require.EqualValues(t, tc.n, n, "at %d", tc.off)
	}
}

// TestAtomicWriteSpanRBD checks that the device reports the span its
// writes are atomic within for every client as librbd lays the image out:
// the object size as `rbd info` reports it, or the stripe unit of a
// striped image (each stripe unit lies in one object).
func TestAtomicWriteSpanRBD(t *testing.T) {
	o := testOptions(t, 8<<20)
	d := openTest(t, o)
	out, err := exec.Command("rbd", "-c", o.ConfigFile, "info", "-p", o.Pool, o.Image, "--format", "json").Output()
	require.NoError(t, err)
	var info struct {
		ObjectSize int64 `json:"object_size"`
	}
	require.NoError(t, json.Unmarshal(out, &info))
	require.EqualValues(t, 4<<20, info.ObjectSize, "the cluster's default object size")
	require.Equal(t, info.ObjectSize, d.AtomicWriteSpan())

	for _, c := range []struct {
		name string
		args []string
		span int64
	}{
		{"object size 1M", []string{"--object-size", "1M"}, 1 << 20},
		{"striped", []string{"--object-size", "1M", "--stripe-unit", "64K", "--stripe-count", "4"}, 64 << 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			io := o
			io.Image = fmt.Sprintf("%s-%d", o.Image, c.span)
			args := append([]string{"-c", o.ConfigFile, "create", "-p", o.Pool, io.Image, "--size", "8M"}, c.args...)
			out, err := exec.Command("rbd", args...).CombinedOutput()
			require.NoError(t, err, "%s", out)
			t.Cleanup(func() { require.NoError(t, Remove(context.Background(), io)) })
			d := openTest(t, io)
			require.Equal(t, c.span, d.AtomicWriteSpan())
		})
	}
}
