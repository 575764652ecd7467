package scsi

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/bufpool"
)

// UnitConfig describes a logical unit: its geometry, identity and the
// features it offers. The zero value of every field is a sensible default.
type UnitConfig struct {
	// BlockSize is the logical block size in bytes: 512, 1024, 2048 or
	// 4096 (0 means 512).
	BlockSize uint32
	// PhysicalBlockSize is the physical block size reported in READ
	// CAPACITY (16): a power-of-two multiple of BlockSize (0 means
	// BlockSize).
	PhysicalBlockSize uint32
	// Vendor (8 characters), Product (16) and Revision (4) are the INQUIRY
	// identification strings; defaults "ISCSIKIT", "VIRTUAL-DISK", "0001".
	Vendor, Product, Revision string
	// Serial is the unit serial number (VPD page 0x80), at most 252
	// printable ASCII characters. Empty means derived from DeviceID.
	Serial string
	// DeviceID is the 60-bit vendor-specific part of the NAA IEEE
	// Registered designator (VPD page 0x83). Zero means derived from Serial.
	DeviceID uint64
	// ReadOnly makes every write fail with DATA PROTECT, WRITE PROTECTED.
	ReadOnly bool
	// WriteCache is the initial state of the WCE bit of the caching mode
	// page: writes are acknowledged before they are durable and SYNCHRONIZE
	// CACHE or FUA make them so. Without it every write is synced.
	WriteCache bool
	// RotationRate is the MEDIUM ROTATION RATE of VPD page 0xB1: 0 not
	// reported, 1 non-rotating (solid state), otherwise RPM.
	RotationRate uint16
	// ThinProvisioning enables UNMAP, WRITE SAME with UNMAP and GET LBA
	// STATUS; the device must implement backend.Unmapper.
	ThinProvisioning bool
	// MaxTransferLength is the most bytes one READ or WRITE may move,
	// advertised in the block limits VPD page so initiators split larger
	// I/O; 0 means DefaultMaxTransferLength. A transport must accept
	// commands of this size (iscsi.Options.MaxIOSize).
	MaxTransferLength int
}

// DefaultMaxTransferLength is the per-command transfer limit a unit
// advertises unless configured otherwise.
const DefaultMaxTransferLength = 32 << 20

// Supported limits advertised in the block limits VPD page.
const (
	maxUnmapBlocks     = 1 << 20 // per UNMAP descriptor and WRITE SAME
	maxUnmapDescs      = 256
	maxCompareAndWrite = 255
)

// LogicalUnit is a SCSI block device (SBC-4 direct access device) backed by
// a backend.Device. It is safe for concurrent use: commands run in parallel,
// and only COMPARE AND WRITE excludes other writers.
type LogicalUnit struct {
	dev        backend.Device
	cfg        UnitConfig
	blockSize  uint32
	blockShift uint
	nblocks    uint64
	physExp    uint8
	naa        [8]byte

	// buffers holds scratch space for compares and read-modify-writes.
	buffers bufpool.Pool

	// writeGate is held shared by every writer and exclusively by
	// COMPARE AND WRITE, which must be atomic against other writers.
	writeGate sync.RWMutex

	mu      sync.Mutex
	mode    modeState
	saved   modeState
	stopped bool
	// ua holds the pending unit attentions of every I_T nexus that has
	// talked to the unit; a nexus seen for the first time gets POWER ON.
	ua map[string][]*Sense
	// reservedBy is the nexus key holding an SPC-2 reservation, or "".
	reservedBy string
}

// modeState is the changeable part of the mode pages.
type modeState struct {
	wce    bool // caching page: write cache enable
	rcd    bool // caching page: read cache disable
	dsense bool // control page: descriptor format sense
	swp    bool // control page: software write protect
	tas    bool // control page: task aborted status
}

// NewLogicalUnit wraps dev in a logical unit. The device's size is rounded
// down to whole blocks. The unit owns dev from here on: Close closes it.
func NewLogicalUnit(dev backend.Device, cfg UnitConfig) (*LogicalUnit, error) {
	if dev == nil {
		return nil, errors.New("scsi: nil device")
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	switch cfg.BlockSize {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("scsi: block size %d is not 512, 1024, 2048 or 4096", cfg.BlockSize)
	}
	if cfg.PhysicalBlockSize == 0 {
		cfg.PhysicalBlockSize = cfg.BlockSize
	}
	ratio := cfg.PhysicalBlockSize / cfg.BlockSize
	if cfg.PhysicalBlockSize%cfg.BlockSize != 0 || ratio&(ratio-1) != 0 || ratio > 1<<15 {
		return nil, fmt.Errorf("scsi: physical block size %d is not a power-of-two multiple of block size %d", cfg.PhysicalBlockSize, cfg.BlockSize)
	}
	cfg.Vendor = defaultString(cfg.Vendor, "ISCSIKIT")
	cfg.Product = defaultString(cfg.Product, "VIRTUAL-DISK")
	cfg.Revision = defaultString(cfg.Revision, "0001")
	for _, f := range []struct {
		name, v string
		max     int
	}{{"vendor", cfg.Vendor, 8}, {"product", cfg.Product, 16}, {"revision", cfg.Revision, 4}, {"serial", cfg.Serial, 252}} {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("scsi: %s %q is longer than %d characters", f.name, f.v, f.max)
		}
		for i := 0; i < len(f.v); i++ {
			if f.v[i] < 0x20 || f.v[i] > 0x7e {
				return nil, fmt.Errorf("scsi: %s %q holds a character that is not printable ASCII", f.name, f.v)
			}
		}
	}
	if cfg.MaxTransferLength == 0 {
		cfg.MaxTransferLength = DefaultMaxTransferLength
	}
	if cfg.MaxTransferLength < int(cfg.BlockSize) || cfg.MaxTransferLength%int(cfg.BlockSize) != 0 {
		return nil, fmt.Errorf("scsi: maximum transfer length %d is not a positive multiple of block size %d", cfg.MaxTransferLength, cfg.BlockSize)
	}
	if cfg.ThinProvisioning {
		if _, ok := dev.(backend.Unmapper); !ok {
			return nil, errors.New("scsi: thin provisioning needs a device that can unmap")
		}
	}
	if cfg.DeviceID == 0 {
		h := fnv.New64a()
		h.Write([]byte(cfg.Serial))
		cfg.DeviceID = h.Sum64()
	}
	if cfg.Serial == "" {
		cfg.Serial = fmt.Sprintf("%016x", cfg.DeviceID)
	}
	lu := &LogicalUnit{
		dev:       dev,
		cfg:       cfg,
		blockSize: cfg.BlockSize,
		ua:        make(map[string][]*Sense),
	}
	for lu.blockSize>>lu.blockShift > 1 {
		lu.blockShift++
	}
	for r := ratio; r > 1; r >>= 1 {
		lu.physExp++
	}
	lu.nblocks = uint64(dev.Size()) >> lu.blockShift
	if lu.nblocks == 0 {
		return nil, fmt.Errorf("scsi: device of %d bytes holds no %d-byte block", dev.Size(), cfg.BlockSize)
	}
	// NAA 5 (IEEE Registered): 4-bit NAA, 24-bit company ID, then the
	// low 36 bits of DeviceID as the vendor specific identifier.
	v, oui := cfg.DeviceID&(1<<36-1), uint32(localOUI)
	lu.naa = [8]byte{
		0x50 | byte(oui>>20)&0x0f, byte(oui >> 12), byte(oui >> 4),
		byte(oui<<4) | byte(v>>32)&0x0f,
		byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v),
	}
	lu.mode = modeState{wce: cfg.WriteCache, tas: true}
	lu.saved = lu.mode
	return lu, nil
}

// localOUI is the company identifier used in NAA designators: a locally
// administered (bit 1 of the first octet set) CID, as SPC-4 permits for
// designators that need no IEEE registration.
const localOUI = 0x0A6B1C

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Config returns the configuration the unit was created with, defaults
// filled in.
func (lu *LogicalUnit) Config() UnitConfig { return lu.cfg }

// Blocks returns the capacity in logical blocks.
func (lu *LogicalUnit) Blocks() uint64 { return lu.nblocks }

// Close closes the backing device.
func (lu *LogicalUnit) Close() error { return lu.dev.Close() }

// nexusKey is the key unit attentions and reservations use for an I_T nexus.
func nexusKey(n Nexus) string { return n.InitiatorPort + "\x00" + n.TargetPort }

// addUA establishes a unit attention for every nexus known to the unit.
func (lu *LogicalUnit) addUA(s *Sense) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.addUALocked(s, "")
}

// addUALocked establishes a unit attention for every nexus known to the
// unit but except. A reset-class unit attention (ASC 0x29) supersedes
// everything pending; anything else queues behind what is pending, once.
// Called with lu.mu held.
func (lu *LogicalUnit) addUALocked(s *Sense, except string) {
	for k, q := range lu.ua {
		if k == except {
			continue
		}
		if s.ASC == 0x29 {
			q = q[:0]
		} else if len(q) > 0 && q[0].ASC == 0x29 {
			continue // the reset already tells the initiator to rescan
		}
		dup := false
		for _, p := range q {
			if p.ASC == s.ASC && p.ASCQ == s.ASCQ {
				dup = true
			}
		}
		if !dup {
			q = append(q, s)
		}
		lu.ua[k] = q
	}
}

// takeUA returns and clears the oldest pending unit attention of the
// nexus, registering a nexus it has not seen with POWER ON OCCURRED.
func (lu *LogicalUnit) takeUA(key string, consume bool) *Sense {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	q, seen := lu.ua[key]
	if !seen {
		q = []*Sense{uaPowerOn}
	}
	if len(q) == 0 {
		return nil
	}
	s := q[0]
	if consume {
		q = q[1:]
	}
	lu.ua[key] = q
	return s
}

// Unit attention conditions (SPC-4 Annex D).
var (
	uaPowerOn     = newSense(SenseUnitAttention, 0x29, 0x00)
	uaColdReset   = newSense(SenseUnitAttention, 0x29, 0x01)
	uaWarmReset   = newSense(SenseUnitAttention, 0x29, 0x02)
	uaLUReset     = newSense(SenseUnitAttention, 0x29, 0x03)
	uaModeChanged = newSense(SenseUnitAttention, 0x2a, 0x01)
	uaResvRelease = newSense(SenseUnitAttention, 0x2a, 0x04)
	uaLUNsChanged = newSense(SenseUnitAttention, 0x3f, 0x0e)
	uaCapacity    = newSense(SenseUnitAttention, 0x2a, 0x09)
)

// reset performs a logical unit reset: mode pages back to their saved
// values, the SPC-2 reservation released, the unit started, and ua
// established for every nexus but the issuer's, which learns of the reset
// from its task management response (as Linux tgt and libiscsi expect).
func (lu *LogicalUnit) reset(ua *Sense, issuer string) {
	lu.mu.Lock()
	lu.mode = lu.saved
	lu.reservedBy = ""
	lu.stopped = false
	lu.addUALocked(ua, issuer)
	lu.mu.Unlock()
}

// maxRememberedNexuses bounds how many ended nexuses a unit remembers as
// having seen it since power on; past it, a returning initiator port is
// told POWER ON OCCURRED again, which is always a safe thing to say.
const maxRememberedNexuses = 4096

// nexusLost forgets the state of a nexus that ended: its reservation is
// released and its pending unit attentions dropped (conditions belong to
// the nexus they were established for). The initiator port stays known,
// so logging in again does not report a power on that did not happen.
func (lu *LogicalUnit) nexusLost(key string) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.reservedBy == key {
		lu.reservedBy = ""
	}
	if _, known := lu.ua[key]; known && len(lu.ua) <= maxRememberedNexuses {
		lu.ua[key] = nil
	} else {
		delete(lu.ua, key)
	}
}

// execute runs one command against the unit: the unit-level half of
// Target.Execute, which routes by LUN and answers REPORT LUNS itself.
func (lu *LogicalUnit) execute(ctx context.Context, cmd *Command) Result {
	r := &request{ctx: ctx, lu: lu, cmd: cmd, cdb: cmd.CDB, nexus: nexusKey(cmd.Nexus)}
	lu.mu.Lock()
	r.dsense = lu.mode.dsense
	lu.mu.Unlock()
	if len(r.cdb) == 0 {
		return r.fail(errInvalidOpcode)
	}
	op, bad := lookupOpcode(r.cdb)
	if bad != nil {
		return r.fail(bad)
	}
	if !lu.supported(op) {
		return r.fail(errInvalidOpcode)
	}
	if len(r.cdb) < op.cdbLen() {
		return r.fail(invalidField(len(r.cdb), -1))
	}
	if err := op.checkCDB(r.cdb); err != nil {
		return r.fail(err)
	}
	if op.flags&flagNoUA == 0 {
		if ua := lu.takeUA(r.nexus, true); ua != nil {
			return r.fail(ua)
		}
	} else {
		lu.takeUA(r.nexus, false) // registers the nexus
	}
	if op.flags&flagConflicts != 0 && lu.reservationConflict(r.nexus) {
		return Result{Status: StatusReservationConflict}
	}
	if op.flags&flagWrite != 0 && lu.cfg.ReadOnly {
		return r.fail(errWriteProtected)
	}
	if op.flags&flagMedium != 0 {
		lu.mu.Lock()
		stopped := lu.stopped
		lu.mu.Unlock()
		if stopped {
			return r.fail(errNotReadyStopped)
		}
	}
	if err := op.handler(r); err != nil {
		return r.fail(err)
	}
	return r.res
}

// reservationConflict reports whether another nexus holds an SPC-2
// reservation.
func (lu *LogicalUnit) reservationConflict(key string) bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.reservedBy != "" && lu.reservedBy != key
}

// clearUA drops a pending unit attention of the nexus.
func (lu *LogicalUnit) clearUA(key string, s *Sense) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	q := lu.ua[key]
	for i, p := range q {
		if p == s {
			lu.ua[key] = append(q[:i:i], q[i+1:]...)
			return
		}
	}
}
