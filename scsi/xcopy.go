package scsi

import (
	"bytes"
	"encoding/binary"
)

// Limits of the copy manager, reported by RECEIVE COPY RESULTS (OPERATING
// PARAMETERS) and the third-party copy VPD page.
const (
	maxCopyTargets     = 16
	maxCopySegments    = 64
	maxCopyListLength  = 4096
	maxHeldCopies      = 64
	cscdIdentification = 0xe4 // identification descriptor CSCD
	segmentBlockBlock  = 0x02 // block device to block device segment
)

// Sense data of EXTENDED COPY (SPC-4 §6.4).
var (
	errTooManyTargets     = newSense(SenseIllegalRequest, 0x26, 0x06)
	errUnsupportedCSCD    = newSense(SenseIllegalRequest, 0x26, 0x07)
	errTooManySegments    = newSense(SenseIllegalRequest, 0x26, 0x08)
	errUnsupportedSegment = newSense(SenseIllegalRequest, 0x26, 0x09)
	errOperationInProg    = newSense(SenseIllegalRequest, 0x00, 0x16)
	// errCopyTargetUnreachable: COPY ABORTED, COPY TARGET DEVICE NOT
	// REACHABLE.
	errCopyTargetUnreachable = newSense(SenseCopyAborted, 0x0d, 0x02)
)

// SenseCopyAborted is the COPY ABORTED sense key.
const SenseCopyAborted SenseKey = 0xA

// copyRecord is what RECEIVE COPY RESULTS (COPY STATUS) reports of one
// EXTENDED COPY whose list identifier asked to be held.
type copyRecord struct {
	nexus    string
	listID   byte
	done     bool
	failed   bool
	segments uint16
	bytes    uint64
}

// copyAborted returns COPY ABORTED sense with the ASC of s, pointing at
// the byte of the parameter list in error when field >= 0.
func copyAborted(asc, ascq byte, field int) *Sense {
	s := newSense(SenseCopyAborted, asc, ascq)
	if field >= 0 {
		s.FieldValid, s.Field = true, uint16(field)
	}
	return s
}

// copyTarget is a CSCD descriptor resolved to a unit.
type copyTarget struct {
	lu  *LogicalUnit
	err *Sense // why the descriptor cannot be used, reported when a segment does
}

// extendedCopy runs EXTENDED COPY(LID1) (SPC-4 §6.4) with identification
// CSCD descriptors naming units of the same target by their NAA
// designator, and block-to-block segment descriptors. The copy runs while
// the command does; the result is held for RECEIVE COPY RESULTS unless
// the list identifier usage says otherwise.
func (r *request) extendedCopy() error {
	plen := int(be32(r.cdb[10:14]))
	if plen == 0 {
		return nil
	}
	if plen < 16 {
		return errParamLength
	}
	data, err := r.dataOut(int64(plen))
	if err != nil {
		return err
	}
	listID, usage := data[0], data[1]>>3&0x03
	if data[1]&0xc0 != 0 || usage == 0x01 || usage == 0x03 && listID != 0 {
		return invalidParam(1)
	}
	tdl := int(be16(data[2:4]))
	sdl := int(be32(data[8:12]))
	inline := int(be32(data[12:16]))
	if tdl+sdl > maxCopyListLength {
		return errParamLength
	}
	if 16+tdl+sdl+inline > plen {
		return errParamLength
	}
	if inline != 0 {
		return invalidParam(12) // no inline data is accepted (maximum 0)
	}
	if tdl%32 != 0 {
		return errParamLength
	}
	if tdl/32 > maxCopyTargets {
		return errTooManyTargets
	}
	targets := make([]copyTarget, 0, tdl/32)
	for off := 16; off < 16+tdl; off += 32 {
		t, err := r.copyTarget(data[off:off+32], off)
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	type segment struct {
		src, dst         copyTarget
		offset           int
		blocks           uint64
		srcLBA, dstLBA   uint64
		srcIndex, dstIdx int
	}
	var segs []segment
	for off := 16 + tdl; off < 16+tdl+sdl; {
		if 16+tdl+sdl-off < 4 {
			return errParamLength
		}
		if data[off] != segmentBlockBlock {
			return errUnsupportedSegment
		}
		if len(segs) == maxCopySegments {
			return errTooManySegments
		}
		if be16(data[off+2:off+4]) != 0x18 || off+28 > 16+tdl+sdl {
			return errParamLength
		}
		d := data[off : off+28]
		if d[1]&^0x03 != 0 {
			return invalidParam(off + 1)
		}
		si, di := int(be16(d[4:6])), int(be16(d[6:8]))
		s := segment{offset: off, blocks: uint64(be16(d[10:12])), srcLBA: be64(d[12:20]), dstLBA: be64(d[20:28]), srcIndex: si, dstIdx: di}
		if si >= len(targets) || di >= len(targets) {
			return copyAborted(0x0d, 0x02, off+4)
		}
		s.src, s.dst = targets[si], targets[di]
		segs = append(segs, s)
		off += 28
	}

	lu := r.lu
	var rec *copyRecord
	if usage != 0x03 && usage != 0x02 {
		lu.mu.Lock()
		for _, c := range lu.copies {
			if c.nexus == r.nexus && c.listID == listID && !c.done {
				lu.mu.Unlock()
				return errOperationInProg
			}
		}
		rec = &copyRecord{nexus: r.nexus, listID: listID}
		lu.holdCopyLocked(rec)
		lu.mu.Unlock()
	}
	var copied uint64
	var done uint16
	finish := func(err error) error {
		if rec != nil {
			lu.mu.Lock()
			rec.done, rec.failed, rec.segments, rec.bytes = true, err != nil, done, copied
			lu.mu.Unlock()
		}
		return err
	}
	for _, s := range segs {
		for _, t := range []copyTarget{s.src, s.dst} {
			if t.err != nil {
				return finish(t.err)
			}
		}
		n, err := r.copySegment(s.src.lu, s.dst.lu, s.srcLBA, s.dstLBA, s.blocks, s.offset)
		copied += n
		if err != nil {
			return finish(err)
		}
		done++
	}
	return finish(nil)
}

// copySegment copies one segment (at offset off of the parameter list)
// between two units of the target, each entered like a command of its
// own so that neither is reopened or closed under the copy.
func (r *request) copySegment(src, dst *LogicalUnit, srcLBA, dstLBA, blocks uint64, off int) (uint64, error) {
	for _, u := range [2]*LogicalUnit{src, dst} {
		if u == r.lu {
			continue
		}
		if err := u.gate.enter(r.ctx); err != nil {
			return 0, errCopyTargetUnreachable
		}
		defer u.gate.leave()
	}
	if src.blockSize != dst.blockSize {
		return 0, copyAborted(0x26, 0x00, -1)
	}
	if src.checkRange(srcLBA, blocks) != nil || dst.checkRange(dstLBA, blocks) != nil {
		// A range beyond either medium: the segment cannot be processed
		// (COPY ABORTED, pointing at the segment).
		return 0, copyAborted(0x00, 0x00, off)
	}
	if err := r.copyAllowed(src, false); err != nil {
		return 0, err
	}
	if err := r.copyAllowed(dst, true); err != nil {
		return 0, err
	}
	n, err := r.copyBlocks(src, dst, srcLBA, dstLBA, blocks)
	if err != nil {
		return n, copyAborted(0x00, 0x00, -1)
	}
	return n, nil
}

// copyTarget resolves one CSCD descriptor at offset off of the parameter
// list. A descriptor the copy manager cannot reach is kept with its
// error, reported only if a segment uses it.
func (r *request) copyTarget(d []byte, off int) (copyTarget, error) {
	if d[0] != cscdIdentification {
		return copyTarget{}, errUnsupportedCSCD
	}
	// Bits 7-6 of byte 1 (LU ID TYPE in SPC-3) are obsolete for this
	// descriptor: the designator names the unit.
	if d[1]&0x20 != 0 { // NUL: a null device, nothing to copy to or from
		return copyTarget{err: copyAborted(0x0d, 0x02, off+1)}, nil
	}
	if d[1]&0x1f != 0 { // only direct access block devices
		return copyTarget{err: copyAborted(0x0d, 0x02, off+1)}, nil
	}
	desig := d[4:24]
	n := int(desig[3])
	if n > 16 {
		return copyTarget{}, invalidParam(off + 7)
	}
	want := desig[:4+n]
	lu := r.tgt.findDesignator(want)
	if lu == nil {
		return copyTarget{err: errCopyTargetUnreachable}, nil
	}
	lu.mu.Lock()
	tpc, bs := lu.cfg.ThirdPartyCopy, lu.blockSize
	lu.mu.Unlock()
	if !tpc {
		return copyTarget{err: errCopyTargetUnreachable}, nil
	}
	if bl := be32(d[28:32]) & 0xffffff; bl != bs {
		return copyTarget{err: copyAborted(0x26, 0x00, off+29)}, nil
	}
	return copyTarget{lu: lu}, nil
}

// findDesignator returns the unit of the target whose NAA or T10 vendor
// designator (VPD page 0x83) is d, header included, or nil.
func (t *Target) findDesignator(d []byte) *LogicalUnit {
	if t == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, lu := range t.units {
		if lu.hasDesignator(d) {
			return lu
		}
	}
	return nil
}

// hasDesignator reports whether d (a designation descriptor) is one of
// the unit's logical unit designators.
func (lu *LogicalUnit) hasDesignator(d []byte) bool {
	lu.mu.Lock()
	ids := lu.deviceIdentification(Nexus{})
	lu.mu.Unlock()
	for len(ids) >= 4 {
		n := 4 + int(ids[3])
		if n > len(ids) {
			return false
		}
		if ids[1]&0x30 == 0 && bytes.Equal(ids[:n][1:], d[1:]) && ids[0]&0x0f == d[0]&0x0f {
			return true
		}
		ids = ids[n:]
	}
	return false
}

// copyAllowed checks what a command to u from the issuing nexus would
// meet: reservations, a unit that is not ready, write protection.
func (r *request) copyAllowed(u *LogicalUnit, write bool) error {
	f := flagConflicts | flagMedium
	if write {
		f |= flagWrite
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.pr.spc2 != "" && u.pr.spc2 != r.nexus || u.pr.conflicts(r.nexus, f) {
		return errReservationConflict
	}
	switch {
	case u.cfg.Offline, u.ejected, u.stopped, u.sanitizing, u.sanitizeFailed:
		return errCopyTargetUnreachable
	case write && (u.cfg.ReadOnly || u.mode.swp):
		return copyAborted(0x27, 0x00, -1)
	}
	return nil
}

// copyBlocks copies blocks from src to dst in chunks, each written like
// any other write of dst, and returns the bytes copied.
func (r *request) copyBlocks(src, dst *LogicalUnit, srcLBA, dstLBA, blocks uint64) (uint64, error) {
	length := int64(blocks) << src.blockShift
	soff, doff := int64(srcLBA)<<src.blockShift, int64(dstLBA)<<dst.blockShift
	bufp := r.lu.buffers.Get(int(min(length, 1<<20)))
	defer r.lu.buffers.Put(bufp)
	buf := *bufp
	var done int64
	for done < length {
		if err := r.ctx.Err(); err != nil {
			return uint64(done), err
		}
		n := min(int64(len(buf)), length-done)
		if _, err := src.dev.ReadAt(buf[:n], soff+done); err != nil {
			return uint64(done), err
		}
		dst.writeGate.RLock()
		_, err := dst.dev.WriteAt(buf[:n], doff+done)
		dst.writeGate.RUnlock()
		if err != nil {
			return uint64(done), err
		}
		done += n
	}
	return uint64(done), dst.syncIf(false)
}

// holdCopyLocked keeps rec for RECEIVE COPY RESULTS, dropping the oldest
// record past maxHeldCopies. Called with lu.mu held.
func (lu *LogicalUnit) holdCopyLocked(rec *copyRecord) {
	for i, c := range lu.copies {
		if c.nexus == rec.nexus && c.listID == rec.listID {
			lu.copies = append(lu.copies[:i], lu.copies[i+1:]...)
			break
		}
	}
	if len(lu.copies) >= maxHeldCopies {
		lu.copies = lu.copies[1:]
	}
	lu.copies = append(lu.copies, rec)
}

// receiveCopyResults answers RECEIVE COPY RESULTS (SPC-4 §6.18): COPY
// STATUS of a held EXTENDED COPY of the nexus, and OPERATING PARAMETERS.
func (r *request) receiveCopyResults() error {
	alloc := int(be32(r.cdb[10:14]))
	var out []byte
	switch r.cdb[1] & 0x1f {
	case 0x00: // COPY STATUS
		listID := r.cdb[2]
		r.lu.mu.Lock()
		var rec copyRecord
		found := false
		for _, c := range r.lu.copies {
			if c.nexus == r.nexus && c.listID == listID {
				rec, found = *c, true
			}
		}
		r.lu.mu.Unlock()
		if !found {
			return invalidField(2, -1)
		}
		out = make([]byte, 12)
		binary.BigEndian.PutUint32(out[0:4], 8)
		switch {
		case !rec.done:
			out[4] = 0x00
		case rec.failed:
			out[4] = 0x02
		default:
			out[4] = 0x01
		}
		binary.BigEndian.PutUint16(out[5:7], rec.segments)
		// Transfer count in KiB (units F1h) when bytes would overflow.
		if rec.bytes <= 0xffffffff {
			binary.BigEndian.PutUint32(out[8:12], uint32(rec.bytes))
		} else {
			out[7] = 0xf1
			binary.BigEndian.PutUint32(out[8:12], uint32(min(rec.bytes>>10, 0xffffffff)))
		}
	default: // OPERATING PARAMETERS
		out = make([]byte, 44, 46)
		out[4] = 0x01 // SNLID: list identifier usage 11b is supported
		binary.BigEndian.PutUint16(out[8:10], maxCopyTargets)
		binary.BigEndian.PutUint16(out[10:12], maxCopySegments)
		binary.BigEndian.PutUint32(out[12:16], maxCopyListLength)
		binary.BigEndian.PutUint32(out[16:20], uint32(0xffff)<<r.lu.blockShift) // maximum segment length
		binary.BigEndian.PutUint32(out[24:28], 0)                               // held data limit: no held data
		binary.BigEndian.PutUint16(out[34:36], 1)                               // total concurrent copies
		out[36] = 1                                                             // maximum concurrent copies
		out[37] = byte(r.lu.blockShift)                                         // data segment granularity
		out = append(out, segmentBlockBlock, cscdIdentification)
		out[43] = 2
		binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	}
	r.sendData(out, alloc)
	return nil
}

// thirdPartyCopyPage builds the body of the third-party copy VPD page
// (SPC-4 §7.8.17): the supported commands, the parameter data and the
// supported descriptors.
func (lu *LogicalUnit) thirdPartyCopyPage() []byte {
	var b []byte
	add := func(typ uint16, body []byte) {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		h := make([]byte, 4, 4+len(body))
		binary.BigEndian.PutUint16(h[0:2], typ)
		binary.BigEndian.PutUint16(h[2:4], uint16(len(body)))
		b = append(append(b, h...), body...)
	}
	cmds := []byte{0x83, 1, 0x00, 0x84, 2, 0x00, 0x03}
	add(0x0001, append([]byte{byte(len(cmds))}, cmds...))
	params := make([]byte, 28)
	binary.BigEndian.PutUint16(params[4:6], maxCopyTargets)
	binary.BigEndian.PutUint16(params[6:8], maxCopySegments)
	binary.BigEndian.PutUint32(params[8:12], maxCopyListLength)
	add(0x0008, params)
	add(0x0004, []byte{2, segmentBlockBlock, cscdIdentification})
	return b
}
