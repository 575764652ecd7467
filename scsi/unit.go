package scsi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

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
	// Serial is the unit serial number (VPD page 0x80, and the T10
	// vendor ID designator of page 0x83), at most 252 printable ASCII
	// characters, reported as given. Empty means NewSerial: random, so
	// every unit has its own. A unit keeps its identity only as long as
	// it lives: a product that serves the same storage again (after a
	// restart) saves Config().Serial and NAA and gives them back, as
	// mgmt does in its configuration.
	Serial string
	// NAA is the unit's NAA designator (VPD page 0x83), reported as
	// given: 8 bytes of type 5 (IEEE Registered) or 16 of type 6 (IEEE
	// Registered Extended); see CheckNAA. Nil means NewNAA: a random
	// type 6 designator, so every unit has its own.
	NAA []byte
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
	// Removable makes the medium removable (RMB in INQUIRY): PREVENT
	// ALLOW MEDIUM REMOVAL and START STOP UNIT with LOEJ eject and load
	// it, and while it is out media access fails with MEDIUM NOT PRESENT.
	Removable bool
	// Offline makes the unit answer every media access with NOT READY,
	// LOGICAL UNIT NOT READY, OFFLINE; INQUIRY and REPORT LUNS still work.
	Offline bool
	// Reservations, when set, keeps persistent reservations across
	// restarts for initiators that register with APTPL; without it APTPL
	// is refused (PTPL_C 0).
	Reservations StateStore
	// SharedReservations, when set, keeps the unit's persistent
	// reservations in a store that several units serving the same
	// medium share (the gateways of one RBD image): every PERSISTENT
	// RESERVE IN reads it, every PERSISTENT RESERVE OUT commits to it
	// with a compare-and-swap, and the store's change notifications keep
	// the copy the other commands are checked against current (see
	// SharedStateStore). The store is the persistence, so APTPL is
	// offered; Reservations must then be nil, and SPC-2 RESERVE and
	// RELEASE, which a shared store does not carry, are not offered.
	SharedReservations SharedStateStore
	// NoReservations withdraws SPC-2 RESERVE and RELEASE and the
	// PERSISTENT RESERVE commands (INVALID COMMAND OPERATION CODE, and
	// absent from REPORT SUPPORTED OPERATION CODES): for a unit whose
	// medium another gateway serves too with no shared store, where a
	// reservation would hold through this gateway only. Reservations and
	// SharedReservations must then be nil.
	NoReservations bool
	// ThirdPartyCopy offers EXTENDED COPY (LID1) and RECEIVE COPY RESULTS
	// between this unit and the other units of the target the command
	// came through that offer it too (VMware's XCOPY offload), with the
	// third-party copy VPD page.
	ThirdPartyCopy bool
	// CryptoErase offers SANITIZE CRYPTOGRAPHIC ERASE, which makes every
	// block unreadable by replacing the device's data key; the device
	// must implement backend.CryptoEraser (backend.Encrypted does).
	CryptoErase bool
	// SanitizeState, when set, records a SANITIZE from its start until it
	// completes, so that one cut short by a crash, a restart or a closed
	// unit goes on in the next unit on the same device (from the start,
	// reporting SANITIZE IN PROGRESS meanwhile), as a sanitize goes on
	// across a power cycle; one that failed leaves the next unit failed
	// (MEDIUM FORMAT CORRUPTED, SANITIZE COMMAND FAILED) until a SANITIZE
	// completes, or EXIT FAILURE MODE if it allowed that with AUSE.
	// Without it an interrupted sanitize is forgotten with its unit, and
	// the device serves what the sanitize left.
	SanitizeState StateStore
	// SanitizeRate caps the bytes per second a SANITIZE OVERWRITE writes,
	// so that a sanitize running in the background leaves the rest of
	// the storage's bandwidth to other units; 0 means no cap.
	SanitizeRate int64
	// Logger receives errors of work that outlives its command; nil
	// discards them.
	Logger *slog.Logger
	// MaxTransferLength is the most bytes one READ or WRITE may move,
	// advertised in the block limits VPD page so initiators split larger
	// I/O; 0 means DefaultMaxTransferLength. A transport learns it per
	// command from Target.MaxTransferLength and sizes its buffers by it.
	MaxTransferLength int
}

// DefaultMaxTransferLength is the per-command transfer limit a unit
// advertises unless configured otherwise.
const DefaultMaxTransferLength = 32 << 20

// Supported limits advertised in the block limits VPD page.
const (
	maxUnmapBlocks     = 1 << 20 // per UNMAP descriptor
	maxWriteSameBlocks = 1 << 23 // per WRITE SAME: 4 GiB of 512-byte blocks
	maxUnmapDescs      = 256
	maxCompareAndWrite = 255
)

// LogicalUnit is a SCSI block device (SBC-4 direct access device) backed by
// a backend.Device. It is safe for concurrent use: commands run in parallel,
// and only COMPARE AND WRITE excludes other writers.
type LogicalUnit struct {
	// dev, cfg and geometry change only in Reopen, while the gate holds
	// every command out and under mu.
	dev backend.Device
	cfg UnitConfig
	geometry
	// ctxDev is dev when it takes the command's context, else nil.
	ctxDev backend.ContextDevice

	// gate counts the commands in flight and holds new ones while the
	// unit is drained (Reopen, Close).
	gate gate
	// lifeMu serializes Close and reopens (held from PrepareReopen to
	// Commit or Abort).
	lifeMu sync.Mutex
	// attached counts the Targets the unit is attached to (Target.Close
	// closes a unit it leaves attached to none).
	attached atomic.Int32

	// buffers holds scratch space for compares and read-modify-writes.
	buffers bufpool.Pool
	// requests recycles the per-command request structs.
	requests sync.Pool

	// writeGate is held shared by every writer and exclusively by
	// COMPARE AND WRITE, which must be atomic against other writers, and
	// by CRYPTOGRAPHIC ERASE, which no write may straddle.
	writeGate sync.RWMutex

	mu      sync.Mutex
	mode    modeState
	saved   modeState
	stopped bool
	// nexuses holds the state of every I_T nexus that has talked to the
	// unit (pending unit attentions, medium removal prevention); a nexus
	// seen for the first time gets POWER ON OCCURRED.
	nexuses map[string]*nexusState
	// initiators holds the initiator devices (names) the unit has told
	// of its power on.
	initiators map[string]bool
	// pr is the persistent reservation state (SPC-4 §5.13): with a
	// shared store, the copy of its version prShared.version.
	pr prState
	// prShared is the state of a shared reservation store, nil without
	// one (shared.go).
	prShared *sharedPR
	// ejected is set while a removable medium is out (START STOP UNIT
	// with LOEJ); prevented counts nexuses preventing its removal.
	ejected bool
	// sanitizing is set while SANITIZE runs; sanitizeFailed after one
	// that did not complete, until EXIT FAILURE MODE or a good SANITIZE.
	sanitizing, sanitizeFailed bool
	// sanitizeAUSE is the AUSE bit of the last SANITIZE.
	sanitizeAUSE bool

	// portGroups are the unit's target port groups with their access
	// states, guarded by mu; aluaOn is set while there are any, and
	// explicitALUA while there are some and none is Remote.
	portGroups   []portGroupState
	aluaOn       atomic.Bool
	explicitALUA atomic.Bool
	// groupOfPort maps relative target ports to their group's ID, for
	// readers that take no lock; replaced whole by SetPortGroups.
	groupOfPort atomic.Pointer[map[uint16]uint16]

	// copies holds the results of EXTENDED COPY commands for RECEIVE
	// COPY RESULTS, oldest first, guarded by mu.
	copies []*copyRecord

	// life ends with Close; background holds work that outlives its
	// command (SANITIZE with IMMED), which Close waits for.
	life       context.Context
	endLife    context.CancelFunc
	background sync.WaitGroup

	telemetry unitTelemetry // counters and observer (stats.go)
}

// nexusState is what a unit keeps per I_T nexus.
type nexusState struct {
	// ua holds the pending unit attentions, oldest first.
	ua []*Sense
	// live is cleared when the nexus ends: unit attentions are
	// established only for nexuses that exist.
	live bool
	// prevent is set while the nexus prevents medium removal.
	prevent bool
	// aborts counts PREEMPT AND ABORTs that ended the nexus's tasks: a
	// command that sees it change while it runs completes with TASK
	// ABORTED.
	aborts atomic.Uint32
}

// modeState is the changeable part of the mode pages.
type modeState struct {
	wce    bool // caching page: write cache enable
	rcd    bool // caching page: read cache disable
	dsense bool // control page: descriptor format sense
	swp    bool // control page: software write protect
	tas    bool // control page: task aborted status
}

// ErrInvalidConfig matches (errors.Is) every *ConfigError: a UnitConfig
// that NewLogicalUnit refuses.
var ErrInvalidConfig = errors.New("scsi: invalid unit configuration")

// ConfigError is NewLogicalUnit's refusal of one UnitConfig field (or of
// the device, Field "device").
type ConfigError struct {
	Field string // the UnitConfig field at fault, or "device"
	Msg   string
}

func (e *ConfigError) Error() string { return "scsi: " + e.Field + ": " + e.Msg }

// Is matches ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// NewLogicalUnit wraps dev in a logical unit. The device's size is rounded
// down to whole blocks. The unit owns dev from here on: Close closes it.
// A configuration it refuses is a *ConfigError (errors.Is
// ErrInvalidConfig) naming the field.
func NewLogicalUnit(dev backend.Device, cfg UnitConfig) (*LogicalUnit, error) {
	if dev == nil {
		return nil, configErr("device", "nil device")
	}
	geo, err := newGeometry(dev, &cfg)
	if err != nil {
		return nil, err
	}
	lu := &LogicalUnit{
		dev:        dev,
		ctxDev:     contextDevice(dev),
		cfg:        cfg,
		geometry:   geo,
		gate:       newGate(),
		nexuses:    make(map[string]*nexusState),
		initiators: make(map[string]bool),
	}
	lu.mode = modeState{wce: cfg.WriteCache, tas: true}
	lu.saved = lu.mode
	if err := lu.loadPR(); err != nil {
		return nil, err
	}
	if err := lu.startSharedPR(); err != nil {
		return nil, err
	}
	lu.life, lu.endLife = context.WithCancel(context.Background())
	if err := lu.resumeSanitize(); err != nil {
		lu.endLife()
		lu.stopSharedPR()
		return nil, err
	}
	return lu, nil
}

// contextDevice returns dev as a backend.ContextDevice, or nil.
func contextDevice(dev backend.Device) backend.ContextDevice {
	cd, _ := dev.(backend.ContextDevice)
	return cd
}

// geometry is the shape of a unit's medium.
type geometry struct {
	blockSize  uint32
	blockShift uint
	nblocks    uint64
	physExp    uint8
	// compareBlocks is the MAXIMUM COMPARE AND WRITE LENGTH; 0 when the
	// device cannot compare and write a single block atomically.
	compareBlocks uint8
	// atomicSpan is, on a device whose writes are atomic for all its
	// clients only within a span (backend.AtomicSpanner), that span in
	// blocks: WRITE ATOMIC refuses a range crossing a multiple of it.
	// 0 on other devices.
	atomicSpan uint64
	// atomicCap bounds the MAXIMUM ATOMIC TRANSFER LENGTH by the device:
	// on an AtomicSpanner, the largest power of two dividing atomicSpan
	// (0 when no block fits the span), so that Linux's naturally aligned
	// power-of-two atomic writes never cross a span; unbounded otherwise.
	atomicCap uint32
}

// newGeometry checks cfg (filling in its defaults) against dev and
// returns the medium's shape.
func newGeometry(dev backend.Device, cfg *UnitConfig) (geometry, error) {
	if err := cfg.fillDefaults(); err != nil {
		return geometry{}, err
	}
	if err := cfg.checkDevice(dev); err != nil {
		return geometry{}, err
	}
	g := geometry{blockSize: cfg.BlockSize}
	for g.blockSize>>g.blockShift > 1 {
		g.blockShift++
	}
	for r := cfg.PhysicalBlockSize / cfg.BlockSize; r > 1; r >>= 1 {
		g.physExp++
	}
	g.nblocks = uint64(dev.Size()) >> g.blockShift
	g.compareBlocks = compareBlocks(dev, g.blockSize)
	g.atomicSpan, g.atomicCap = atomicSpan(dev, g.blockSize)
	if g.nblocks == 0 {
		return geometry{}, configErr("device", "%d bytes hold no %d-byte block", dev.Size(), cfg.BlockSize)
	}
	return g, nil
}

// compareBlocks is how many blocks of size one COMPARE AND WRITE may
// cover on dev. A device that compares and writes only within a span of
// its own (backend.CompareSpanner) is shared with other clients, so a
// range it refuses cannot be made atomic here: such a unit takes one
// block when every block lies within a span, and none otherwise.
func compareBlocks(dev backend.Device, size uint32) uint8 {
	s, ok := dev.(backend.CompareSpanner)
	if _, cw := dev.(backend.CompareWriter); !ok || !cw {
		return maxCompareAndWrite
	}
	if span := s.CompareAndWriteSpan(); span >= int64(size) && span%int64(size) == 0 {
		return 1
	}
	return 0
}

// atomicSpan returns the span in blocks of size within which dev's writes
// are atomic for all its clients and the largest power of two dividing it
// (capped at 1<<16, beyond WRITE ATOMIC(16)'s length field), or 0 and no
// bound for a device that is not a backend.AtomicSpanner. A span holding
// no whole number of blocks gives 0 and 0: no atomic write at all.
func atomicSpan(dev backend.Device, size uint32) (span uint64, limit uint32) {
	s, ok := dev.(backend.AtomicSpanner)
	if !ok {
		return 0, math.MaxUint32
	}
	bytes := s.AtomicWriteSpan()
	if bytes < int64(size) || bytes%int64(size) != 0 {
		return 0, 0
	}
	span = uint64(bytes) / uint64(size)
	return span, uint32(min(span&-span, 1<<16))
}

// fillDefaults checks the geometry and identity fields and fills in the
// defaults of those left zero.
func (cfg *UnitConfig) fillDefaults() error {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	switch cfg.BlockSize {
	case 512, 1024, 2048, 4096:
	default:
		return configErr("BlockSize", "%d is not 512, 1024, 2048 or 4096", cfg.BlockSize)
	}
	if cfg.PhysicalBlockSize == 0 {
		cfg.PhysicalBlockSize = cfg.BlockSize
	}
	ratio := cfg.PhysicalBlockSize / cfg.BlockSize
	if cfg.PhysicalBlockSize%cfg.BlockSize != 0 || ratio&(ratio-1) != 0 || ratio > 1<<15 {
		return configErr("PhysicalBlockSize", "%d is not a power-of-two multiple of block size %d", cfg.PhysicalBlockSize, cfg.BlockSize)
	}
	if cfg.Reservations != nil && cfg.SharedReservations != nil {
		return configErr("SharedReservations", "set with Reservations: a unit keeps its persistent reservations in one store")
	}
	if cfg.NoReservations && (cfg.Reservations != nil || cfg.SharedReservations != nil) {
		return configErr("NoReservations", "set with a reservation store")
	}
	cfg.Vendor = defaultString(cfg.Vendor, "ISCSIKIT")
	cfg.Product = defaultString(cfg.Product, "VIRTUAL-DISK")
	cfg.Revision = defaultString(cfg.Revision, "0001")
	if cfg.Serial == "" {
		cfg.Serial = NewSerial()
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"Vendor", cfg.Vendor, 8}, {"Product", cfg.Product, 16}, {"Revision", cfg.Revision, 4}, {"Serial", cfg.Serial, 252}} {
		if len(f.v) > f.max {
			return configErr(f.name, "%q is longer than %d characters", f.v, f.max)
		}
		for i := 0; i < len(f.v); i++ {
			if f.v[i] < 0x20 || f.v[i] > 0x7e {
				return configErr(f.name, "%q holds a character that is not printable ASCII", f.v)
			}
		}
	}
	if cfg.NAA == nil {
		cfg.NAA = NewNAA()
	} else if err := CheckNAA(cfg.NAA); err != nil {
		return configErr("NAA", "%v", err)
	}
	cfg.NAA = slices.Clone(cfg.NAA)
	if cfg.MaxTransferLength == 0 {
		cfg.MaxTransferLength = DefaultMaxTransferLength
	}
	if cfg.MaxTransferLength < int(cfg.BlockSize) || cfg.MaxTransferLength%int(cfg.BlockSize) != 0 {
		return configErr("MaxTransferLength", "%d is not a positive multiple of block size %d", cfg.MaxTransferLength, cfg.BlockSize)
	}
	if cfg.SanitizeRate < 0 {
		return configErr("SanitizeRate", "%d is negative", cfg.SanitizeRate)
	}
	return nil
}

// checkDevice checks that dev offers what the features cfg enables need.
func (cfg *UnitConfig) checkDevice(dev backend.Device) error {
	if cfg.ThinProvisioning {
		if _, ok := dev.(backend.Unmapper); !ok {
			return configErr("ThinProvisioning", "needs a device that can unmap (backend.Unmapper)")
		}
	}
	if cfg.CryptoErase {
		if _, ok := dev.(backend.CryptoEraser); !ok {
			return configErr("CryptoErase", "needs a device that can replace its data key (backend.CryptoEraser)")
		}
	}
	return nil
}

// localOUI is the company identifier of generated NAA designators: a
// locally administered (bit 1 of the first octet set) CID, as SPC-4
// permits for designators that need no IEEE registration.
const localOUI = 0x0A6B1C

// NewNAA returns a new random NAA IEEE Registered Extended designator
// (type 6, 16 bytes): the locally administered company ID 0A-6B-1C, then
// 100 random bits (the 36-bit vendor specific identifier and its 64-bit
// extension). Two units get the same one with odds of 2^-50 among 2^25
// units.
func NewNAA() []byte {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] = 0x60 | byte(localOUI>>20)&0x0f
	b[1], b[2] = byte(localOUI>>12&0xff), byte(localOUI>>4&0xff)
	b[3] = byte(localOUI<<4&0xf0) | b[3]&0x0f
	return b
}

// NewSerial returns a new random unit serial number: 16 hex digits (64
// random bits).
func NewSerial() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CheckNAA reports whether naa is an NAA designator a unit can report:
// 8 bytes of type 5 (IEEE Registered) or 16 bytes of type 6 (IEEE
// Registered Extended).
func CheckNAA(naa []byte) error {
	switch {
	case len(naa) == 8 && naa[0]>>4 == 5, len(naa) == 16 && naa[0]>>4 == 6:
		return nil
	case len(naa) != 8 && len(naa) != 16:
		return fmt.Errorf("%d bytes: an NAA designator has 8 (type 5) or 16 (type 6)", len(naa))
	}
	return fmt.Errorf("NAA type %d in %d bytes: only type 5 (8 bytes) and type 6 (16 bytes) are accepted", naa[0]>>4, len(naa))
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Config returns the unit's configuration (the one it was created or
// last reopened with), defaults filled in (the generated Serial and NAA
// among them).
func (lu *LogicalUnit) Config() UnitConfig {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	c := lu.cfg
	c.NAA = slices.Clone(c.NAA)
	return c
}

// maxTransferLength is the unit's MaxTransferLength, read under its lock
// since a reopen may change it.
func (lu *LogicalUnit) maxTransferLength() int {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.cfg.MaxTransferLength
}

// Blocks returns the capacity in logical blocks.
func (lu *LogicalUnit) Blocks() uint64 {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return lu.nblocks
}

// nexusKey is the key unit attentions and reservations use for an I_T
// nexus: the initiator port and the target port, named by the target
// device and its relative port identifier.
func nexusKey(n Nexus) string {
	return n.InitiatorPort + "\x00" + n.TargetName + "\x00" + strconv.Itoa(int(n.RelativePortID))
}

// addUA establishes a unit attention for every nexus known to the unit.
func (lu *LogicalUnit) addUA(s *Sense) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.addUALocked(s, "")
}

// addUAFor establishes a unit attention for the nexuses in keys that the
// unit knows.
func (lu *LogicalUnit) addUAFor(s *Sense, keys map[string]bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	for k := range keys {
		lu.queueUA(k, s)
	}
}

// addUALocked establishes a unit attention for every live nexus known to
// the unit but except. Called with lu.mu held.
func (lu *LogicalUnit) addUALocked(s *Sense, except string) {
	for k, ns := range lu.nexuses {
		if k != except && ns.live {
			lu.queueUA(k, s)
		}
	}
}

// queueUA establishes unit attention s for the nexus key if the unit
// knows it. A reset-class unit attention (ASC 0x29) supersedes everything
// pending; anything else queues behind what is pending, once. Called with
// lu.mu held.
func (lu *LogicalUnit) queueUA(key string, s *Sense) {
	ns := lu.nexuses[key]
	if ns == nil {
		return
	}
	q := ns.ua
	if s.ASC == 0x29 {
		q = q[:0]
	} else if len(q) > 0 && q[0].ASC == 0x29 {
		return // the reset already tells the initiator to rescan
	}
	for _, p := range q {
		if p.ASC == s.ASC && p.ASCQ == s.ASCQ {
			return
		}
	}
	ns.ua = append(q, s)
	lu.unitAttention(key, s)
}

// nexusLocked returns the state of the nexus key, registering a nexus it
// has not seen. The first nexus of each initiator device gets POWER ON
// OCCURRED; later ones (a second path, a session re-established after a
// cold reset) do not hear of a power on their initiator already knows
// of. Called with lu.mu held.
func (lu *LogicalUnit) nexusLocked(key string) *nexusState {
	ns := lu.nexuses[key]
	if ns == nil {
		ns = &nexusState{}
		name := initiatorOf(key)
		if !lu.initiators[name] {
			ns.ua = []*Sense{uaPowerOn}
			if len(lu.initiators) < maxRememberedNexuses {
				lu.initiators[name] = true
			}
		}
		lu.nexuses[key] = ns
	}
	ns.live = true
	return ns
}

// takeUALocked returns and, when consume is set, clears the oldest
// pending unit attention of the nexus. Called with lu.mu held.
func (lu *LogicalUnit) takeUALocked(key string, consume bool) *Sense {
	ns := lu.nexusLocked(key)
	if len(ns.ua) == 0 {
		return nil
	}
	s := ns.ua[0]
	if consume {
		ns.ua = ns.ua[1:]
	}
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
	// uaResvPreempted: RESERVATIONS PREEMPTED (PERSISTENT RESERVE OUT CLEAR).
	uaResvPreempted = newSense(SenseUnitAttention, 0x2a, 0x03)
	// uaRegsPreempted: REGISTRATIONS PREEMPTED.
	uaRegsPreempted = newSense(SenseUnitAttention, 0x2a, 0x05)
	uaLUNsChanged   = newSense(SenseUnitAttention, 0x3f, 0x0e)
	uaCapacity      = newSense(SenseUnitAttention, 0x2a, 0x09)
	// uaInquiryChanged: INQUIRY DATA HAS CHANGED.
	uaInquiryChanged = newSense(SenseUnitAttention, 0x3f, 0x03)
)

// reset performs a reset of the unit on behalf of the nexus issuer: mode
// pages back to their saved values, the SPC-2 reservation and every
// medium removal prevention released, the unit started, and ua
// established. Persistent reservations survive (SPC-4 §5.13.1).
//
// Who gets the unit attention: the issuer learns of the reset from the
// task management response, and like Linux tgt the unit spares it the
// condition while it is the unit's only live nexus, so a single-path
// initiator's next command succeeds. A LOGICAL UNIT RESET (target false)
// reaches every other live nexus, and then the issuer too, so a multipath
// initiator sees the same condition on every path (SAM-5 §6.3.3); with a
// shared store it always reaches the issuer, whose initiator may have
// paths through the other gateways (commitSharedReset tells those). A
// target reset (target true) is the issuing initiator's: its other
// nexuses get the condition, while other initiators learn of it from the
// TASK ABORTED status of the tasks it ended (TAS is set).
func (lu *LogicalUnit) reset(ua *Sense, issuer string, target bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.mode = lu.saved
	if lu.prShared == nil {
		lu.pr.spc2 = "" // with a shared store, releaseSharedSPC2 commits it
	}
	lu.stopped = false
	name := initiatorOf(issuer)
	var others []string
	for k, ns := range lu.nexuses {
		ns.prevent = false
		if k != issuer && ns.live && (!target || initiatorOf(k) == name) {
			others = append(others, k)
		}
	}
	if !target && (len(others) > 0 || lu.prShared != nil) {
		// With a shared store, the other gateways' nexuses hear of it
		// too (commitSharedReset): the issuer's initiator may have paths
		// through them.
		others = append(others, issuer)
	}
	for _, k := range others {
		lu.queueUA(k, ua)
	}
}

// initiatorOf returns the initiator device name of a nexus key: the
// initiator port name up to its ",i," separator (iSCSI port names are
// "<initiator name>,i,0x<ISID>").
func initiatorOf(key string) string {
	port, _, _ := strings.Cut(key, "\x00")
	name, _, _ := strings.Cut(port, ",i,")
	return name
}

// maxRememberedNexuses bounds how many ended nexuses a unit remembers as
// having seen it since power on; past it, a returning initiator port is
// told POWER ON OCCURRED again, which is always a safe thing to say.
const maxRememberedNexuses = 4096

// nexusLost forgets the state of a nexus that ended: its SPC-2
// reservation and medium removal prevention are released and its pending
// unit attentions dropped (conditions belong to the nexus they were
// established for). The initiator port stays known, so logging in again
// does not report a power on that did not happen. Persistent reservations
// and registrations survive the loss of their nexus.
func (lu *LogicalUnit) nexusLost(key string) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.pr.spc2 == key && lu.prShared == nil {
		lu.pr.spc2 = "" // with a shared store, releaseSharedSPC2 commits it
	}
	if ns := lu.nexuses[key]; ns != nil && len(lu.nexuses) <= maxRememberedNexuses {
		ns.ua, ns.live, ns.prevent = nil, false, false
	} else {
		delete(lu.nexuses, key)
	}
}

// execute runs one command against the unit: the unit-level half of
// Target.Execute, which routes by LUN and answers REPORT LUNS itself. It
// returns false, having done nothing, if the unit was closed before the
// command could start.
func (lu *LogicalUnit) execute(ctx context.Context, cmd *Command, key string, t *Target) (Result, bool) {
	if err := lu.gate.enter(ctx); err != nil {
		if errors.Is(err, ErrUnitClosed) {
			return Result{}, false
		}
		return Result{Status: StatusTaskAborted}, true
	}
	res := lu.run(ctx, cmd, key, t)
	lu.gate.leave()
	if lu.gate.forced.Load() {
		// The unit was closed under this command: whatever the closed
		// device made of it, the initiator retries it.
		return Result{Status: StatusBusy}, true
	}
	return res, true
}

// run is execute once the command is in. Its request comes from the
// unit's pool and goes back there: nothing keeps a request after its
// command.
func (lu *LogicalUnit) run(ctx context.Context, cmd *Command, key string, t *Target) Result {
	r, _ := lu.requests.Get().(*request)
	if r == nil {
		r = new(request)
	}
	*r = request{ctx: ctx, lu: lu, cmd: cmd, cdb: cmd.CDB, nexus: key, tgt: t}
	res := lu.handle(r)
	*r = request{}
	lu.requests.Put(r)
	return res
}

// handle runs a command's checks and its handler.
func (lu *LogicalUnit) handle(r *request) Result {
	if len(r.cdb) == 0 {
		return r.fail(errInvalidOpcode)
	}
	op, bad := lookupOpcode(r.cdb)
	if bad == nil && !lu.supported(op) {
		bad = lu.unsupported(op)
	}
	lu.mu.Lock()
	r.dsense = lu.mode.dsense
	lu.mu.Unlock()
	if bad != nil {
		return r.fail(bad)
	}
	if len(r.cdb) < op.cdbLen() {
		return r.fail(invalidField(len(r.cdb), -1))
	}
	if err := op.checkCDB(r.cdb); err != nil {
		return r.fail(err)
	}
	ns, epoch, err := lu.admit(r.nexus, r.cmd.Nexus.RelativePortID, op)
	if err != nil {
		return r.fail(err)
	}
	err = op.handler(r)
	if ns.aborts.Load() != epoch {
		// PREEMPT AND ABORT from another nexus ended this task while it
		// ran: whatever it did, it completes aborted (TAS is set).
		return Result{Status: StatusTaskAborted}
	}
	if err != nil {
		return r.fail(err)
	}
	return r.res
}

// admit runs the checks every command passes before its handler, in the
// order SAM-5 and SPC-4 give them precedence: a pending unit attention,
// the access state of the port's target port group, a reservation
// conflict, a unit that is not ready, write protection. It returns the
// nexus's state and its abort epoch as the command starts.
func (lu *LogicalUnit) admit(key string, port uint16, op *opcode) (*nexusState, uint32, error) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.nexusLocked(key)
	epoch := ns.aborts.Load()
	err := lu.admitLocked(key, port, op)
	return ns, epoch, err
}

func (lu *LogicalUnit) admitLocked(key string, port uint16, op *opcode) error {
	if op.flags&flagNoUA == 0 {
		if ua := lu.takeUALocked(key, true); ua != nil {
			return ua
		}
	}
	if len(lu.portGroups) > 0 {
		if s := lu.accessCheckLocked(port, op); s != nil {
			return s
		}
	}
	if lu.sanitizing && op.flags&flagNoUA == 0 {
		return errSanitizing
	}
	if op.flags&flagConflicts != 0 {
		if lu.pr.spc2 != "" && lu.pr.spc2 != key {
			return errReservationConflict
		}
		if lu.pr.conflicts(key, op.flags) {
			return errReservationConflict
		}
	}
	if op.flags&flagMedium != 0 {
		switch {
		case lu.cfg.Offline:
			return errNotReadyOffline
		case lu.ejected:
			return errMediumNotPresent
		case lu.stopped:
			return errNotReadyStopped
		case lu.sanitizeFailed && op.usage[0] != opSanitize:
			// A failed sanitize leaves the medium to a new SANITIZE
			// only (SBC-4 §4.11.4).
			return errSanitizeFailed
		}
	}
	if op.flags&flagWrite != 0 {
		switch {
		case lu.cfg.ReadOnly:
			return errWriteProtected
		case lu.mode.swp:
			return errSoftwareWriteProtected
		}
	}
	return nil
}

// clearUA drops a pending unit attention of the nexus.
func (lu *LogicalUnit) clearUA(key string, s *Sense) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.nexuses[key]
	if ns == nil {
		return
	}
	for i, p := range ns.ua {
		if p == s {
			ns.ua = append(ns.ua[:i:i], ns.ua[i+1:]...)
			return
		}
	}
}
