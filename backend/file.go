//go:build linux

package backend

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileOptions says how OpenFile opens a file or block device.
type FileOptions struct {
	// Size is the capacity in bytes. For a regular file, 0 keeps the
	// file's current size; a larger size grows the file sparsely (it is
	// never shrunk). For a block device it must be 0 or at most the
	// device's size, which limits the capacity exposed.
	Size int64
	// Create creates a missing regular file (mode 0600), sparse, of Size.
	Create bool
	// ReadOnly opens the file read-only; writes and unmaps fail with
	// ErrReadOnly.
	ReadOnly bool
	// Direct opens with O_DIRECT, bypassing the page cache. I/O that is
	// not aligned to directAlign goes through an aligned bounce buffer.
	Direct bool
}

// directAlign is the alignment O_DIRECT I/O is given: the largest logical
// block size in common use, so it satisfies every device.
const directAlign = 4096

// File is a Device over a regular file or a block device. Regular files
// are thin: holes read as zeroes, Unmap punches holes and Allocation
// reports them.
type File struct {
	f        *os.File
	fd       int
	path     string
	size     int64
	blockDev bool
	readOnly bool
	direct   bool
	closed   atomic.Bool
	// rmw serializes the read-modify-write of unaligned O_DIRECT writes
	// (exclusive) against aligned ones (shared).
	rmw sync.RWMutex
}

// OpenFile opens (and with Create, creates) the file or block device at
// path.
func OpenFile(path string, opt FileOptions) (*File, error) {
	if opt.Size < 0 {
		return nil, fmt.Errorf("backend: %s: negative size %d", path, opt.Size)
	}
	flags := os.O_RDWR
	if opt.ReadOnly {
		flags = os.O_RDONLY
	}
	if opt.Direct {
		flags |= unix.O_DIRECT
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && opt.Create:
		if opt.Size == 0 {
			return nil, fmt.Errorf("backend: %s: a new file needs a size", path)
		}
		if opt.ReadOnly {
			return nil, fmt.Errorf("backend: %s: cannot create a read-only file", path)
		}
		flags |= os.O_CREATE | os.O_EXCL
	case err != nil:
		return nil, fmt.Errorf("backend: %w", err)
	case fi.IsDir():
		return nil, fmt.Errorf("backend: %s is a directory", path)
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	d := &File{f: f, fd: int(f.Fd()), path: path, readOnly: opt.ReadOnly, direct: opt.Direct}
	if err := d.setSize(opt.Size); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// setSize finds the device's size and, for regular files, grows the file
// to the requested size.
func (d *File) setSize(want int64) error {
	fi, err := d.f.Stat()
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	switch mode := fi.Mode(); {
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		d.blockDev = true
		var devSize uint64
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&devSize))); errno != 0 {
			return fmt.Errorf("backend: %s: BLKGETSIZE64: %w", d.path, errno)
		}
		if uint64(want) > devSize {
			return fmt.Errorf("backend: %s: size %d exceeds the device's %d bytes", d.path, want, devSize)
		}
		d.size = int64(devSize)
		if want > 0 {
			d.size = want
		}
	case mode.IsRegular():
		d.size = fi.Size()
		if want > d.size {
			if d.readOnly {
				return fmt.Errorf("backend: %s: cannot grow a read-only file from %d to %d bytes", d.path, d.size, want)
			}
			if err := d.f.Truncate(want); err != nil {
				return fmt.Errorf("backend: grow %s: %w", d.path, err)
			}
			d.size = want
		}
	default:
		return fmt.Errorf("backend: %s is neither a regular file nor a block device", d.path)
	}
	if d.size == 0 {
		return fmt.Errorf("backend: %s is empty", d.path)
	}
	return nil
}

// Path returns the path the device was opened with.
func (d *File) Path() string { return d.path }

// IsBlockDevice reports whether the device is a block device rather than a
// regular file.
func (d *File) IsBlockDevice() bool { return d.blockDev }

// Size reports the capacity in bytes.
func (d *File) Size() int64 { return d.size }

// Direct reports whether the device was opened with O_DIRECT.
func (d *File) Direct() bool { return d.direct }

func (d *File) check(off int64, n int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if off < 0 || n < 0 || off > d.size || n > d.size-off {
		return ErrOutOfRange
	}
	return nil
}

// ioErr maps the error of an operation on a closed *os.File to ErrClosed.
func ioErr(op string, err error) error {
	switch {
	case errors.Is(err, os.ErrClosed):
		return ErrClosed
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("backend: %s: %w (%w)", op, ErrNoSpace, err)
	}
	return fmt.Errorf("backend: %s: %w", op, err)
}

// ReadAt reads len(p) bytes at off. Parts of a regular file beyond its end
// (but within Size) read as zeroes.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if d.direct && !aligned(p, off) {
		return d.bounceRead(p, off)
	}
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return len(p), nil
	}
	if err != nil {
		return n, ioErr("read", err)
	}
	return n, nil
}

// WriteAt writes p at off.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	if d.direct {
		if !aligned(p, off) {
			return d.bounceWrite(p, off)
		}
		d.rmw.RLock()
		defer d.rmw.RUnlock()
	}
	n, err := d.f.WriteAt(p, off)
	if err != nil {
		return n, ioErr("write", err)
	}
	return n, nil
}

// aligned reports whether an O_DIRECT transfer of p at off can go straight
// to the file.
func aligned(p []byte, off int64) bool {
	if len(p) == 0 {
		return true
	}
	return off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// alignedBuffer returns an n-byte buffer whose address is a multiple of
// directAlign.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	shift := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[shift : shift+n : shift+n]
}

// bounceSpan returns the aligned region covering [off, off+n).
func bounceSpan(off int64, n int) (start int64, length int) {
	start = off &^ (directAlign - 1)
	end := (off + int64(n) + directAlign - 1) &^ (directAlign - 1)
	return start, int(end - start)
}

// readAligned fills the aligned buffer b from start, zero-filling past the
// end of a regular file.
func (d *File) readAligned(b []byte, start int64) error {
	n, err := d.f.ReadAt(b, start)
	if err == io.EOF {
		clear(b[n:])
		return nil
	}
	if err != nil {
		return ioErr("read", err)
	}
	return nil
}

func (d *File) bounceRead(p []byte, off int64) (int, error) {
	start, length := bounceSpan(off, len(p))
	b := alignedBuffer(length)
	if err := d.readAligned(b, start); err != nil {
		return 0, err
	}
	return copy(p, b[off-start:]), nil
}

func (d *File) bounceWrite(p []byte, off int64) (int, error) {
	start, length := bounceSpan(off, len(p))
	b := alignedBuffer(length)
	d.rmw.Lock()
	defer d.rmw.Unlock()
	if start != off || length != len(p) {
		if err := d.readAligned(b, start); err != nil {
			return 0, err
		}
	}
	copy(b[off-start:], p)
	if _, err := d.f.WriteAt(b, start); err != nil {
		return 0, ioErr("write", err)
	}
	return len(p), nil
}

// Sync makes completed writes durable (fdatasync).
func (d *File) Sync() error {
	if d.closed.Load() {
		return ErrClosed
	}
	if d.readOnly {
		return nil
	}
	if err := unix.Fdatasync(d.fd); err != nil {
		return ioErr("fdatasync", err)
	}
	return nil
}

// Unmap deallocates [off, off+length). A regular file gets a hole punched
// (fallocate PUNCH_HOLE|KEEP_SIZE); a block device is asked to discard
// (BLKDISCARD). Where neither works the range is overwritten with zeroes,
// so it reads back as zeroes either way.
func (d *File) Unmap(off, length int64) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if err := d.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	var err error
	if d.blockDev {
		rng := [2]uint64{uint64(off), uint64(length)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&rng))); errno != 0 {
			err = errno
		}
		// A discarded range of a block device need not read as zeroes.
		if err == nil {
			err = unix.ENOTSUP
		}
	} else {
		err = unix.Fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTTY):
		return d.writeZeroes(off, length)
	default:
		return ioErr("unmap", err)
	}
}

// Prefetch asks the kernel to read [off, off+length) into the page cache
// (posix_fadvise WILLNEED). With O_DIRECT there is no cache to fill and
// it does nothing.
func (d *File) Prefetch(off, length int64) error {
	if err := d.check(off, length); err != nil {
		return err
	}
	if length == 0 || d.direct {
		return nil
	}
	if err := unix.Fadvise(d.fd, off, length, unix.FADV_WILLNEED); err != nil {
		return ioErr("prefetch", err)
	}
	return nil
}

// writeZeroes overwrites [off, off+length) with zeroes.
func (d *File) writeZeroes(off, length int64) error {
	zero := alignedBuffer(int(min(length, 1<<20)))
	for done := int64(0); done < length; {
		n := min(int64(len(zero)), length-done)
		if _, err := d.WriteAt(zero[:n], off+done); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Allocation reports whether off lies in data or in a hole of a regular
// file (SEEK_DATA/SEEK_HOLE) and how far that run extends. A block device
// reports everything allocated.
func (d *File) Allocation(off int64) (bool, int64, error) {
	if err := d.check(off, 1); err != nil {
		return false, 0, err
	}
	if d.blockDev {
		return true, d.size - off, nil
	}
	data, err := unix.Seek(d.fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO): // no data from off to the end of file
		return false, d.size - off, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return true, d.size - off, nil // the filesystem cannot tell
	case err != nil:
		return false, 0, ioErr("seek data", err)
	}
	if data > off {
		return false, min(data, d.size) - off, nil
	}
	hole, err := unix.Seek(d.fd, off, unix.SEEK_HOLE)
	if err != nil {
		return false, 0, ioErr("seek hole", err)
	}
	return true, min(hole, d.size) - off, nil
}

// Close closes the file. Later calls fail with ErrClosed.
func (d *File) Close() error {
	if d.closed.Swap(true) {
		return ErrClosed
	}
	if err := d.f.Close(); err != nil {
		return ioErr("close", err)
	}
	return nil
}
