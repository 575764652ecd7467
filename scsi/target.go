package scsi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Target is a SCSI target device: the set of logical units one iSCSI
// target (or any other transport's target) exposes, addressed by LUN. It
// answers REPORT LUNS, routes every other command to its unit, and answers
// for LUNs that have no unit. It is safe for concurrent use, and units can
// be attached and detached while commands run.
type Target struct {
	mu     sync.RWMutex
	units  map[uint16]*LogicalUnit
	closed bool

	// seen holds the keys of the nexuses that sent commands through this
	// target: a change of its LUN inventory is theirs to hear about, not
	// that of other targets (or per-initiator views) sharing a unit.
	// Past maxRememberedNexuses it stops growing and overflow is set,
	// and every nexus of the units hears about changes. Commands only
	// read it once their nexus is in.
	seenMu   sync.RWMutex
	seen     map[string]bool
	overflow bool
	// keys holds the nexus key of every nexus in seen, so that a command
	// finds its key without building it.
	keys map[Nexus]string
}

// NewTarget returns a target without logical units.
func NewTarget() *Target {
	return &Target{units: make(map[uint16]*LogicalUnit), seen: make(map[string]bool), keys: make(map[Nexus]string)}
}

// saw records that nexus n sent a command through the target, and
// returns its key.
func (t *Target) saw(n Nexus) string {
	t.seenMu.RLock()
	key, known := t.keys[n]
	overflow := t.overflow
	t.seenMu.RUnlock()
	if known {
		return key
	}
	key = nexusKey(n)
	if overflow {
		return key
	}
	t.seenMu.Lock()
	if !t.seen[key] {
		if len(t.seen) < maxRememberedNexuses {
			t.seen[key] = true
			t.keys[n] = key
		} else {
			t.overflow = true
		}
	}
	t.seenMu.Unlock()
	return key
}

// ErrLUNInUse is returned by Attach for a LUN that already has a unit.
var ErrLUNInUse = errors.New("scsi: LUN already attached")

// ErrTargetClosed is returned by Attach to a closed Target.
var ErrTargetClosed = errors.New("scsi: target closed")

// ErrNoLUN is returned for a LUN that has no unit.
var ErrNoLUN = errors.New("scsi: no logical unit at that LUN")

// Attach makes lu available as lun. Every nexus that talks to the target's
// other units is told REPORTED LUNS DATA HAS CHANGED.
func (t *Target) Attach(lun uint16, lu *LogicalUnit) error {
	if lun > MaxLUN {
		return fmt.Errorf("scsi: LUN %d is beyond %d", lun, MaxLUN)
	}
	if lu == nil {
		return errors.New("scsi: nil logical unit")
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrTargetClosed
	}
	if _, ok := t.units[lun]; ok {
		t.mu.Unlock()
		return fmt.Errorf("%w: %d", ErrLUNInUse, lun)
	}
	t.units[lun] = lu
	lu.attached.Add(1)
	t.mu.Unlock()
	t.lunsChanged(lu)
	return nil
}

// Detach removes the unit at lun and returns it. Commands already in the
// unit run to their end; later ones for lun get LOGICAL UNIT NOT
// SUPPORTED. The unit stays open: the caller closes it (Close drains its
// commands in flight) unless it attaches it elsewhere.
func (t *Target) Detach(lun uint16) (*LogicalUnit, error) {
	t.mu.Lock()
	lu, ok := t.units[lun]
	delete(t.units, lun)
	if ok {
		lu.attached.Add(-1)
	}
	t.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrNoLUN, lun)
	}
	t.lunsChanged(nil)
	return lu, nil
}

// Close detaches every unit and refuses later Attach calls
// (ErrTargetClosed); commands for the target then get LOGICAL UNIT NOT
// SUPPORTED. A unit is counted in every Target it is attached to, and
// Close closes (draining, see LogicalUnit.Close) each unit that it left
// attached to no Target; units still attached elsewhere stay open. It
// returns the errors of those Close calls, joined.
func (t *Target) Close() error {
	t.mu.Lock()
	t.closed = true
	units := t.units
	t.units = make(map[uint16]*LogicalUnit)
	var orphans []*LogicalUnit
	for _, lu := range units {
		if lu.attached.Add(-1) == 0 {
			orphans = append(orphans, lu)
		}
	}
	t.mu.Unlock()
	var errs []error
	for _, lu := range orphans {
		if err := lu.Close(); err != nil && !errors.Is(err, ErrUnitClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// lunsChanged raises REPORTED LUNS DATA HAS CHANGED on every unit but
// except, for the nexuses that use this target.
func (t *Target) lunsChanged(except *LogicalUnit) {
	t.seenMu.Lock()
	keys, all := maps.Clone(t.seen), t.overflow
	t.seenMu.Unlock()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, lu := range t.units {
		switch {
		case lu == except:
		case all:
			lu.addUA(uaLUNsChanged)
		default:
			lu.addUAFor(uaLUNsChanged, keys)
		}
	}
}

// LUNs returns the attached LUNs in ascending order.
func (t *Target) LUNs() []uint16 {
	t.mu.RLock()
	luns := make([]uint16, 0, len(t.units))
	for l := range t.units {
		luns = append(luns, l)
	}
	t.mu.RUnlock()
	slices.Sort(luns)
	return luns
}

// Unit returns the unit at lun, or nil.
func (t *Target) Unit(lun uint16) *LogicalUnit {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.units[lun]
}

// unitAt returns the unit a wire LUN addresses, or nil.
func (t *Target) unitAt(raw uint64) *LogicalUnit {
	lun, ok := DecodeLUN(raw)
	if !ok {
		return nil
	}
	return t.Unit(lun)
}

// Execute runs cmd and returns its outcome. It never panics on malformed
// input: every CDB error becomes CHECK CONDITION with sense data saying
// which field is wrong. Commands for different or the same units may run
// concurrently; ordering by task attribute is the transport's job.
func (t *Target) Execute(ctx context.Context, cmd *Command) Result {
	key := t.saw(cmd.Nexus)
	if len(cmd.CDB) > 0 && cmd.CDB[0] == 0xa0 {
		return t.reportLUNs(cmd)
	}
	// A command that meets a unit closed before it could start is routed
	// again: a unit replaced at its LUN serves it.
	for lu, tried := t.unitAt(cmd.LUN), (*LogicalUnit)(nil); lu != nil && lu != tried; lu, tried = t.unitAt(cmd.LUN), lu {
		if res, ok := lu.executeCounted(ctx, cmd, key, t); ok {
			return res
		}
	}
	return t.noUnit(cmd)
}

// noUnit answers a command addressed to a LUN without a unit (SPC-4
// §4.6.5): INQUIRY reports no device, REQUEST SENSE reports why, and the
// rest fail with LOGICAL UNIT NOT SUPPORTED.
func (t *Target) noUnit(cmd *Command) Result {
	r := &request{cmd: cmd, cdb: cmd.CDB}
	switch {
	case len(cmd.CDB) >= 6 && cmd.CDB[0] == 0x12 && cmd.CDB[1]&0x01 == 0 && cmd.CDB[2] == 0:
		r.sendData(standardInquiryData(0x7f, "ISCSIKIT", "NO-UNIT", "0001"), int(be16(cmd.CDB[3:5])))
		return r.res
	case len(cmd.CDB) >= 6 && cmd.CDB[0] == 0x03:
		r.sendData(errLUNNotSupported.Encode(cmd.CDB[1]&0x01 != 0), int(cmd.CDB[4]))
		return r.res
	}
	return r.fail(errLUNNotSupported)
}

// reportLUNs answers REPORT LUNS (SPC-4 §6.33) and clears REPORTED LUNS
// DATA HAS CHANGED for the nexus.
func (t *Target) reportLUNs(cmd *Command) Result {
	r := &request{cmd: cmd, cdb: cmd.CDB}
	if len(r.cdb) < 12 {
		return r.fail(invalidField(len(r.cdb), -1))
	}
	for _, o := range opcodeIndex[0xa0] {
		if s := o.checkCDB(r.cdb); s != nil {
			return r.fail(s)
		}
	}
	sel := r.cdb[2]
	alloc := int(be32(r.cdb[6:10]))
	if alloc < 16 {
		// SPC-4: an allocation length below 16 is an error.
		return r.fail(invalidField(6, -1))
	}
	var luns []uint16
	switch sel {
	case 0x00, 0x02: // all logical units (there are no well-known ones)
		luns = t.LUNs()
	case 0x01: // well-known logical units only
	case 0x10, 0x11, 0x12: // administrative / subsidiary: none
	default:
		return r.fail(invalidField(2, -1))
	}
	out := make([]byte, 8+8*len(luns))
	binary.BigEndian.PutUint32(out[0:4], uint32(8*len(luns)))
	for i, l := range luns {
		binary.BigEndian.PutUint64(out[8+8*i:], EncodeLUN(l))
	}
	r.sendData(out, alloc)
	key := nexusKey(cmd.Nexus)
	t.mu.RLock()
	for _, lu := range t.units {
		lu.clearUA(key, uaLUNsChanged)
	}
	t.mu.RUnlock()
	return r.res
}
