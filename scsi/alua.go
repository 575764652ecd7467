package scsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// AccessState is the asymmetric access state of a target port group for
// a logical unit (SPC-4 §5.15.2).
type AccessState uint8

// Asymmetric access states, with the codes REPORT TARGET PORT GROUPS
// reports them by.
const (
	// AccessActiveOptimized serves every command at full speed.
	AccessActiveOptimized AccessState = 0x0
	// AccessActiveNonOptimized serves every command, more slowly (the
	// path an initiator uses when no optimized one is left).
	AccessActiveNonOptimized AccessState = 0x1
	// AccessStandby serves only the commands that describe the unit and
	// manage access to it; the rest fail with NOT READY, LOGICAL UNIT NOT
	// ACCESSIBLE, TARGET PORT IN STANDBY STATE (04/0B).
	AccessStandby AccessState = 0x2
	// AccessUnavailable serves INQUIRY, REPORT LUNS, REQUEST SENSE and
	// the target port group commands; the rest fail with 04/0C.
	AccessUnavailable AccessState = 0x3
	// AccessTransitioning is a group on its way between states: INQUIRY,
	// REPORT LUNS, REQUEST SENSE and REPORT TARGET PORT GROUPS are served,
	// the rest fail with 04/0A. It cannot be asked for with SET TARGET
	// PORT GROUPS.
	AccessTransitioning AccessState = 0xf
)

// String names the state as SPC-4 does.
func (s AccessState) String() string {
	switch s {
	case AccessActiveOptimized:
		return "active/optimized"
	case AccessActiveNonOptimized:
		return "active/non-optimized"
	case AccessStandby:
		return "standby"
	case AccessUnavailable:
		return "unavailable"
	case AccessTransitioning:
		return "transitioning"
	}
	return fmt.Sprintf("access state 0x%x", uint8(s))
}

// valid reports whether the unit implements the state.
func (s AccessState) valid() bool {
	switch s {
	case AccessActiveOptimized, AccessActiveNonOptimized, AccessStandby, AccessUnavailable, AccessTransitioning:
		return true
	}
	return false
}

// PortGroup is a target port group (SPC-4 §5.15.2.1): the relative
// target ports (Nexus.RelativePortID) that share an access state for a
// logical unit. An iSCSI transport makes each target portal group one
// port group of one port, both numbered by the portal group tag.
type PortGroup struct {
	// ID is the target port group identifier.
	ID uint16
	// Ports are the relative target port identifiers in the group.
	Ports []uint16
	// State is the group's access state for the unit.
	State AccessState
	// Remote marks a group whose ports belong to another device server
	// exporting the same logical unit (a second gateway over shared
	// storage). The unit reports the group and the state it is given
	// here, and no command reaches it through those ports. A state set by
	// SET TARGET PORT GROUPS through this unit would not reach the other
	// device server, so while any group is remote the unit offers
	// implicit ALUA only: INQUIRY reports TPGS 01b and SET TARGET PORT
	// GROUPS fails as an unsupported command.
	Remote bool
}

// ErrNoPortGroup is returned for a target port group the unit does not
// have.
var ErrNoPortGroup = errors.New("scsi: no such target port group")

// Status codes of a target port group descriptor (SPC-4 table 170).
const (
	tpgStatusExplicit = 0x01 // altered by SET TARGET PORT GROUPS
	tpgStatusImplicit = 0x02 // altered by the device server
)

// portGroupState is a group as the unit keeps it.
type portGroupState struct {
	PortGroup
	status byte
}

// Sense conditions of asymmetric access (SPC-4 Annex D).
var (
	// errTransitioning: LOGICAL UNIT NOT ACCESSIBLE, ASYMMETRIC ACCESS
	// STATE TRANSITION.
	errTransitioning = newSense(SenseNotReady, 0x04, 0x0a)
	// errStandby: LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY
	// STATE.
	errStandby = newSense(SenseNotReady, 0x04, 0x0b)
	// errUnavailable: LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN
	// UNAVAILABLE STATE.
	errUnavailable = newSense(SenseNotReady, 0x04, 0x0c)
	// uaAccessChanged: ASYMMETRIC ACCESS STATE CHANGED.
	uaAccessChanged = newSense(SenseUnitAttention, 0x2a, 0x06)
	// uaALUAToggled: INQUIRY DATA HAS CHANGED (TPGS and the device
	// identification page change with ALUA turned on or off).
	uaALUAToggled = newSense(SenseUnitAttention, 0x3f, 0x03)
)

// SetPortGroups turns asymmetric logical unit access on for the unit with
// the given target port groups, or off with none. INQUIRY then reports
// implicit and explicit ALUA (TPGS 11b; implicit only, 01b, while a group
// is Remote), VPD page 0x83 names the port group of the nexus, REPORT and
// SET TARGET PORT GROUPS are served (SET only while no group is Remote), and
// commands through a port of a group that is not active are refused as
// SPC-4 §5.15.2.4 requires. A nexus on a port in no group is served as
// active/optimized. Every live nexus of the unit is told ASYMMETRIC
// ACCESS STATE CHANGED when a group that existed before changes state,
// and INQUIRY DATA HAS CHANGED when ALUA turns on or off or explicit
// ALUA comes or goes.
// Group identifiers and ports must each appear once.
func (lu *LogicalUnit) SetPortGroups(groups []PortGroup) error {
	ids := map[uint16]bool{}
	ports := map[uint16]bool{}
	next := make([]portGroupState, 0, len(groups))
	for _, g := range groups {
		if ids[g.ID] {
			return fmt.Errorf("scsi: target port group %d appears twice", g.ID)
		}
		ids[g.ID] = true
		if !g.State.valid() {
			return fmt.Errorf("scsi: target port group %d: %v is not an access state", g.ID, g.State)
		}
		for _, p := range g.Ports {
			if ports[p] {
				return fmt.Errorf("scsi: relative target port %d is in two target port groups", p)
			}
			ports[p] = true
		}
		next = append(next, portGroupState{PortGroup: PortGroup{ID: g.ID, Ports: slices.Clone(g.Ports), State: g.State, Remote: g.Remote}})
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	changed := false
	for i := range next {
		if old := lu.portGroupLocked(next[i].ID); old != nil {
			next[i].status = old.status
			if old.State != next[i].State {
				next[i].status = tpgStatusImplicit
				changed = true
			}
		}
	}
	if len(next) == 0 {
		next = nil
	}
	lu.portGroups = next
	byPort := make(map[uint16]uint16)
	for _, g := range next {
		for _, p := range g.Ports {
			byPort[p] = g.ID
		}
	}
	lu.groupOfPort.Store(&byPort)
	on := len(next) > 0
	explicit := on && !slices.ContainsFunc(next, func(g portGroupState) bool { return g.Remote })
	if on != lu.aluaOn.Load() || explicit != lu.explicitALUA.Load() {
		lu.aluaOn.Store(on)
		lu.explicitALUA.Store(explicit)
		lu.addUALocked(uaALUAToggled, "")
	}
	if changed {
		lu.addUALocked(uaAccessChanged, "")
	}
	return nil
}

// SetAccessState moves target port group id of the unit to state, as an
// implicit transition (a product's own failover): every live nexus of the
// unit is told ASYMMETRIC ACCESS STATE CHANGED. Setting the state a group
// already has changes nothing. It fails with ErrNoPortGroup for a group
// the unit does not have.
func (lu *LogicalUnit) SetAccessState(id uint16, state AccessState) error {
	if !state.valid() {
		return fmt.Errorf("scsi: %v is not an access state", state)
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	g := lu.portGroupLocked(id)
	if g == nil {
		return fmt.Errorf("%w: %d", ErrNoPortGroup, id)
	}
	if g.State == state {
		return nil
	}
	g.State, g.status = state, tpgStatusImplicit
	lu.addUALocked(uaAccessChanged, "")
	return nil
}

// PortGroups returns the unit's target port groups and their access
// states; none while ALUA is off.
func (lu *LogicalUnit) PortGroups() []PortGroup {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	out := make([]PortGroup, len(lu.portGroups))
	for i, g := range lu.portGroups {
		out[i] = PortGroup{ID: g.ID, Ports: slices.Clone(g.Ports), State: g.State, Remote: g.Remote}
	}
	return out
}

// portGroupLocked returns the group id, or nil. Called with lu.mu held.
func (lu *LogicalUnit) portGroupLocked(id uint16) *portGroupState {
	for i := range lu.portGroups {
		if lu.portGroups[i].ID == id {
			return &lu.portGroups[i]
		}
	}
	return nil
}

// groupOfLocked returns the group holding relative target port port, or
// nil. Called with lu.mu held.
func (lu *LogicalUnit) groupOfLocked(port uint16) *portGroupState {
	for i := range lu.portGroups {
		if slices.Contains(lu.portGroups[i].Ports, port) {
			return &lu.portGroups[i]
		}
	}
	return nil
}

// portGroupOf returns the identifier of the group holding relative
// target port port. It takes no lock: callers such as EXTENDED COPY's
// designator matching may hold lu.mu.
func (lu *LogicalUnit) portGroupOf(port uint16) (uint16, bool) {
	m := lu.groupOfPort.Load()
	if m == nil {
		return 0, false
	}
	id, ok := (*m)[port]
	return id, ok
}

// accessCheckLocked returns the sense a command op meets through
// relative target port port in its group's access state, or nil when
// the state lets it through. Called with lu.mu held.
func (lu *LogicalUnit) accessCheckLocked(port uint16, op *opcode) *Sense {
	g := lu.groupOfLocked(port)
	if g == nil {
		return nil
	}
	return accessSense(g.State, op)
}

// accessSense is the sense with which state refuses op (nil for none;
// with op nil, the sense a media access would meet).
func accessSense(state AccessState, op *opcode) *Sense {
	var allowed opFlags
	var s *Sense
	switch state {
	case AccessStandby:
		allowed, s = flagInStandby, errStandby
	case AccessUnavailable:
		allowed, s = flagInUnavailable, errUnavailable
	case AccessTransitioning:
		allowed, s = flagInTransition, errTransitioning
	default:
		return nil
	}
	if op != nil && op.flags&allowed != 0 {
		return nil
	}
	return s
}

// reportTargetPortGroups answers REPORT TARGET PORT GROUPS (SPC-4
// §6.36), in the length-only or the extended header format.
func (r *request) reportTargetPortGroups() error {
	format := r.cdb[1] >> 5
	alloc := int(be32(r.cdb[6:10]))
	if format > 1 {
		return invalidField(1, 7)
	}
	hdr := 4
	if format == 1 {
		hdr = 8
	}
	out := make([]byte, hdr)
	if format == 1 {
		out[4] = 0x10 // FORMAT TYPE 001b: extended header
		out[5] = 0    // IMPLICIT TRANSITION TIME: not reported
	}
	r.lu.mu.Lock()
	for _, g := range r.lu.portGroups {
		d := make([]byte, 8, 8+4*len(g.Ports))
		d[0] = byte(g.State) & 0x0f
		// T_SUP, U_SUP, S_SUP, AN_SUP, AO_SUP: the states the unit
		// reports (transitioning) or can be set to.
		d[1] = 0x80 | 0x08 | 0x04 | 0x02 | 0x01
		binary.BigEndian.PutUint16(d[2:4], g.ID)
		d[5] = g.status
		d[7] = byte(len(g.Ports))
		for _, p := range g.Ports {
			d = binary.BigEndian.AppendUint32(d, uint32(p))
		}
		out = append(out, d...)
	}
	r.lu.mu.Unlock()
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	r.sendData(out, alloc)
	return nil
}

// setTargetPortGroups answers SET TARGET PORT GROUPS (SPC-4 §6.44): each
// descriptor moves a group to active/optimized, active/non-optimized,
// standby or unavailable. It is offered only while no group is Remote
// (explicit ALUA). Nothing changes unless every descriptor is
// valid. Every live nexus but the one the command came on is told
// ASYMMETRIC ACCESS STATE CHANGED (SPC-4 §5.15.2.6).
func (r *request) setTargetPortGroups() error {
	n := int64(be32(r.cdb[6:10]))
	if n == 0 {
		return nil
	}
	if n < 4 || (n-4)%4 != 0 {
		return errParamLength
	}
	data, err := r.dataOut(n)
	if err != nil {
		return err
	}
	type move struct {
		id    uint16
		state AccessState
	}
	moves := make([]move, 0, (n-4)/4)
	r.lu.mu.Lock()
	defer r.lu.mu.Unlock()
	for off := 4; off < len(data); off += 4 {
		st := AccessState(data[off] & 0x0f)
		switch st {
		case AccessActiveOptimized, AccessActiveNonOptimized, AccessStandby, AccessUnavailable:
		default:
			return invalidParam(off)
		}
		id := binary.BigEndian.Uint16(data[off+2 : off+4])
		if r.lu.portGroupLocked(id) == nil {
			return invalidParam(off + 2)
		}
		moves = append(moves, move{id, st})
	}
	changed := false
	for _, m := range moves {
		g := r.lu.portGroupLocked(m.id)
		if g.State != m.state {
			g.State, g.status = m.state, tpgStatusExplicit
			changed = true
		}
	}
	if changed {
		r.lu.addUALocked(uaAccessChanged, r.nexus)
	}
	return nil
}
