//go:build linux

package backend_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
)

const devSize = 4 << 20

// devices returns one fresh device of each kind that stores data.
func devices(t testing.TB) map[string]backend.Device {
	t.Helper()
	f, err := backend.OpenFile(filepath.Join(t.TempDir(), "lun.img"), backend.FileOptions{Size: devSize, Create: true})
	require.NoError(t, err)
	m := backend.NewMemory(devSize)
	t.Cleanup(func() { f.Close(); m.Close() })
	return map[string]backend.Device{"file": f, "memory": m}
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestReadWriteAndBounds(t *testing.T) {
	for name, d := range devices(t) {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, int64(devSize), d.Size())
			got := make([]byte, 4096)
			_, err := d.ReadAt(got, 0)
			require.NoError(t, err)
			require.Equal(t, make([]byte, 4096), got, "a new device reads as zeroes")

			// Writes that straddle chunk boundaries at odd offsets.
			data := random(t, 200_000)
			n, err := d.WriteAt(data, 65_536-3)
			require.NoError(t, err)
			require.Equal(t, len(data), n)
			back := make([]byte, len(data))
			_, err = d.ReadAt(back, 65_536-3)
			require.NoError(t, err)
			require.Equal(t, data, back)
			require.NoError(t, d.Sync())

			// The last byte is addressable, the one after is not.
			_, err = d.WriteAt([]byte{7}, devSize-1)
			require.NoError(t, err)
			_, err = d.WriteAt([]byte{7, 7}, devSize-1)
			require.ErrorIs(t, err, backend.ErrOutOfRange)
			_, err = d.ReadAt(make([]byte, 1), devSize)
			require.ErrorIs(t, err, backend.ErrOutOfRange)
			_, err = d.ReadAt(make([]byte, 1), -1)
			require.ErrorIs(t, err, backend.ErrOutOfRange)
		})
	}
}

func TestUnmapAndAllocation(t *testing.T) {
	for name, d := range devices(t) {
		t.Run(name, func(t *testing.T) {
			u := d.(backend.Unmapper)
			a := d.(backend.AllocationReporter)
			allocated, n, err := a.Allocation(0)
			require.NoError(t, err)
			require.False(t, allocated, "a new thin device is one hole")
			require.Equal(t, int64(devSize), n)

			data := random(t, 1<<20)
			_, err = d.WriteAt(data, 1<<20)
			require.NoError(t, err)
			allocated, n, err = a.Allocation(1 << 20)
			require.NoError(t, err)
			require.True(t, allocated)
			require.Equal(t, int64(1<<20), n)

			// Punch a 256 KiB hole in the middle of the data.
			require.NoError(t, u.Unmap(1<<20+256<<10, 256<<10))
			back := make([]byte, 1<<20)
			_, err = d.ReadAt(back, 1<<20)
			require.NoError(t, err)
			want := append([]byte(nil), data...)
			clear(want[256<<10 : 512<<10])
			require.Equal(t, want, back, "the unmapped range reads as zeroes, the rest is intact")
			allocated, n, err = a.Allocation(1<<20 + 256<<10)
			require.NoError(t, err)
			require.False(t, allocated)
			require.Equal(t, int64(256<<10), n)

			// An unaligned unmap still zeroes exactly its bytes.
			require.NoError(t, u.Unmap(1<<20+3, 10))
			_, err = d.ReadAt(back[:16], 1<<20)
			require.NoError(t, err)
			require.Equal(t, append(append(data[:3:3], make([]byte, 10)...), data[13:16]...), back[:16])

			require.ErrorIs(t, u.Unmap(devSize-1, 2), backend.ErrOutOfRange)
		})
	}
}

func TestConcurrentWritersDoNotTear(t *testing.T) {
	for name, d := range devices(t) {
		t.Run(name, func(t *testing.T) {
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					block := bytes.Repeat([]byte{byte(w + 1)}, 4096)
					for i := range 64 {
						off := int64((i*8 + w) * 4096)
						if _, err := d.WriteAt(block, off); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			got := make([]byte, 4096)
			for i := range 64 * 8 {
				_, err := d.ReadAt(got, int64(i*4096))
				require.NoError(t, err)
				require.Equal(t, bytes.Repeat([]byte{byte(i%8 + 1)}, 4096), got, "block %d", i)
			}
		})
	}
}

func TestClosedDevicesRefuseIO(t *testing.T) {
	for name, d := range devices(t) {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, d.Close())
			_, err := d.ReadAt(make([]byte, 1), 0)
			require.ErrorIs(t, err, backend.ErrClosed)
			_, err = d.WriteAt(make([]byte, 1), 0)
			require.ErrorIs(t, err, backend.ErrClosed)
			require.ErrorIs(t, d.Close(), backend.ErrClosed)
		})
	}
}

func TestFileIsCreatedSparseAndGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "thin.img")
	f, err := backend.OpenFile(path, backend.FileOptions{Size: 1 << 30, Create: true})
	require.NoError(t, err)
	require.Equal(t, int64(1<<30), f.Size())
	require.False(t, f.IsBlockDevice())
	require.NoError(t, f.Close())
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, int64(1<<30), fi.Size())
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	require.Less(t, blocksOnDisk(t, fi), int64(1<<20), "a new image takes no space")

	// Reopening with a larger size grows it; a smaller one never shrinks it.
	f, err = backend.OpenFile(path, backend.FileOptions{Size: 2 << 30})
	require.NoError(t, err)
	require.Equal(t, int64(2<<30), f.Size())
	require.NoError(t, f.Close())
	f, err = backend.OpenFile(path, backend.FileOptions{Size: 1 << 20})
	require.NoError(t, err)
	require.Equal(t, int64(2<<30), f.Size())
	require.NoError(t, f.Close())
}

func TestFileOptionErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := backend.OpenFile(filepath.Join(dir, "missing.img"), backend.FileOptions{Size: 1 << 20})
	require.Error(t, err, "no Create, no file")
	_, err = backend.OpenFile(filepath.Join(dir, "new.img"), backend.FileOptions{Create: true})
	require.ErrorContains(t, err, "needs a size")
	_, err = backend.OpenFile(dir, backend.FileOptions{})
	require.ErrorContains(t, err, "directory")
	_, err = backend.OpenFile(filepath.Join(dir, "neg.img"), backend.FileOptions{Size: -1, Create: true})
	require.ErrorContains(t, err, "negative")
}

func TestFileReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.img")
	f, err := backend.OpenFile(path, backend.FileOptions{Size: 1 << 20, Create: true})
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("keep"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	ro, err := backend.OpenFile(path, backend.FileOptions{ReadOnly: true})
	require.NoError(t, err)
	defer ro.Close()
	_, err = ro.WriteAt([]byte("lose"), 0)
	require.ErrorIs(t, err, backend.ErrReadOnly)
	require.ErrorIs(t, ro.Unmap(0, 4096), backend.ErrReadOnly)
	got := make([]byte, 4)
	_, err = ro.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, []byte("keep"), got)
}

func TestFileDirectUnalignedIO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "direct.img")
	f, err := backend.OpenFile(path, backend.FileOptions{Size: 1 << 20, Create: true, Direct: true})
	if err != nil && errors.Is(err, errors.ErrUnsupported) || err != nil && isEINVAL(err) {
		t.Skipf("O_DIRECT not supported on this filesystem: %v", err)
	}
	require.NoError(t, err)
	defer f.Close()
	data := random(t, 10_000)
	_, err = f.WriteAt(data, 777) // unaligned: goes through a bounce buffer
	require.NoError(t, err)
	back := make([]byte, len(data))
	_, err = f.ReadAt(back, 777)
	require.NoError(t, err)
	require.Equal(t, data, back)
	aligned := random(t, 8192)
	_, err = f.WriteAt(aligned, 8192)
	require.NoError(t, err)
	_, err = f.ReadAt(back[:8192], 8192)
	require.NoError(t, err)
	require.Equal(t, aligned, back[:8192])
}

// blocksOnDisk returns the bytes a file really occupies.
func blocksOnDisk(t *testing.T, fi os.FileInfo) int64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	require.True(t, ok)
	return st.Blocks * 512
}

func isEINVAL(err error) bool { return errors.Is(err, syscall.EINVAL) }

func TestNullDevice(t *testing.T) {
	n := backend.NewNull(1 << 20)
	_, err := n.WriteAt([]byte("gone"), 0)
	require.NoError(t, err)
	got := []byte("xxxx")
	_, err = n.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 4), got)
	_, err = n.ReadAt(got, 1<<20-2)
	require.ErrorIs(t, err, backend.ErrOutOfRange)
	require.NoError(t, n.Close())
}

// benchmarkIO measures 64 KiB positional I/O on each device, the shape of
// a typical initiator request.
func benchmarkIO(b *testing.B, write bool) {
	for name, d := range devices(b) {
		b.Run(name, func(b *testing.B) {
			buf := random(b, 64<<10)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			var off int64
			for b.Loop() {
				var err error
				if write {
					_, err = d.WriteAt(buf, off)
				} else {
					_, err = d.ReadAt(buf, off)
				}
				if err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(buf))) % devSize
			}
		})
	}
}

func BenchmarkWriteAt64K(b *testing.B) { benchmarkIO(b, true) }
func BenchmarkReadAt64K(b *testing.B)  { benchmarkIO(b, false) }

func TestFilePrefetch(t *testing.T) {
	dir := t.TempDir()
	for _, direct := range []bool{false, true} {
		f, err := backend.OpenFile(filepath.Join(dir, fmt.Sprintf("p%v.img", direct)), backend.FileOptions{Size: devSize, Create: true, Direct: direct})
		require.NoError(t, err)
		var p backend.Prefetcher = f
		require.NoError(t, p.Prefetch(0, devSize))
		require.NoError(t, p.Prefetch(devSize, 0))
		require.ErrorIs(t, p.Prefetch(devSize-512, 1024), backend.ErrOutOfRange)
		require.ErrorIs(t, p.Prefetch(-1, 1), backend.ErrOutOfRange)
		require.NoError(t, f.Close())
		require.ErrorIs(t, p.Prefetch(0, 512), backend.ErrClosed)
	}
}
