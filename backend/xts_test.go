package backend

import (
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/xts"
)

// TestXTSMatchesReference checks xtsCipher against golang.org/x/crypto/xts
// (itself checked against the IEEE 1619 vectors): random keys, sector
// numbers across the whole 64-bit range, every sector size from one
// block to 4 KiB, in place and not.
func TestXTSMatchesReference(t *testing.T) {
	for round := range 200 {
		key := make([]byte, EncryptionKeySize)
		_, err := rand.Read(key)
		require.NoError(t, err)
		ours, err := newXTS(key)
		require.NoError(t, err)
		ref, err := xts.NewCipher(aes.NewCipher, key)
		require.NoError(t, err)

		var r [10]byte
		_, err = rand.Read(r[:])
		require.NoError(t, err)
		sector := binary.LittleEndian.Uint64(r[:8]) >> (round % 64)
		size := 16 * (1 + int(binary.LittleEndian.Uint16(r[8:]))%256)
		plain := make([]byte, size)
		_, err = rand.Read(plain)
		require.NoError(t, err)

		want := make([]byte, size)
		ref.Encrypt(want, plain, sector)
		got := make([]byte, size)
		ours.Encrypt(got, plain, sector)
		require.Equal(t, want, got, "encrypt: sector %d, %d bytes", sector, size)

		inPlace := append([]byte(nil), plain...)
		ours.Encrypt(inPlace, inPlace, sector)
		require.Equal(t, want, inPlace, "encrypt in place")
		ours.Decrypt(inPlace, inPlace, sector)
		require.Equal(t, plain, inPlace, "decrypt in place")

		back := make([]byte, size)
		ours.Decrypt(back, want, sector)
		require.Equal(t, plain, back, "decrypt")
	}
}

func TestXTSRefusesWrongKeySize(t *testing.T) {
	_, err := newXTS(make([]byte, 32))
	require.ErrorContains(t, err, "want 64")
}

// BenchmarkXTS compares xtsCipher with golang.org/x/crypto/xts on 4 KiB
// sectors; it is why the backend has its own.
func BenchmarkXTS(b *testing.B) {
	key := make([]byte, EncryptionKeySize)
	buf := make([]byte, 4096)
	ours, err := newXTS(key)
	require.NoError(b, err)
	ref, err := xts.NewCipher(aes.NewCipher, key)
	require.NoError(b, err)
	b.Run("ours/encrypt", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for i := 0; b.Loop(); i++ {
			ours.Encrypt(buf, buf, uint64(i))
		}
	})
	b.Run("ours/decrypt", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for i := 0; b.Loop(); i++ {
			ours.Decrypt(buf, buf, uint64(i))
		}
	})
	b.Run("x-crypto/encrypt", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for i := 0; b.Loop(); i++ {
			ref.Encrypt(buf, buf, uint64(i))
		}
	})
	b.Run("x-crypto/decrypt", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		for i := 0; b.Loop(); i++ {
			ref.Decrypt(buf, buf, uint64(i))
		}
	})
}
