package backend

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/xts"
)

// CryptoEraser is implemented by devices that keep their data encrypted
// and can make all of it unreadable at once by replacing the key (SCSI
// SANITIZE CRYPTOGRAPHIC ERASE).
type CryptoEraser interface {
	// CryptoErase replaces the data key with a fresh one. Data written
	// before the call reads back as unrelated bytes afterwards; data
	// written afterwards reads back as written.
	CryptoErase() error
}

// KeyStore keeps the data key of an Encrypted device. A storage product
// with a key management service implements it; KeyFile keeps the key in
// a local file.
type KeyStore interface {
	// Load returns the key. When there is none yet it returns an error
	// that matches fs.ErrNotExist.
	Load() ([]byte, error)
	// Store replaces the key durably. Once it returns, the old key must
	// be beyond recovery through the store: it is how a cryptographic
	// erase destroys the data.
	Store(key []byte) error
}

// EncryptionKeySize is the length of an Encrypted device's key: two
// AES-256 keys, as AES-XTS takes them.
const EncryptionKeySize = 64

// NewEncryptionKey returns a fresh random key for an Encrypted device.
func NewEncryptionKey() ([]byte, error) {
	key := make([]byte, EncryptionKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("backend: encryption key: %w", err)
	}
	return key, nil
}

// ErrMisaligned is returned by an Encrypted device for I/O that does not
// start and end on a sector boundary.
var ErrMisaligned = errors.New("backend: I/O not aligned to the encryption sector")

// Encrypted stores the data of another Device encrypted with AES-256 in
// XTS mode (IEEE 1619, the mode of disk encryption), one sector at a
// time, with the sector number as the tweak. The key comes from a
// KeyStore; CryptoErase replaces it.
//
// A sector whose stored bytes are all zero reads back as zeroes rather
// than being decrypted: that is what unwritten and deallocated storage
// (a hole of a sparse file, an UNMAP) holds, so thin provisioning keeps
// reading zeroes. A genuine ciphertext of all zeroes has a probability of
// 2^-4096 for a 512-byte sector.
//
// Reads and writes must cover whole sectors (ErrMisaligned otherwise);
// the SCSI layer addresses whole logical blocks, so a sector size equal
// to the logical block size (or a divisor of it) meets that. Unmap,
// Allocation and Prefetch are passed to the wrapped device when it
// implements them (ErrUnsupported otherwise): allocation is not hidden.
type Encrypted struct {
	dev    Device
	keys   KeyStore
	sector int64

	// mu is held shared by every read and write and exclusively by
	// CryptoErase, so no I/O straddles a key change.
	mu     sync.RWMutex
	cipher *xts.Cipher

	scratch sync.Pool // *[]byte ciphertext buffers for WriteAt
}

// NewEncrypted wraps dev, whose size must be a multiple of sectorSize (a
// power of two from 512 to 65536), with the key keys holds.
func NewEncrypted(dev Device, keys KeyStore, sectorSize int) (*Encrypted, error) {
	if sectorSize < 512 || sectorSize > 65536 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("backend: encryption sector size %d is not a power of two from 512 to 65536", sectorSize)
	}
	if dev.Size()%int64(sectorSize) != 0 {
		return nil, fmt.Errorf("backend: device size %d is not a multiple of the %d-byte encryption sector", dev.Size(), sectorSize)
	}
	key, err := keys.Load()
	if err != nil {
		return nil, fmt.Errorf("backend: loading the encryption key: %w", err)
	}
	c, err := newXTS(key)
	if err != nil {
		return nil, err
	}
	return &Encrypted{dev: dev, keys: keys, sector: int64(sectorSize), cipher: c}, nil
}

func newXTS(key []byte) (*xts.Cipher, error) {
	if len(key) != EncryptionKeySize {
		return nil, fmt.Errorf("backend: encryption key is %d bytes, want %d", len(key), EncryptionKeySize)
	}
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		return nil, fmt.Errorf("backend: encryption key: %w", err)
	}
	return c, nil
}

// aligned checks that [off, off+n) covers whole sectors.
func (e *Encrypted) aligned(off int64, n int) error {
	if off%e.sector != 0 || int64(n)%e.sector != 0 {
		return fmt.Errorf("%w: %d bytes at %d, %d-byte sectors", ErrMisaligned, n, off, e.sector)
	}
	return nil
}

// ReadAt reads and decrypts whole sectors.
func (e *Encrypted) ReadAt(p []byte, off int64) (int, error) {
	if err := e.aligned(off, len(p)); err != nil {
		return 0, err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	n, err := e.dev.ReadAt(p, off)
	// Only whole sectors can be decrypted; a short read reports the
	// sectors it got.
	n -= n % int(e.sector)
	zero := zeroSector[:e.sector]
	for i := 0; i < n; i += int(e.sector) {
		s := p[i : i+int(e.sector)]
		if bytes.Equal(s, zero) {
			continue
		}
		e.cipher.Decrypt(s, s, uint64(off+int64(i))/uint64(e.sector))
	}
	return n, err
}

// zeroSector is compared against to find unwritten sectors.
var zeroSector [65536]byte

// WriteAt encrypts whole sectors and writes them; p is not modified.
func (e *Encrypted) WriteAt(p []byte, off int64) (int, error) {
	if err := e.aligned(off, len(p)); err != nil {
		return 0, err
	}
	bp := e.buffer(len(p))
	defer e.scratch.Put(bp)
	buf := (*bp)[:len(p)]
	e.mu.RLock()
	defer e.mu.RUnlock()
	for i := 0; i < len(p); i += int(e.sector) {
		e.cipher.Encrypt(buf[i:i+int(e.sector)], p[i:i+int(e.sector)], uint64(off+int64(i))/uint64(e.sector))
	}
	return e.dev.WriteAt(buf, off)
}

// buffer returns a scratch buffer of at least n bytes.
func (e *Encrypted) buffer(n int) *[]byte {
	if bp, ok := e.scratch.Get().(*[]byte); ok && cap(*bp) >= n {
		return bp
	}
	b := make([]byte, n)
	return &b
}

// CryptoErase stores a fresh key and switches to it, after every read
// and write in progress has finished. If the store fails the old key
// stays in use and the error is returned.
func (e *Encrypted) CryptoErase() error {
	key, err := NewEncryptionKey()
	if err != nil {
		return err
	}
	c, err := newXTS(key)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.keys.Store(key); err != nil {
		return fmt.Errorf("backend: storing the new encryption key: %w", err)
	}
	e.cipher = c
	return nil
}

// Size reports the wrapped device's size.
func (e *Encrypted) Size() int64 { return e.dev.Size() }

// Sync syncs the wrapped device.
func (e *Encrypted) Sync() error { return e.dev.Sync() }

// Close closes the wrapped device.
func (e *Encrypted) Close() error { return e.dev.Close() }

// Unmap deallocates a range of the wrapped device (which then reads back
// as zeroes), if it implements Unmapper.
func (e *Encrypted) Unmap(off, length int64) error {
	u, ok := e.dev.(Unmapper)
	if !ok {
		return ErrUnsupported
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return u.Unmap(off, length)
}

// Allocation reports the wrapped device's allocation, if it implements
// AllocationReporter.
func (e *Encrypted) Allocation(off int64) (bool, int64, error) {
	r, ok := e.dev.(AllocationReporter)
	if !ok {
		return false, 0, ErrUnsupported
	}
	return r.Allocation(off)
}

// Prefetch passes the hint to the wrapped device, if it implements
// Prefetcher.
func (e *Encrypted) Prefetch(off, length int64) error {
	p, ok := e.dev.(Prefetcher)
	if !ok {
		return ErrUnsupported
	}
	return p.Prefetch(off, length)
}
