package backend

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
)

// FaultOp selects the operations a Fault applies to.
type FaultOp uint8

// The operations a Fault can target; combine them with |.
const (
	FaultRead FaultOp = 1 << iota
	FaultWrite
	FaultSync
)

// ErrInjected matches, with errors.Is, every *InjectedError: the errors a
// Faulty device injects when a Fault does not name its own.
var ErrInjected = errors.New("backend: injected fault")

// InjectedError is the default error of an injected fault: an I/O error
// (EIO, which errors.Is also matches) at a byte offset.
type InjectedError struct {
	Off int64 // first byte that failed; -1 for Sync
	Err error
}

func (e *InjectedError) Error() string {
	if e.Off < 0 {
		return fmt.Sprintf("backend: injected fault: %v", e.Err)
	}
	return fmt.Sprintf("backend: injected fault at byte %d: %v", e.Off, e.Err)
}

// Unwrap returns the underlying errno.
func (e *InjectedError) Unwrap() error { return e.Err }

// Is makes every InjectedError match ErrInjected.
func (e *InjectedError) Is(target error) bool { return target == ErrInjected }

// Fault describes one fault a Faulty device injects.
type Fault struct {
	// Op is the set of operations it applies to.
	Op FaultOp
	// Off and Len bound the byte range it applies to: an operation that
	// overlaps [Off, Off+Len) triggers it. Len 0 means the whole device.
	// Sync has no range and triggers any Fault with FaultSync.
	Off, Len int64
	// Delay is waited before the operation runs (a slow device).
	Delay time.Duration
	// Hold, when not nil, blocks the operation until it is closed (a
	// device that hangs until the test lets it go).
	Hold <-chan struct{}
	// Fail makes the operation fail. Reads and writes transfer the bytes
	// before the faulted range and then fail, so the error's offset (and
	// the returned count) names the first bad byte.
	Fail bool
	// Err is the error a failing operation returns; nil means an
	// *InjectedError wrapping syscall.EIO.
	Err error
	// Torn makes a failing write tear: the part of the write inside the
	// faulted range is written only up to its first TearAt bytes, as if
	// power was lost in the middle, and the write fails.
	Torn   bool
	TearAt int64
	// Count is how many times the fault fires; 0 means every time.
	Count int
}

// Faulty wraps a Device and injects faults (errors, delays, hangs and
// torn writes) into its operations, for tests of the layers above and for
// a storage product's own fault testing. With no faults added it behaves
// exactly like the device it wraps. Faults can be added and cleared while
// I/O runs.
type Faulty struct {
	dev Device

	mu     sync.Mutex
	faults []*faultState
	hits   int
}

type faultState struct {
	Fault
	fired int
}

// NewFaulty wraps dev. Unmap and Allocation are passed through when dev
// implements them (and fail with ErrUnsupported otherwise).
func NewFaulty(dev Device) *Faulty { return &Faulty{dev: dev} }

// ErrUnsupported is returned by Faulty for an optional operation the
// wrapped device does not implement.
var ErrUnsupported = errors.New("backend: operation not supported by the device")

// Add installs f; it applies to operations that start afterwards.
func (d *Faulty) Add(f Fault) {
	d.mu.Lock()
	d.faults = append(d.faults, &faultState{Fault: f})
	d.mu.Unlock()
}

// Clear removes every fault.
func (d *Faulty) Clear() {
	d.mu.Lock()
	d.faults = nil
	d.mu.Unlock()
}

// Hits reports how many times faults have fired.
func (d *Faulty) Hits() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.hits
}

// match returns the first live fault for op over [off, off+n), counting
// it as fired.
func (d *Faulty) match(op FaultOp, off, n int64) *Fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, f := range d.faults {
		if f.Op&op == 0 || (f.Count > 0 && f.fired >= f.Count) {
			continue
		}
		if op != FaultSync && f.Len > 0 && (off+n <= f.Off || off >= f.Off+f.Len) {
			continue
		}
		f.fired++
		d.hits++
		fc := f.Fault
		return &fc
	}
	return nil
}

// wait applies a fault's delay and hold.
func (f *Fault) wait() {
	if f.Delay > 0 {
		time.Sleep(f.Delay)
	}
	if f.Hold != nil {
		<-f.Hold
	}
}

// failAt returns the fault's error for the first bad byte at off.
func (f *Fault) failAt(off int64) error {
	if f.Err != nil {
		return f.Err
	}
	return &InjectedError{Off: off, Err: syscall.EIO}
}

// start returns where, inside an access at off, the faulted range begins.
func (f *Fault) start(off int64) int64 {
	if f.Len == 0 || f.Off <= off {
		return 0
	}
	return f.Off - off
}

// ReadAt reads from the wrapped device unless a fault says otherwise.
func (d *Faulty) ReadAt(p []byte, off int64) (int, error) {
	f := d.match(FaultRead, off, int64(len(p)))
	if f == nil {
		return d.dev.ReadAt(p, off)
	}
	f.wait()
	if !f.Fail {
		return d.dev.ReadAt(p, off)
	}
	good := f.start(off)
	n, err := d.dev.ReadAt(p[:good], off)
	if err != nil {
		return n, err
	}
	return n, f.failAt(off + good)
}

// WriteAt writes to the wrapped device unless a fault says otherwise.
func (d *Faulty) WriteAt(p []byte, off int64) (int, error) {
	f := d.match(FaultWrite, off, int64(len(p)))
	if f == nil {
		return d.dev.WriteAt(p, off)
	}
	f.wait()
	if !f.Fail {
		return d.dev.WriteAt(p, off)
	}
	good := f.start(off)
	if f.Torn {
		good = min(good+max(f.TearAt, 0), int64(len(p)))
	}
	n, err := d.dev.WriteAt(p[:good], off)
	if err != nil {
		return n, err
	}
	return n, f.failAt(off + good)
}

// Sync flushes the wrapped device unless a fault says otherwise.
func (d *Faulty) Sync() error {
	f := d.match(FaultSync, 0, 0)
	if f == nil {
		return d.dev.Sync()
	}
	f.wait()
	if f.Fail {
		if f.Err != nil {
			return f.Err
		}
		return &InjectedError{Off: -1, Err: syscall.EIO}
	}
	return d.dev.Sync()
}

// Size reports the wrapped device's size.
func (d *Faulty) Size() int64 { return d.dev.Size() }

// Close closes the wrapped device.
func (d *Faulty) Close() error { return d.dev.Close() }

// Unmap deallocates a range of the wrapped device, which must implement
// Unmapper. Write faults apply to it.
func (d *Faulty) Unmap(off, length int64) error {
	u, ok := d.dev.(Unmapper)
	if !ok {
		return ErrUnsupported
	}
	if f := d.match(FaultWrite, off, length); f != nil {
		f.wait()
		if f.Fail {
			return f.failAt(off + f.start(off))
		}
	}
	return u.Unmap(off, length)
}

// Allocation reports the wrapped device's allocation state, which must
// implement AllocationReporter.
func (d *Faulty) Allocation(off int64) (bool, int64, error) {
	r, ok := d.dev.(AllocationReporter)
	if !ok {
		return false, 0, ErrUnsupported
	}
	return r.Allocation(off)
}
