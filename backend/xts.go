package backend

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"fmt"
)

// xtsCipher is AES-XTS (IEEE 1619): each 16-byte block of a sector is
// encrypted with the first AES key, whitened before and after with a
// tweak that starts as the sector number encrypted with the second key
// and is multiplied by x in GF(2^128) from one block to the next. It
// computes the same transform as golang.org/x/crypto/xts (the tests check
// it against that package), about three times as fast: the tweak lives in
// two uint64 words instead of a byte array walked bit by bit.
type xtsCipher struct {
	k1, k2 cipher.Block
}

// newXTS makes the cipher of a 64-byte key: two AES-256 keys.
func newXTS(key []byte) (*xtsCipher, error) {
	if len(key) != EncryptionKeySize {
		return nil, fmt.Errorf("backend: encryption key is %d bytes, want %d", len(key), EncryptionKeySize)
	}
	k1, err := aes.NewCipher(key[:EncryptionKeySize/2])
	if err != nil {
		return nil, fmt.Errorf("backend: encryption key: %w", err)
	}
	k2, err := aes.NewCipher(key[EncryptionKeySize/2:])
	if err != nil {
		return nil, fmt.Errorf("backend: encryption key: %w", err)
	}
	return &xtsCipher{k1: k1, k2: k2}, nil
}

// Encrypt encrypts one sector, src into dst, which must be the same
// slice or not overlap it; its length must be a multiple of 16.
func (c *xtsCipher) Encrypt(dst, src []byte, sector uint64) { c.crypt(dst, src, sector, false) }

// Decrypt decrypts one sector, src into dst, which must be the same
// slice or not overlap it; its length must be a multiple of 16.
func (c *xtsCipher) Decrypt(dst, src []byte, sector uint64) { c.crypt(dst, src, sector, true) }

// crypt works in dst alone, so that nothing escapes to the heap through
// the AES interface: the tweak is computed in dst's first block (whose
// input is saved first, for the in-place case), and each block is
// whitened, ciphered and whitened again where it lands.
func (c *xtsCipher) crypt(dst, src []byte, sector uint64, decrypt bool) {
	if len(src) < 16 {
		return
	}
	le := binary.LittleEndian
	first0, first1 := le.Uint64(src), le.Uint64(src[8:])
	le.PutUint64(dst, sector)
	le.PutUint64(dst[8:], 0)
	c.k2.Encrypt(dst[:16], dst[:16])
	lo, hi := le.Uint64(dst), le.Uint64(dst[8:])
	for i := 0; i+16 <= len(src); i += 16 {
		in0, in1 := first0, first1
		if i > 0 {
			in0, in1 = le.Uint64(src[i:]), le.Uint64(src[i+8:])
		}
		blk := dst[i : i+16]
		le.PutUint64(blk, in0^lo)
		le.PutUint64(blk[8:], in1^hi)
		if decrypt {
			c.k1.Decrypt(blk, blk)
		} else {
			c.k1.Encrypt(blk, blk)
		}
		le.PutUint64(blk, le.Uint64(blk)^lo)
		le.PutUint64(blk[8:], le.Uint64(blk[8:])^hi)
		// Multiply the tweak by x: shift the 128-bit little-endian
		// value left by one and reduce by x^128 = x^7 + x^2 + x + 1.
		carry := hi >> 63
		hi = hi<<1 | lo>>63
		lo = lo<<1 ^ carry*0x87
	}
}
