// Package backend defines the block device that the SCSI layer drives and
// provides its stock implementations: a regular file (created sparse), an
// existing block device, and memory.
//
// The package knows nothing about SCSI: a Device is an addressable array of
// bytes with a size and a way to make writes durable. A storage product plugs
// its own device in by implementing Device (and, where it can, the optional
// interfaces below).
package backend

import (
	"errors"
	"io"
)

// Device is a block device addressed in bytes. Implementations must be safe
// for concurrent use: the SCSI layer issues ReadAt and WriteAt from many
// goroutines at once (one per outstanding command), so positional I/O must not
// depend on a shared file offset or a global lock.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Size reports the device's capacity in bytes.
	Size() int64
	// Sync makes every write that completed before the call durable on
	// stable storage (fdatasync for files and block devices).
	Sync() error
	// Close releases the device. No other method may be called afterwards.
	Close() error
}

// Unmapper is implemented by devices that can deallocate a byte range (thin
// provisioning). After Unmap the range reads back as zeroes.
type Unmapper interface {
	Unmap(off, length int64) error
}

// ErrOutOfRange is returned for I/O that starts or ends beyond the device.
var ErrOutOfRange = errors.New("backend: I/O beyond end of device")

// ErrClosed is returned by operations on a closed device.
var ErrClosed = errors.New("backend: device closed")

// AllocationReporter is implemented by thin devices that can tell allocated
// ranges from holes (GET LBA STATUS).
type AllocationReporter interface {
	// Allocation reports whether the byte at off is backed by storage and
	// the length of the run starting at off that shares that state, clipped
	// to the end of the device.
	Allocation(off int64) (allocated bool, length int64, err error)
}

// ErrReadOnly is returned by writes to a device opened read-only.
var ErrReadOnly = errors.New("backend: device is read-only")

// Prefetcher is implemented by devices that can be asked to load a byte
// range into their cache ahead of reads (SCSI PRE-FETCH). The call is
// advisory: it returns once the load is started, not when it is done.
type Prefetcher interface {
	Prefetch(off, length int64) error
}
