package backend

import "fmt"

// SameWriter is implemented by devices that write one block over a byte
// range in a single operation of their own (WRITE SAME), instead of taking
// the range as a stream of writes.
type SameWriter interface {
	// WriteSame writes block over and over from off for length bytes;
	// length is a multiple of len(block).
	WriteSame(block []byte, off, length int64) error
}

// CompareWriter is implemented by devices that compare and write a range as
// one atomic operation of their own (COMPARE AND WRITE), so the atomicity
// holds for every client of the device, not only this process.
type CompareWriter interface {
	// CompareAndWrite writes data at off if the range holds cmp, which is
	// as long as data. When it does not, nothing is written and the error
	// is a *MiscompareError. A range the device cannot compare and write
	// atomically gets an error wrapping errors.ErrUnsupported, and nothing
	// done: the caller then compares and writes its own way.
	CompareAndWrite(cmp, data []byte, off int64) error
}

// CompareSpanner is implemented by CompareWriters that compare and write
// atomically only a range lying within one aligned span of the device
// (librbd of Ceph 16 takes one 512-byte sector at a time). Such a device
// is shared with other clients, so a range beyond its span cannot be done
// atomically any other way either: the caller refuses it rather than
// comparing and writing on its own.
type CompareSpanner interface {
	// CompareAndWriteSpan returns the span in bytes: CompareAndWrite takes
	// every range that does not cross a multiple of it, and refuses the
	// others with an error wrapping errors.ErrUnsupported. 0 means none.
	CompareAndWriteSpan() int64
}

// AtomicSpanner is implemented by devices shared with other clients (a
// network block store that several gateways export) whose writes are
// atomic for every client only within one aligned span: librbd makes a
// write within one RADOS object a single operation of the cluster, and
// splits one that crosses objects. A lock in this process cannot make a
// longer write atomic for the other clients, so the caller refuses an
// atomic write that crosses a multiple of the span rather than make it
// atomic for its own writers only.
type AtomicSpanner interface {
	// AtomicWriteSpan returns the span in bytes: every client of the
	// device sees a WriteAt that does not cross a multiple of it either
	// whole or not at all. 0 means no write is atomic that way.
	AtomicWriteSpan() int64
}

// MiscompareError is returned by CompareAndWrite when the range does not
// hold the expected bytes.
type MiscompareError struct {
	// Offset is the offset in cmp of the first byte that differs.
	Offset int64
}

func (e *MiscompareError) Error() string {
	return fmt.Sprintf("backend: miscompare at byte %d of the range", e.Offset)
}
