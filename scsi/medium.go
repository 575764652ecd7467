package scsi

// startStopUnit runs START STOP UNIT (SBC-4 §5.25): START starts or stops
// the unit, and with LOEJ a removable medium is loaded or ejected unless
// some nexus prevents its removal.
func (r *request) startStopUnit() error {
	powerCondition := r.cdb[4] >> 4
	if powerCondition != 0 {
		// Power conditions are accepted and have no effect: the START
		// and LOEJ bits are ignored with them (SBC-4 §5.25).
		return nil
	}
	start := r.cdb[4]&0x01 != 0
	loej := r.cdb[4]&0x02 != 0 && r.lu.cfg.Removable
	if !start && r.cdb[4]&0x04 == 0 { // NO_FLUSH clear: flush on stop
		if err := r.lu.syncIf(true); err != nil {
			return err
		}
	}
	lu := r.lu
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if loej {
		if lu.removalPreventedLocked() {
			return errRemovalPrevented
		}
		lu.ejected = !start
	}
	if lu.ejected && start && !loej {
		return errMediumNotPresent
	}
	lu.stopped = !start
	return nil
}

// removalPreventedLocked reports whether any nexus prevents medium
// removal. Called with lu.mu held.
func (lu *LogicalUnit) removalPreventedLocked() bool {
	for _, ns := range lu.nexuses {
		if ns.prevent {
			return true
		}
	}
	return false
}

// preventAllow runs PREVENT ALLOW MEDIUM REMOVAL (SBC-4 §5.13): the
// prevention is per I_T nexus and ends with the nexus, a reset, or an
// ALLOW from the same nexus.
func (r *request) preventAllow() error {
	prevent := r.cdb[4] & 0x03
	if prevent > 1 { // 2 and 3 are for media changers
		return invalidField(4, 1)
	}
	lu := r.lu
	lu.mu.Lock()
	defer lu.mu.Unlock()
	lu.nexusLocked(r.nexus).prevent = prevent == 1
	return nil
}
