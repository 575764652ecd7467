package backend

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"sync"
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

// Encrypted stores the data of another Device encrypted with AES-256 in
// XTS mode (IEEE 1619, the mode of disk encryption; see xtsCipher), one sector at a
// time, with the sector number as the tweak. The key comes from a
// KeyStore; CryptoErase replaces it.
//
// A sector whose stored bytes are all zero reads back as zeroes rather
// than being decrypted: that is what unwritten and deallocated storage
// (a hole of a sparse file, an UNMAP) holds, so thin provisioning keeps
// reading zeroes. A genuine ciphertext of all zeroes has a probability of
// 2^-4096 for a 512-byte sector.
//
// I/O that covers whole sectors is transformed in place (reads) or
// through one scratch buffer (writes); the SCSI layer addresses whole
// logical blocks, so a sector size equal to the logical block size (or a
// divisor of it) keeps it there. Other I/O works too, through the
// sectors around it: a partial read decrypts them and copies out, a
// partial write reads, patches and rewrites them while holding every
// other I/O off. Unmap, Allocation and Prefetch are passed to the wrapped device when it
// implements them (ErrUnsupported otherwise): allocation is not hidden.
type Encrypted struct {
	dev    Device
	keys   KeyStore
	sector int64

	// mu is held shared by every read and write and exclusively by
	// CryptoErase, so no I/O straddles a key change.
	mu     sync.RWMutex
	cipher *xtsCipher

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

// aligned reports whether [off, off+n) covers whole sectors.
func (e *Encrypted) aligned(off int64, n int) bool {
	return off%e.sector == 0 && int64(n)%e.sector == 0
}

// around returns the whole-sector range that covers [off, off+n).
func (e *Encrypted) around(off int64, n int) (start int64, length int) {
	start = off - off%e.sector
	end := off + int64(n)
	if r := end % e.sector; r != 0 {
		end += e.sector - r
	}
	return start, int(end - start)
}

// ReadAt reads and decrypts.
func (e *Encrypted) ReadAt(p []byte, off int64) (int, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.aligned(off, len(p)) {
		return e.readSectors(p, off)
	}
	start, length := e.around(off, len(p))
	bp := e.buffer(length)
	defer func() {
		clear((*bp)[:length]) // no plaintext left in the pool
		e.scratch.Put(bp)
	}()
	n, err := e.readSectors((*bp)[:length], start)
	got := max(0, min(n-int(off-start), len(p)))
	copy(p, (*bp)[off-start:int(off-start)+got])
	if err == nil && got < len(p) {
		err = io.ErrUnexpectedEOF
	}
	return got, err
}

// readSectors reads and decrypts whole sectors at off into p, in place.
func (e *Encrypted) readSectors(p []byte, off int64) (int, error) {
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

// WriteAt encrypts and writes; p is not modified.
func (e *Encrypted) WriteAt(p []byte, off int64) (int, error) {
	if !e.aligned(off, len(p)) {
		return e.writePartial(p, off)
	}
	bp := e.buffer(len(p))
	defer e.scratch.Put(bp)
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.writeSectors((*bp)[:len(p)], p, off)
}

// writeSectors encrypts the whole sectors of p into buf, which must be as
// long, and writes them at off.
func (e *Encrypted) writeSectors(buf, p []byte, off int64) (int, error) {
	for i := 0; i < len(p); i += int(e.sector) {
		e.cipher.Encrypt(buf[i:i+int(e.sector)], p[i:i+int(e.sector)], uint64(off+int64(i))/uint64(e.sector))
	}
	return e.dev.WriteAt(buf, off)
}

// writePartial writes p at an offset or length that is not sector
// aligned: the sectors around it are read, patched and written back, with
// every other read and write held off so none sees or overwrites half of
// it.
func (e *Encrypted) writePartial(p []byte, off int64) (int, error) {
	start, length := e.around(off, len(p))
	if start < 0 || start+int64(length) > e.dev.Size() {
		return 0, ErrOutOfRange
	}
	plain := make([]byte, length)
	cipher := make([]byte, length)
	e.mu.Lock()
	defer e.mu.Unlock()
	if n, err := e.readSectors(plain, start); n < length {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	copy(plain[off-start:], p)
	n, err := e.writeSectors(cipher, plain, start)
	return max(0, min(n-int(off-start), len(p))), err
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
// and write in progress has finished. If the store fails, the device
// goes on with whichever key the store then holds (the old one, or the
// new one if it was written before the failure), so that what it writes
// stays readable after a restart; the error is returned.
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
		if stored, lerr := e.keys.Load(); lerr == nil {
			if sc, cerr := newXTS(stored); cerr == nil {
				e.cipher = sc
			}
		}
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

// Unmap deallocates the whole sectors of a range of the wrapped device
// (which then read back as zeroes), if it implements Unmapper. The parts
// of sectors at its ends are left as they are: zeroing part of a
// sector's ciphertext would turn all of it into noise.
func (e *Encrypted) Unmap(off, length int64) error {
	u, ok := e.dev.(Unmapper)
	if !ok {
		return ErrUnsupported
	}
	start := (off + e.sector - 1) / e.sector * e.sector
	end := (off + length) / e.sector * e.sector
	if end <= start {
		return nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	return u.Unmap(start, end-start)
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
