package scsi

// Transport is the side of a Target that only a transport drives: the end
// of an I_T nexus, the resets of task management, the data limit of a
// command and the sense data of a failed data phase. Package iscsi uses
// it; an embedder that serves units through package iscsi never needs it,
// and one that writes a transport of its own (iSER, vhost, a test
// harness) calls it as iscsi does. It is a view: the methods act on the
// Target it came from.
type Transport struct{ t *Target }

// Transport returns the transport's view of t.
func (t *Target) Transport() Transport { return Transport{t: t} }

// MaxTransferLength is the most data one command addressed to wire LUN raw
// may carry: the MaxTransferLength of the unit attached there, or
// DefaultMaxTransferLength when there is none. A transport sizes its
// per-command buffers by it, so the limit it enforces is the one the
// unit advertises in its block limits VPD page.
func (tp Transport) MaxTransferLength(raw uint64) int {
	if lu := tp.t.unitAt(raw); lu != nil {
		return lu.maxTransferLength()
	}
	return DefaultMaxTransferLength
}

// ResetLogicalUnit performs a LOGICAL UNIT RESET of the unit at the wire
// LUN raw, on behalf of nexus n: mode parameters return to their saved
// values, the SPC-2 reservation and medium removal preventions are
// released and the other live nexuses get LOGICAL UNIT RESET OCCURRED,
// and n with them when there are any (see LogicalUnit.reset).
// Persistent reservations survive. With a shared store the reset is
// committed to it, so the other gateways release the SPC-2 reservation
// and tell their live nexuses too. The transport aborts the unit's tasks.
func (tp Transport) ResetLogicalUnit(n Nexus, raw uint64) error {
	lu := tp.t.unitAt(raw)
	if lu == nil {
		return ErrNoLUN
	}
	lu.reset(uaLUReset, nexusKey(n), false)
	lu.commitSharedReset(nexusKey(n))
	return nil
}

// ResetTarget performs a TARGET WARM RESET (cold false) or TARGET COLD
// RESET (cold true) of every unit, on behalf of nexus n. The unit
// attention goes to the other live nexuses of n's initiator; other
// initiators learn of the reset from their aborted tasks (see
// LogicalUnit.reset).
func (tp Transport) ResetTarget(n Nexus, cold bool) {
	ua := uaWarmReset
	if cold {
		ua = uaColdReset
	}
	for _, lu := range tp.t.unitList() {
		lu.reset(ua, nexusKey(n), true)
		lu.releaseSharedSPC2("")
	}
}

// NexusLost tells every unit that the I_T nexus n ended (its session was
// closed or reinstated): its SPC-2 reservation is released and its unit
// attentions are forgotten.
func (tp Transport) NexusLost(n Nexus) {
	key := nexusKey(n)
	for _, lu := range tp.t.unitList() {
		lu.nexusLost(key)
		lu.releaseSharedSPC2(key)
	}
}

// unitList returns the target's units, for work that must not hold the
// target's lock (a shared store's commits).
func (t *Target) unitList() []*LogicalUnit {
	t.mu.RLock()
	defer t.mu.RUnlock()
	units := make([]*LogicalUnit, 0, len(t.units))
	for _, lu := range t.units {
		units = append(units, lu)
	}
	return units
}

// DataPhaseErrorSense returns fixed format sense data for ABORTED COMMAND,
// DATA PHASE ERROR, for a command whose data delivery failed in the
// transport.
func (Transport) DataPhaseErrorSense() []byte {
	return newSense(SenseAbortedCommand, 0x4b, 0x00).Fixed()
}
