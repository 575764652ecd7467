//go:build linux

package backend_test

import (
	"bytes"
	"crypto/aes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/xts"

	"github.com/iscsikit/iscsikit/backend"
)

// newEncrypted returns an encrypted device over a fresh sparse file, the
// raw file underneath and the key file.
func newEncrypted(t testing.TB, sector int) (*backend.Encrypted, backend.Device, backend.KeyFile) {
	t.Helper()
	dir := t.TempDir()
	raw, err := backend.OpenFile(filepath.Join(dir, "lun.img"), backend.FileOptions{Size: devSize, Create: true})
	require.NoError(t, err)
	keys := backend.KeyFile{Path: filepath.Join(dir, "keys", "lun.key")}
	key, err := backend.NewEncryptionKey()
	require.NoError(t, err)
	require.NoError(t, keys.Store(key))
	enc, err := backend.NewEncrypted(raw, keys, sector)
	require.NoError(t, err)
	t.Cleanup(func() { enc.Close() })
	return enc, raw, keys
}

func TestEncryptedStoresCiphertextAndReadsPlaintext(t *testing.T) {
	enc, raw, keys := newEncrypted(t, 512)
	data := bytes.Repeat([]byte("secret block 0123456789abcdef!!\n"), 32) // two sectors of one pattern
	_, err := enc.WriteAt(data, 4096)
	require.NoError(t, err)

	got := make([]byte, len(data))
	_, err = enc.ReadAt(got, 4096)
	require.NoError(t, err)
	require.Equal(t, data, got)

	stored := make([]byte, len(data))
	_, err = raw.ReadAt(stored, 4096)
	require.NoError(t, err)
	require.False(t, bytes.Contains(stored, []byte("secret")), "plaintext reached the medium")
	require.NotEqual(t, stored[:512], stored[512:], "equal sectors must encrypt differently (the sector number is the tweak)")

	// The medium holds AES-256-XTS of the data with the sector number as
	// tweak: anyone with the key file can decrypt it with a standard
	// implementation.
	key, err := keys.Load()
	require.NoError(t, err)
	c, err := xts.NewCipher(aes.NewCipher, key)
	require.NoError(t, err)
	plain := make([]byte, 512)
	c.Decrypt(plain, stored[512:], 4096/512+1)
	require.Equal(t, data[512:], plain)
}

func TestEncryptedUnwrittenAndUnmappedReadZeroes(t *testing.T) {
	enc, _, _ := newEncrypted(t, 4096)
	got := make([]byte, 8192)
	_, err := enc.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 8192), got, "a never written range reads zeroes")

	_, err = enc.WriteAt(bytes.Repeat([]byte{0xa5}, 8192), 0)
	require.NoError(t, err)
	require.NoError(t, enc.Unmap(0, 4096))
	_, err = enc.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 4096), got[:4096], "an unmapped sector reads zeroes")
	require.Equal(t, bytes.Repeat([]byte{0xa5}, 4096), got[4096:])

	allocated, _, err := enc.Allocation(0)
	require.NoError(t, err)
	require.False(t, allocated, "allocation is the wrapped device's")
}

func TestEncryptedCryptoErase(t *testing.T) {
	enc, _, keys := newEncrypted(t, 512)
	old, err := keys.Load()
	require.NoError(t, err)
	data := bytes.Repeat([]byte{'a'}, 64<<10)
	_, err = enc.WriteAt(data, 0)
	require.NoError(t, err)

	require.NoError(t, enc.CryptoErase())
	now, err := keys.Load()
	require.NoError(t, err)
	require.NotEqual(t, old, now, "the key file holds a new key")

	got := make([]byte, len(data))
	_, err = enc.ReadAt(got, 0)
	require.NoError(t, err)
	for i := 0; i < len(got); i += 512 {
		require.NotEqual(t, data[i:i+512], got[i:i+512], "sector %d still readable after the erase", i/512)
	}

	// Data written after the erase survives a reopen with the stored key.
	fresh := bytes.Repeat([]byte{'b'}, 512)
	_, err = enc.WriteAt(fresh, 512)
	require.NoError(t, err)
	require.NoError(t, enc.Sync())
	raw, err := backend.OpenFile(filepath.Join(filepath.Dir(filepath.Dir(keys.Path)), "lun.img"), backend.FileOptions{})
	require.NoError(t, err)
	again, err := backend.NewEncrypted(raw, keys, 512)
	require.NoError(t, err)
	defer again.Close()
	got = got[:512]
	_, err = again.ReadAt(got, 512)
	require.NoError(t, err)
	require.Equal(t, fresh, got)
}

func TestEncryptedRefusesBadInput(t *testing.T) {
	enc, raw, keys := newEncrypted(t, 512)
	_, err := enc.WriteAt(make([]byte, 512), devSize-256)
	require.ErrorIs(t, err, backend.ErrOutOfRange)

	_, err = backend.NewEncrypted(raw, keys, 1000)
	require.ErrorContains(t, err, "power of two")
	_, err = backend.NewEncrypted(backend.NewMemory(4096+512), keys, 4096)
	require.ErrorContains(t, err, "multiple")

	missing := backend.KeyFile{Path: filepath.Join(t.TempDir(), "none.key")}
	_, err = backend.NewEncrypted(raw, missing, 512)
	require.ErrorIs(t, err, fs.ErrNotExist)

	short := backend.KeyFile{Path: filepath.Join(t.TempDir(), "short.key")}
	require.NoError(t, os.WriteFile(short.Path, []byte("too short"), 0o600))
	_, err = backend.NewEncrypted(raw, short, 512)
	require.ErrorContains(t, err, "holds 9 bytes")
	require.Error(t, short.Store([]byte("too short")))
}

// TestEncryptedPartialSectors covers I/O that does not start or end on a
// sector boundary (a SCSI read shorter than a block, a product's own
// byte-addressed use): it goes through the sectors around it.
func TestEncryptedPartialSectors(t *testing.T) {
	enc, _, _ := newEncrypted(t, 512)
	want := make([]byte, 4096)
	for i := range want {
		want[i] = byte(i * 7)
	}
	_, err := enc.WriteAt(want, 0)
	require.NoError(t, err)

	patch := bytes.Repeat([]byte{0xee}, 700)
	n, err := enc.WriteAt(patch, 300)
	require.NoError(t, err)
	require.Equal(t, len(patch), n)
	copy(want[300:], patch)

	for _, r := range []struct{ off, n int }{{0, 200}, {250, 100}, {511, 2}, {300, 700}, {1000, 3000}, {0, 4096}} {
		got := make([]byte, r.n)
		n, err := enc.ReadAt(got, int64(r.off))
		require.NoError(t, err)
		require.Equal(t, r.n, n)
		require.Equal(t, want[r.off:r.off+r.n], got, "%d bytes at %d", r.n, r.off)
	}
}

func TestKeyFileIsPrivateAndOverwrittenInPlace(t *testing.T) {
	kf := backend.KeyFile{Path: filepath.Join(t.TempDir(), "k", "lun.key")}
	k1, err := backend.NewEncryptionKey()
	require.NoError(t, err)
	require.NoError(t, kf.Store(k1))
	st, err := os.Stat(kf.Path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	k2, err := backend.NewEncryptionKey()
	require.NoError(t, err)
	require.NoError(t, kf.Store(k2))
	st2, err := os.Stat(kf.Path)
	require.NoError(t, err)
	require.True(t, os.SameFile(st, st2), "a new key overwrites the old one in the same file")
	got, err := kf.Load()
	require.NoError(t, err)
	require.Equal(t, k2, got)
}

// TestEncryptedIOAcrossErase runs writes while the key changes: no write
// may straddle a key change, so every 8-sector block ends up either
// wholly readable (written after the last change) or wholly noise.
func TestEncryptedIOAcrossErase(t *testing.T) {
	enc, _, _ := newEncrypted(t, 512)
	const writers, block = 4, 4096
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(w + 1)}, block)
			got := make([]byte, block)
			for range 200 {
				if _, err := enc.WriteAt(buf, int64(w)*block); err != nil {
					t.Error(err)
					return
				}
				if _, err := enc.ReadAt(got, int64(w)*block); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 20 {
		require.NoError(t, enc.CryptoErase())
	}
	wg.Wait()
	got := make([]byte, block)
	for w := range writers {
		_, err := enc.ReadAt(got, int64(w)*block)
		require.NoError(t, err)
		readable := 0
		for s := 0; s < block; s += 512 {
			if bytes.Equal(got[s:s+512], bytes.Repeat([]byte{byte(w + 1)}, 512)) {
				readable++
			}
		}
		require.Contains(t, []int{0, block / 512}, readable, "block %d: a write straddled a key change", w)
	}
}

// TestEncryptedUnmapKeepsPartialSectors: an unmap that ends inside a
// sector leaves that sector's data alone.
func TestEncryptedUnmapKeepsPartialSectors(t *testing.T) {
	enc, _, _ := newEncrypted(t, 512)
	data := bytes.Repeat([]byte{0x77}, 2048)
	_, err := enc.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, enc.Unmap(256, 1024)) // whole sector 1 only
	got := make([]byte, 2048)
	_, err = enc.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, data[:512], got[:512])
	require.Equal(t, make([]byte, 512), got[512:1024])
	require.Equal(t, data[1024:], got[1024:])
}

// failingKeys is a KeyStore whose Store writes the key and then fails, as
// a key file whose flush fails after the write.
type failingKeys struct {
	backend.KeyFile
}

func (f failingKeys) Store(key []byte) error {
	if err := f.KeyFile.Store(key); err != nil {
		return err
	}
	return errors.New("flush failed")
}

// TestEncryptedEraseWithFailingStore: the device goes on with the key the
// store holds, so what it writes reads back after a reopen.
func TestEncryptedEraseWithFailingStore(t *testing.T) {
	_, raw, keys := newEncrypted(t, 512)
	enc, err := backend.NewEncrypted(raw, failingKeys{keys}, 512)
	require.NoError(t, err)
	require.Error(t, enc.CryptoErase())
	data := bytes.Repeat([]byte{0x42}, 512)
	_, err = enc.WriteAt(data, 0)
	require.NoError(t, err)
	again, err := backend.NewEncrypted(raw, keys, 512)
	require.NoError(t, err)
	got := make([]byte, 512)
	_, err = again.ReadAt(got, 0)
	require.NoError(t, err)
	require.Equal(t, data, got)
}

func BenchmarkEncrypted64K(b *testing.B) {
	for _, sector := range []int{512, 4096} {
		enc, _, _ := newEncrypted(b, sector)
		buf := make([]byte, 64<<10)
		b.Run(fmt.Sprintf("write/%d", sector), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := enc.WriteAt(buf, int64(i%32)*int64(len(buf))); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("read/%d", sector), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := enc.ReadAt(buf, int64(i%32)*int64(len(buf))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
