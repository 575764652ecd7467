package mgmt

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// Opener opens the extents of one type (Extent.Type). The Manager keeps a
// table of them, keyed by type, given in Options.Openers: FILE and DISK
// are there by default, and a product adds its own types (an RBD image, a
// volume of its own storage service) or replaces the defaults. Nothing is
// registered globally; two Managers in one process may open the same type
// differently.
type Opener interface {
	// Check validates what only this type knows about an extent: its
	// Params, and its Path or Disk if the type uses them. It runs with
	// every validation of a configuration, before anything is opened, so
	// a bad extent is refused at create or update time with the field
	// that is wrong. It returns nil, an *Error naming the field (Kind
	// KindInvalid when left zero; its Object, ID and Name are filled in
	// by the Manager), several joined with errors.Join, or any other
	// error, which is reported against the field "params".
	//
	// FILE and DISK extents also get the Manager's own checks of Path
	// and Disk (absolute, under Options.AllowedDirs, not shared by two
	// extents) whichever Opener serves them.
	Check(e Extent) error
	// Storage names where the extent's data lives ("rbd:pool/image", a
	// file path), or "" if it cannot tell. Two extents naming the same
	// storage are refused. An edit of a served extent that keeps its
	// storage opens the new device while the old one is still open (so
	// a backend must allow its storage to be opened twice for that
	// moment); the unit then syncs and closes the old device before any
	// command reaches the new one.
	Storage(e Extent) string
	// Open opens the extent's storage. The Manager closes the device
	// when the unit goes away.
	Open(e Extent) (backend.Device, error)
}

// VolumeMaker is implemented by an Opener whose extents can be the
// volumes of a pool (a Pool whose Type is the Opener's extent type):
// CreateVolume has it make each volume in its storage, DestroyVolume has
// it delete it, so a volume call (targetd's vol_create) makes a volume in
// that storage rather than a file.
type VolumeMaker interface {
	// MakeVolume completes e, the new volume's extent (its Type, Name,
	// Filesize and Params copied from the pool already set; Params never
	// nil, so the maker may add to it), with what
	// the storage needs (an RBD image's name in Params), and creates
	// the storage of e.Filesize bytes. It fails if that storage exists.
	MakeVolume(p Pool, e *Extent) error
	// DeleteVolume deletes the storage of a volume's extent and its data.
	DeleteVolume(e Extent) error
}

// PoolSizer is implemented by a VolumeMaker that can tell how much space
// its storage has, so Manager.Pools reports the size and free space of
// its pools (an RBD pool's from Ceph) rather than zeroes.
type PoolSizer interface {
	// PoolSpace returns the size in bytes of the storage pool p makes its
	// volumes in, and the bytes still free there.
	PoolSpace(p Pool) (size, free int64, err error)
}

// maker returns the VolumeMaker of the pool type typ, or nil.
func (t openers) maker(typ string) VolumeMaker {
	vm, _ := t[typ].(VolumeMaker)
	return vm
}

// ReservationSharer is implemented by an Opener whose storage several
// gateways export at once (an RBD image in Ceph): it gives each unit of
// its extents a store of persistent reservations that all of them share
// (scsi.UnitConfig.SharedReservations), so a PERSISTENT RESERVE OUT
// through one gateway holds on the others. Extents of other types keep
// their reservations in the Manager's own files (Options.ReservationDir),
// which only the one process sees.
type ReservationSharer interface {
	// ReservationStore returns the shared store of the extent whose
	// device Open returned (dev as Open returned it, before any
	// encryption). The store is the device's: it stays valid until the
	// device is closed.
	ReservationStore(e Extent, dev backend.Device) (scsi.SharedStateStore, error)
}

// sharer returns the ReservationSharer of the extent type typ, or nil.
func (t openers) sharer(typ string) ReservationSharer {
	rs, _ := t[typ].(ReservationSharer)
	return rs
}

// DefaultOpeners returns the openers a Manager uses when
// Options.Openers leaves a type out: FILE (a regular file, created sparse
// of Filesize when missing) and DISK (a block device).
func DefaultOpeners() map[string]Opener {
	return map[string]Opener{ExtentFile: FileOpener{}, ExtentDisk: DiskOpener{}}
}

// FileOpener opens FILE extents with backend.OpenFile, creating the file
// sparse of Filesize if it is missing.
type FileOpener struct{}

// Check refuses Params, which a FILE extent does not take; its Path is
// checked by the Manager.
func (FileOpener) Check(e Extent) error { return noParams(e) }

// Storage is the extent's file path.
func (FileOpener) Storage(e Extent) string { return e.devicePath() }

// Open opens (and if missing creates) the extent's file.
func (FileOpener) Open(e Extent) (backend.Device, error) {
	if e.RO {
		// A read-only extent over a missing file gets it created
		// (empty, sparse) first, then opened read-only.
		if _, err := os.Stat(e.Path); errors.Is(err, fs.ErrNotExist) {
			f, err := backend.OpenFile(e.Path, backend.FileOptions{Size: e.Filesize, Create: true})
			if err != nil {
				return nil, err
			}
			f.Close()
		}
	}
	return backend.OpenFile(e.Path, backend.FileOptions{Size: e.Filesize, Create: !e.RO, ReadOnly: e.RO, Direct: e.Direct})
}

// DiskOpener opens DISK extents: the block device DiskPath(e.Disk).
type DiskOpener struct{}

// Check refuses Params, which a DISK extent does not take; its Disk is
// checked by the Manager.
func (DiskOpener) Check(e Extent) error { return noParams(e) }

// Storage is the extent's device path.
func (DiskOpener) Storage(e Extent) string { return e.devicePath() }

// Open opens the extent's block device.
func (DiskOpener) Open(e Extent) (backend.Device, error) {
	return backend.OpenFile(DiskPath(e.Disk), backend.FileOptions{Size: e.Filesize, ReadOnly: e.RO, Direct: e.Direct})
}

func noParams(e Extent) error {
	if len(e.Params) > 0 {
		return &Error{Kind: KindInvalid, Field: "params", Msg: fmt.Sprintf("a %s extent takes no params", e.Type)}
	}
	return nil
}

// openers is a Manager's table: the defaults under what Options gave.
type openers map[string]Opener

func newOpeners(given map[string]Opener) openers {
	t := openers(DefaultOpeners())
	for typ, o := range given {
		if o != nil {
			t[typ] = o
		}
	}
	return t
}

// types lists the table's types, sorted, for error messages.
func (t openers) types() string { return strings.Join(slices.Sorted(maps.Keys(t)), ", ") }

// storage is where e's data lives, by its type's Opener; "" for unknown
// types.
func (t openers) storage(e Extent) string {
	if o := t[e.Type]; o != nil {
		return o.Storage(e)
	}
	return ""
}

// open opens e's storage through its type's Opener.
func (t openers) open(e Extent) (backend.Device, error) {
	o := t[e.Type]
	if o == nil {
		return nil, &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "type", Msg: fmt.Sprintf("%q is not one of %s", e.Type, t.types())}
	}
	return o.Open(e)
}

// check runs e's Opener's Check and returns its findings as *Error values
// about extent e.
func (t openers) check(e Extent) []error {
	o := t[e.Type]
	if o == nil {
		return nil
	}
	err := o.Check(e)
	if err == nil {
		return nil
	}
	var found []error
	var walk func(err error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var me *Error
		if errors.As(err, &me) {
			c := *me
			if c.Kind == 0 {
				c.Kind = KindInvalid
			}
			c.Object, c.ID, c.Name = "extent", e.ID, e.Name
			found = append(found, &c)
			return
		}
		found = append(found, &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "params", Msg: err.Error()})
	}
	walk(err)
	return found
}
