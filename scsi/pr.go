package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Persistent reservation types (SPC-4 table 169).
const (
	prWriteExclusive         = 0x1
	prExclusiveAccess        = 0x3
	prWriteExclusiveRegsOnly = 0x5
	prExclusiveAccessRegOnly = 0x6
	prWriteExclusiveAllRegs  = 0x7
	prExclusiveAccessAllRegs = 0x8
)

// validPRType reports whether t is a reservation type the unit offers.
func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRegsOnly,
		prExclusiveAccessRegOnly, prWriteExclusiveAllRegs, prExclusiveAccessAllRegs:
		return true
	}
	return false
}

// StateStore keeps a small piece of one logical unit's state across
// restarts and power loss: its persistent reservations (for initiators
// that ask for it with APTPL, activate persist through power loss) or the
// record of a SANITIZE in progress. The unit encodes its state itself;
// the store only keeps the bytes. Implementations need not be safe for
// concurrent use: the unit calls them under its own lock.
type StateStore interface {
	// Load returns what Save stored last, or nil when nothing is stored.
	Load() ([]byte, error)
	// Save stores data, replacing what was stored; nil data removes it.
	// It must not return before the data is durable.
	Save(data []byte) error
}

// prRegistration is one registered I_T nexus, or with AllPorts (a
// REGISTER with ALL_TG_PT) the initiator port's nexus through every
// target port of the target, of this gateway and of any other.
type prRegistration struct {
	Key           uint64 `json:"key"`
	InitiatorPort string `json:"initiator_port"`
	TargetName    string `json:"target_name"`
	RelPort       uint16 `json:"relative_port"`
	AllPorts      bool   `json:"all_tg_pt,omitempty"`
}

// nexusKey is the key of the registration in prState.regs: its nexus's,
// or for AllPorts its anyPortKey.
func (g *prRegistration) nexusKey() string {
	k := nexusKey(Nexus{InitiatorPort: g.InitiatorPort, TargetName: g.TargetName, RelativePortID: g.RelPort})
	if g.AllPorts {
		return anyPortKey(k)
	}
	return k
}

// anyPortKey turns a nexus key into the key of its initiator port's
// ALL_TG_PT registration: the relative port replaced by "*".
func anyPortKey(key string) string {
	return key[:strings.LastIndexByte(key, 0)+1] + "*"
}

// isAnyPortKey reports whether key is an ALL_TG_PT registration's.
func isAnyPortKey(key string) bool { return strings.HasSuffix(key, "\x00*") }

// anyPortBytes is anyPortKey in p.scratch, for lookups that must not
// allocate; it is valid until the next call.
func (p *prState) anyPortBytes(key string) []byte {
	p.scratch = append(append(p.scratch[:0], key[:strings.LastIndexByte(key, 0)+1]...), '*')
	return p.scratch
}

// registered reports whether the nexus key is registered, itself or
// through its initiator port's ALL_TG_PT registration.
func (p *prState) registered(key string) bool {
	return p.regs[key] != nil || p.regs[string(p.anyPortBytes(key))] != nil
}

// covering returns the key in p.regs of the registration of the nexus
// key: its own, else its initiator port's ALL_TG_PT one, else key.
func (p *prState) covering(key string) string {
	if p.regs[key] != nil {
		return key
	}
	if k := anyPortKey(key); p.regs[k] != nil {
		return k
	}
	return key
}

// prState is the persistent reservation state of a unit (SPC-4 §5.13),
// guarded by the unit's mutex.
type prState struct {
	generation uint32
	// regs maps the nexus key of every registered I_T nexus to its
	// registration.
	regs map[string]*prRegistration
	// resType is the type of the reservation, 0 when there is none;
	// holder is the nexus key of its holder (unused for the all
	// registrants types, where every registrant holds it).
	resType byte
	holder  string
	// spc2 is the nexus key holding an SPC-2 reservation (RESERVE),
	// or "". It lives here so that a shared store carries it with the
	// persistent reservations; it never persists through power loss.
	spc2 string
	// aptpl is the APTPL bit of the last registration that set it.
	aptpl bool
	// persisted is set while the store holds a state.
	persisted bool
	// scratch holds anyPortBytes's key.
	scratch []byte
}

// allRegistrants reports whether the reservation is held by every
// registrant.
func (p *prState) allRegistrants() bool {
	return p.resType == prWriteExclusiveAllRegs || p.resType == prExclusiveAccessAllRegs
}

// holds reports whether the nexus key holds the reservation.
func (p *prState) holds(key string) bool {
	if p.resType == 0 {
		return false
	}
	if p.allRegistrants() {
		return p.registered(key)
	}
	return p.holder == key || p.holder == string(p.anyPortBytes(key))
}

// conflicts reports whether a command with flags f from nexus key
// conflicts with the reservation (SPC-4 table 64).
func (p *prState) conflicts(key string, f opFlags) bool {
	if p.resType == 0 || f&flagPRAllowed != 0 || p.holds(key) {
		return false
	}
	write := f&(flagWrite|flagPRWrite) != 0
	registered := p.registered(key)
	switch p.resType {
	case prWriteExclusive:
		return write
	case prWriteExclusiveRegsOnly, prWriteExclusiveAllRegs:
		return write && !registered
	case prExclusiveAccessRegOnly, prExclusiveAccessAllRegs:
		return !registered
	}
	return true // Exclusive Access
}

// release drops the reservation; registrants other than except learn of
// it when the type was one of the registrants-only or all registrants
// types (SPC-4 §5.13.11.2).
func (lu *LogicalUnit) prReleaseLocked(except string) {
	p := &lu.pr
	if p.resType >= prWriteExclusiveRegsOnly {
		for k := range p.regs {
			if k != except {
				lu.prUA(k, uaResvRelease)
			}
		}
	}
	p.resType, p.holder = 0, ""
}

// unregisterLocked removes the registration of key, releasing the
// reservation it held (SPC-4 §5.13.11.2.2).
func (lu *LogicalUnit) unregisterLocked(key string) {
	p := &lu.pr
	if p.regs[key] == nil {
		return
	}
	releases := p.resType != 0 && (!p.allRegistrants() && p.holder == key || p.allRegistrants() && len(p.regs) == 1)
	delete(p.regs, key)
	if releases {
		lu.prReleaseLocked(key)
	}
}

// persistedPR is the form in which UnitConfig.Reservations and
// UnitConfig.SharedReservations keep the state.
type persistedPR struct {
	Generation    uint32            `json:"generation"`
	Registrations []*prRegistration `json:"registrations"`
	Type          byte              `json:"type,omitempty"`
	// Holder indexes Registrations (for the types with one holder).
	Holder int `json:"holder"`
	// The fields below are a shared store's only (shared.go). APTPL is
	// the bit of the last registration; Seq counts the commits; Events
	// are what the last commits owe the nexuses they name.
	APTPL bool `json:"aptpl,omitempty"`
	// SPC2 is the nexus key holding the SPC-2 reservation.
	SPC2   string    `json:"spc2_holder,omitempty"`
	Seq    uint64    `json:"seq,omitempty"`
	Events []prEvent `json:"events,omitempty"`
}

// encodePR returns the persisted form of p, its registrations in nexus
// key order.
func encodePR(p *prState) persistedPR {
	out := persistedPR{Generation: p.generation, Type: p.resType, Holder: -1, APTPL: p.aptpl, SPC2: p.spc2}
	keys := slices.Sorted(maps.Keys(p.regs))
	for i, k := range keys {
		out.Registrations = append(out.Registrations, p.regs[k])
		if k == p.holder {
			out.Holder = i
		}
	}
	return out
}

// decodePR checks a persisted state and returns it as the unit keeps it
// (its aptpl left false).
func decodePR(in *persistedPR) (prState, error) {
	p := prState{generation: in.Generation, resType: in.Type, spc2: in.SPC2, regs: map[string]*prRegistration{}}
	if in.Type != 0 && !validPRType(in.Type) {
		return p, fmt.Errorf("scsi: persistent reservations: type %d", in.Type)
	}
	for i, g := range in.Registrations {
		if g == nil || g.Key == 0 {
			return p, fmt.Errorf("scsi: persistent reservations: registration %d is empty", i)
		}
		c := *g
		p.regs[c.nexusKey()] = &c
		if i == in.Holder {
			p.holder = c.nexusKey()
		}
	}
	if p.resType != 0 && !p.allRegistrants() && p.holder == "" {
		return p, fmt.Errorf("scsi: persistent reservations: type %d without a holder", in.Type)
	}
	return p, nil
}

// savePRLocked hands the state to the unit's store: all of it while APTPL
// is in force, nothing otherwise. (A shared store is written by
// sharedPROut, not here.)
func (lu *LogicalUnit) savePRLocked() error {
	st := lu.cfg.Reservations
	if st == nil {
		return nil
	}
	p := &lu.pr
	if !p.aptpl || len(p.regs) == 0 {
		if !p.persisted {
			return nil
		}
		if err := st.Save(nil); err != nil {
			return err
		}
		p.persisted = false
		return nil
	}
	out := encodePR(p)
	out.APTPL, out.SPC2 = false, ""
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	if err := st.Save(b); err != nil {
		return err
	}
	p.persisted = true
	return nil
}

// loadPR restores the state a store kept.
func (lu *LogicalUnit) loadPR() error {
	lu.pr.regs = map[string]*prRegistration{}
	st := lu.cfg.Reservations
	if st == nil {
		return nil
	}
	b, err := st.Load()
	if err != nil || len(b) == 0 {
		return err
	}
	var in persistedPR
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("scsi: persistent reservations: %w", err)
	}
	p, err := decodePR(&in)
	if err != nil {
		return err
	}
	p.aptpl, p.persisted = len(p.regs) > 0, true
	lu.pr = p
	return nil
}

// canPersistPR reports whether the unit offers APTPL (PTPL_C): it has a
// store of its reservations.
func (lu *LogicalUnit) canPersistPR() bool {
	return lu.cfg.Reservations != nil || lu.prShared != nil
}

// prUA establishes unit attention s for the nexus key as a reservation
// change owes it: at once, or, inside a shared store's transaction, when
// the change commits (on every gateway that serves the nexus).
func (lu *LogicalUnit) prUA(key string, s *Sense) {
	if sh := lu.prShared; sh != nil && sh.tx != nil {
		sh.tx.owe(key, eventOf(s))
		return
	}
	lu.queueUAReg(key, s)
}

// queueUAReg establishes unit attention s for the nexuses of the
// registration key: the nexus, or for an ALL_TG_PT registration every
// nexus of its initiator port the unit knows. Called with lu.mu held.
func (lu *LogicalUnit) queueUAReg(key string, s *Sense) {
	for _, k := range lu.nexusesOf(key) {
		lu.queueUA(k, s)
	}
}

// abortReg ends the tasks of the nexuses of the registration key.
func (lu *LogicalUnit) abortReg(key string) {
	for _, k := range lu.nexusesOf(key) {
		if ns := lu.nexuses[k]; ns != nil {
			ns.aborts.Add(1)
		}
	}
}

// nexusesOf returns the nexus keys a registration key stands for.
func (lu *LogicalUnit) nexusesOf(key string) []string {
	if !isAnyPortKey(key) {
		return []string{key}
	}
	prefix := key[:len(key)-1]
	var ks []string
	for k := range lu.nexuses {
		if strings.HasPrefix(k, prefix) && !strings.Contains(k[len(prefix):], "\x00") {
			ks = append(ks, k)
		}
	}
	return ks
}

// prAbort ends the tasks the nexus key has running in the unit (PREEMPT
// AND ABORT): at once, or when a shared store's transaction commits.
func (lu *LogicalUnit) prAbort(key string) {
	if sh := lu.prShared; sh != nil && sh.tx != nil {
		sh.tx.owe(key, eventAbort)
		return
	}
	lu.abortReg(key)
}

// persistentReserveIn answers PERSISTENT RESERVE IN (SPC-4 §6.14).
func (r *request) persistentReserveIn() error {
	alloc := int(be16(r.cdb[7:9]))
	lu := r.lu
	if lu.prShared != nil {
		ctx, cancel := context.WithTimeout(r.ctx, sharedPRTimeout)
		err := lu.syncSharedPR(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	p := &lu.pr
	out := make([]byte, 8, 64)
	binary.BigEndian.PutUint32(out[0:4], p.generation)
	keys := slices.Sorted(maps.Keys(p.regs))
	switch r.cdb[1] & 0x1f {
	case 0x00: // READ KEYS
		for _, k := range keys {
			out = binary.BigEndian.AppendUint64(out, p.regs[k].Key)
		}
		binary.BigEndian.PutUint32(out[4:8], uint32(len(out)-8))
	case 0x01: // READ RESERVATION
		if p.resType != 0 {
			var d [16]byte
			if !p.allRegistrants() {
				binary.BigEndian.PutUint64(d[0:8], p.regs[p.holder].Key)
			}
			d[13] = p.resType // scope 0: logical unit
			out = append(out, d[:]...)
			binary.BigEndian.PutUint32(out[4:8], 16)
		}
	case 0x02: // REPORT CAPABILITIES
		out = make([]byte, 8)
		binary.BigEndian.PutUint16(out[0:2], 8)
		out[2] = 0x10 | 0x04 | 0x01 // CRH, ATP_C, PTPL_C
		if !lu.canPersistPR() {
			out[2] &^= 0x01
		}
		out[3] = 0x80 | 0x10 // TMV, ALLOW COMMANDS 001
		if p.aptpl {
			out[3] |= 0x01 // PTPL_A
		}
		out[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02 // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
		out[5] = 0x01                             // EX_AC_AR
	case 0x03: // READ FULL STATUS
		for _, k := range keys {
			g := p.regs[k]
			tid := transportID(g.InitiatorPort)
			d := make([]byte, 24, 24+len(tid))
			binary.BigEndian.PutUint64(d[0:8], g.Key)
			if p.holds(k) {
				d[12] = 0x01 // R_HOLDER
				d[13] = p.resType
			}
			if g.AllPorts {
				d[12] |= 0x02 // ALL_TG_PT: the relative port is not used
			}
			binary.BigEndian.PutUint16(d[18:20], g.RelPort)
			binary.BigEndian.PutUint32(d[20:24], uint32(len(tid)))
			out = append(append(out, d...), tid...)
		}
		binary.BigEndian.PutUint32(out[4:8], uint32(len(out)-8))
	default:
		return invalidField(1, 4)
	}
	r.sendData(out, alloc)
	return nil
}

// transportID encodes an iSCSI initiator port name as a TransportID in
// the initiator port format (SPC-4 §7.6.4.6).
func transportID(port string) []byte {
	n := max((len(port)+1+3)&^3, 20)
	b := make([]byte, 4+n)
	b[0] = 0x40 | 0x05 // format 01, protocol iSCSI
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	copy(b[4:], port)
	return b
}

// parseTransportID decodes an iSCSI TransportID in the initiator port
// format into the port name the transport uses ("<name>,i,0x<isid>").
func parseTransportID(b []byte) (string, bool) {
	if len(b) < 24 || b[0] != 0x45 {
		return "", false
	}
	n := int(be16(b[2:4]))
	if n < 20 || 4+n > len(b) {
		return "", false
	}
	s := b[4 : 4+n]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	name, isid, ok := strings.Cut(string(s), ",i,0x")
	if !ok || name == "" {
		name, isid, ok = strings.Cut(string(s), ",I,0X")
	}
	v, err := strconv.ParseUint(isid, 16, 48)
	if !ok || name == "" || err != nil {
		return "", false
	}
	return fmt.Sprintf("%s,i,0x%012x", name, v), true
}

// PERSISTENT RESERVE OUT service actions.
const (
	proutRegister       = 0x00
	proutReserve        = 0x01
	proutRelease        = 0x02
	proutClear          = 0x03
	proutPreempt        = 0x04
	proutPreemptAbort   = 0x05
	proutRegisterIgnore = 0x06
	proutRegisterMove   = 0x07
)

// persistentReserveOut runs PERSISTENT RESERVE OUT (SPC-4 §6.15).
func (r *request) persistentReserveOut() error {
	sa := r.cdb[1] & 0x1f
	scope, typ := r.cdb[2]>>4, r.cdb[2]&0x0f
	plen := int(be32(r.cdb[5:9]))
	if sa > proutRegisterMove {
		return invalidField(1, 4)
	}
	minLen := 24
	if sa != proutRegisterMove && plen != 24 {
		return errParamLength
	}
	if sa == proutRegisterMove && plen < minLen+24 {
		return errParamLength
	}
	data, err := r.dataOut(int64(plen))
	if err != nil {
		return err
	}
	lu := r.lu
	if lu.prShared != nil {
		return lu.sharedPROut(r.ctx, func() error { return r.proutLocked(sa, scope, typ, data) })
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	return r.proutLocked(sa, scope, typ, data)
}

// proutLocked runs a PERSISTENT RESERVE OUT service action on the unit's
// state, with lu.mu held.
func (r *request) proutLocked(sa, scope, typ byte, data []byte) error {
	resKey, saKey := be64(data[0:8]), be64(data[8:16])
	lu := r.lu
	p := &lu.pr
	if p.spc2 != "" && p.spc2 != r.nexus {
		return errReservationConflict
	}
	self := p.covering(r.nexus) // the key of this nexus's registration
	me := p.regs[self]
	if sa == proutRegisterMove {
		return r.registerAndMove(self, data, resKey, saKey, scope, typ)
	}
	flags := data[20]
	if flags&0x08 != 0 { // SPEC_I_PT: not supported (SIP_C 0)
		return invalidParam(20)
	}
	allPorts := flags&0x04 != 0 // ALL_TG_PT (ATP_C 1)
	if allPorts && sa != proutRegister && sa != proutRegisterIgnore {
		return invalidParam(20)
	}
	if flags&0x01 != 0 && sa != proutRegister && sa != proutRegisterIgnore {
		return invalidParam(20) // APTPL only with a registration
	}
	if sa == proutRegister || sa == proutRegisterIgnore {
		return r.register(self, me, sa == proutRegisterIgnore, allPorts, resKey, saKey, flags&0x01 != 0)
	}
	// Every other service action needs a registered nexus quoting its key.
	if me == nil || me.Key != resKey {
		return errReservationConflict
	}
	if sa == proutReserve || sa == proutRelease || sa == proutPreempt || sa == proutPreemptAbort {
		if scope != 0 {
			return invalidField(2, 7)
		}
		if (sa != proutRelease || p.holds(self)) && !validPRType(typ) {
			return invalidField(2, 3)
		}
	}
	switch sa {
	case proutReserve:
		if p.resType != 0 {
			if !p.holds(self) || p.resType != typ {
				return errReservationConflict
			}
			return nil
		}
		p.resType, p.holder = typ, self
		return lu.savePRLocked()
	case proutRelease:
		if !p.holds(self) {
			return nil
		}
		if p.resType != typ {
			return errInvalidRelease
		}
		lu.prReleaseLocked(self)
		return lu.savePRLocked()
	case proutClear:
		for k := range p.regs {
			if k != self {
				lu.prUA(k, uaResvPreempted)
			}
		}
		p.regs = map[string]*prRegistration{}
		p.resType, p.holder = 0, ""
		p.generation++
		return lu.savePRLocked()
	default: // PREEMPT, PREEMPT AND ABORT
		return r.preempt(self, saKey, typ, sa == proutPreemptAbort)
	}
}

// register runs REGISTER and REGISTER AND IGNORE EXISTING KEY for the
// nexus whose registration is self (me, nil if none); a new registration
// with allPorts (ALL_TG_PT) registers the initiator port through every
// target port.
func (r *request) register(self string, me *prRegistration, ignore, allPorts bool, resKey, saKey uint64, aptpl bool) error {
	lu := r.lu
	p := &lu.pr
	if aptpl && !lu.canPersistPR() {
		return invalidParam(20) // PTPL_C 0: no store to persist to
	}
	switch {
	case me == nil && !ignore && resKey != 0:
		return errReservationConflict
	case me != nil && !ignore && me.Key != resKey:
		return errReservationConflict
	case me == nil && saKey == 0:
		return nil // nothing to register
	}
	switch {
	case saKey == 0:
		lu.unregisterLocked(self)
	case me == nil:
		n := r.cmd.Nexus
		g := &prRegistration{Key: saKey, InitiatorPort: n.InitiatorPort, TargetName: n.TargetName, RelPort: n.RelativePortID}
		if allPorts {
			g.RelPort, g.AllPorts = 0, true
		}
		p.regs[g.nexusKey()] = g
	default:
		me.Key = saKey
	}
	p.aptpl = aptpl
	p.generation++
	return lu.savePRLocked()
}

// preempt runs PREEMPT and PREEMPT AND ABORT (SPC-4 §5.13.11.4). With
// abort, the tasks the preempted nexuses have running in the unit
// complete with TASK ABORTED; every later command of theirs conflicts.
func (r *request) preempt(self string, saKey uint64, typ byte, abort bool) error {
	lu := r.lu
	p := &lu.pr
	removeMatching := func(all bool) int {
		n := 0
		for k, g := range p.regs {
			if k == self && all {
				continue
			}
			if all || g.Key == saKey {
				delete(p.regs, k)
				lu.prUA(k, uaRegsPreempted)
				if abort && k != self {
					lu.prAbort(k)
				}
				n++
			}
		}
		return n
	}
	switch {
	case p.resType == 0:
		if saKey == 0 {
			return invalidParam(8)
		}
		if removeMatching(false) == 0 {
			return errReservationConflict
		}
	case p.allRegistrants():
		if saKey == 0 {
			removeMatching(true)
			p.resType, p.holder = typ, self
		} else if removeMatching(false) == 0 {
			return errReservationConflict
		}
	case p.regs[p.holder].Key == saKey:
		changed := p.resType != typ
		removeMatching(false)
		p.resType, p.holder = typ, self
		if changed {
			for k := range p.regs {
				if k != self {
					lu.prUA(k, uaResvRelease)
				}
			}
		}
	default:
		if saKey == 0 {
			return invalidParam(8)
		}
		if removeMatching(false) == 0 {
			return errReservationConflict
		}
	}
	if p.resType != 0 && !p.allRegistrants() && p.regs[p.holder] == nil {
		p.resType, p.holder = 0, "" // the holder preempted itself away
	}
	p.generation++
	return lu.savePRLocked()
}

// registerAndMove runs REGISTER AND MOVE (SPC-4 §5.13.8): the reservation
// moves to the I_T nexus the parameter list names, which is registered
// with the service action key.
func (r *request) registerAndMove(self string, data []byte, resKey, saKey uint64, scope, typ byte) error {
	lu := r.lu
	p := &lu.pr
	me := p.regs[self]
	if me == nil || me.Key != resKey {
		return errReservationConflict
	}
	if p.resType == 0 || p.allRegistrants() || !p.holds(self) {
		return errReservationConflict
	}
	if scope != 0 {
		return invalidField(2, 7)
	}
	if !validPRType(typ) {
		return invalidField(2, 3)
	}
	if saKey == 0 {
		return invalidParam(8)
	}
	unreg, aptpl := data[17]&0x02 != 0, data[17]&0x01 != 0
	if aptpl && !lu.canPersistPR() {
		return invalidParam(17)
	}
	relPort := be16(data[18:20])
	tidLen := int(be32(data[20:24]))
	if 24+tidLen > len(data) {
		return errParamLength
	}
	port, ok := parseTransportID(data[24 : 24+tidLen])
	if !ok {
		return invalidParam(24)
	}
	dest := &prRegistration{Key: saKey, InitiatorPort: port, TargetName: r.cmd.Nexus.TargetName, RelPort: relPort}
	dk := dest.nexusKey()
	if dk == r.nexus || dk == self {
		return invalidParam(24)
	}
	if cur := p.regs[dk]; cur != nil {
		cur.Key = saKey
	} else {
		p.regs[dk] = dest
	}
	p.resType, p.holder = typ, dk
	if unreg {
		delete(p.regs, self)
	}
	p.aptpl = aptpl
	p.generation++
	return lu.savePRLocked()
}

// prRegistered reports whether the unit has persistent reservation
// registrations (SPC-2 RESERVE and RELEASE then conflict).
func (lu *LogicalUnit) prRegisteredLocked() bool { return len(lu.pr.regs) > 0 }
