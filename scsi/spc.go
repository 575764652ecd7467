package scsi

import (
	"encoding/binary"
)

// Version descriptors claimed in standard INQUIRY data (SPC-4 table 150).
var versionDescriptors = []uint16{
	0x00a0, // SAM-5 (no version claimed)
	0x0960, // iSCSI (no version claimed)
	0x0460, // SPC-4 (no version claimed)
	0x04c0, // SBC-3 (no version claimed): initiators that predate SBC-4 look for it
	0x0600, // SBC-4 (no version claimed)
}

func (r *request) testUnitReady() error { return nil }

func (r *request) inquiry() error {
	evpd := r.cdb[1]&0x01 != 0
	page := r.cdb[2]
	alloc := int(be16(r.cdb[3:5]))
	if !evpd {
		if page != 0 {
			return invalidField(2, -1)
		}
		b := r.lu.standardInquiry(0x00)
		if r.lu.cfg.Removable {
			b[1] |= 0x80 // RMB
		}
		switch {
		case r.lu.explicitALUA.Load():
			b[5] |= 0x30 // TPGS 11b: implicit and explicit ALUA
		case r.lu.aluaOn.Load():
			b[5] |= 0x10 // TPGS 01b: implicit ALUA only (a group is remote)
		}
		r.sendData(b, alloc)
		return nil
	}
	data, ok := r.lu.vpdPage(page, r.cmd.Nexus)
	if !ok {
		return invalidField(2, -1)
	}
	r.sendData(data, alloc)
	return nil
}

// standardInquiry builds standard INQUIRY data with the given peripheral
// qualifier and device type byte.
func (lu *LogicalUnit) standardInquiry(peripheral byte) []byte {
	return standardInquiryData(peripheral, lu.cfg.Vendor, lu.cfg.Product, lu.cfg.Revision)
}

// standardInquiryData builds standard INQUIRY data (SPC-4 §6.6.2).
func standardInquiryData(peripheral byte, vendor, product, revision string) []byte {
	b := make([]byte, 58+2*len(versionDescriptors))
	b[0] = peripheral
	b[2] = 0x06 // SPC-4
	b[3] = 0x12 // HISUP, response data format 2
	b[4] = byte(len(b) - 5)
	b[7] = 0x02 // CMDQUE
	putASCII(b[8:16], vendor)
	putASCII(b[16:32], product)
	putASCII(b[32:36], revision)
	for i, v := range versionDescriptors {
		binary.BigEndian.PutUint16(b[58+2*i:], v)
	}
	return b
}

// putASCII copies s into b left-aligned and pads with spaces.
func putASCII(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}

func (r *request) requestSense() error {
	desc := r.cdb[1]&0x01 != 0
	alloc := int(r.cdb[4])
	lu := r.lu
	lu.mu.Lock()
	s := lu.takeUALocked(r.nexus, true)
	if s == nil && len(lu.portGroups) > 0 {
		if g := lu.groupOfLocked(r.cmd.Nexus.RelativePortID); g != nil {
			s = accessSense(g.State, nil)
		}
	}
	if s == nil {
		// The conditions a media access would meet, as sense data.
		switch {
		case lu.sanitizing:
			s = errSanitizing
		case lu.cfg.Offline:
			s = errNotReadyOffline
		case lu.ejected:
			s = errMediumNotPresent
		case lu.stopped:
			s = errNotReadyStopped
		case lu.sanitizeFailed:
			s = errSanitizeFailed
		default:
			s = newSense(SenseNoSense, 0, 0)
		}
	}
	lu.mu.Unlock()
	r.sendData(s.Encode(desc), alloc)
	return nil
}

// reserve runs RESERVE(6) and RESERVE(10) (SPC-2 §7.21); with a shared
// store the reservation is committed to it like PERSISTENT RESERVE OUT.
func (r *request) reserve() error {
	if r.cdb[0] == 0x56 && (r.cdb[1]&0x12 != 0) {
		return invalidField(1, 4) // third-party reservations are obsolete
	}
	return r.spc2(r.reserveLocked)
}

func (r *request) reserveLocked() error {
	p := &r.lu.pr
	if p.spc2 != "" && p.spc2 != r.nexus || r.lu.prRegisteredLocked() {
		// SPC-2 reservations and persistent reservations exclude each
		// other (SPC-4 §5.13.3, CRH).
		return errReservationConflict
	}
	p.spc2 = r.nexus
	return nil
}

// release runs RELEASE(6) and RELEASE(10) (SPC-2 §7.17).
func (r *request) release() error { return r.spc2(r.releaseLocked) }

func (r *request) releaseLocked() error {
	p := &r.lu.pr
	if p.resType != 0 {
		return errReservationConflict
	}
	// Releasing a reservation held by another nexus (or none) is not an
	// error and changes nothing (SPC-2 §7.17).
	if p.spc2 == r.nexus {
		p.spc2 = ""
	}
	return nil
}

// spc2 runs an SPC-2 reservation command (run, with lu.mu held) on the
// unit's state, or through its shared store when it has one.
func (r *request) spc2(run func() error) error {
	if r.lu.prShared != nil {
		return r.lu.sharedPROut(r.ctx, run)
	}
	r.lu.mu.Lock()
	defer r.lu.mu.Unlock()
	return run()
}

// reportOpcodes answers REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35)
// from the command table.
func (r *request) reportOpcodes() error {
	rctd := r.cdb[2]&0x80 != 0
	options := r.cdb[2] & 0x07
	reqOp := r.cdb[3]
	reqSA := uint16(be16(r.cdb[4:6]))
	alloc := int(be32(r.cdb[6:10]))
	var out []byte
	switch options {
	case 0:
		out = make([]byte, 4)
		for _, o := range opcodes {
			if !r.lu.supported(o) {
				continue
			}
			var d [8]byte
			d[0] = o.code()
			if o.hasSA {
				binary.BigEndian.PutUint16(d[2:4], o.serviceAction())
				d[5] |= 0x01 // SERVACTV
			}
			if rctd {
				d[5] |= 0x02 // CTDP
			}
			binary.BigEndian.PutUint16(d[6:8], uint16(o.cdbLen()))
			out = append(out, d[:]...)
			if rctd {
				out = append(out, timeoutsDescriptor()...)
			}
		}
		binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	case 1, 2, 3:
		entries := opcodeIndex[reqOp]
		var found *opcode
		hasSA := len(entries) > 0 && entries[0].hasSA
		switch {
		case options == 1 && hasSA:
			return invalidField(2, 2)
		case options == 2 && len(entries) > 0 && !hasSA:
			return invalidField(2, 2)
		}
		for _, o := range entries {
			if (!o.hasSA || o.serviceAction() == reqSA) && r.lu.supported(o) {
				found = o
			}
		}
		out = make([]byte, 4)
		if found == nil {
			out[1] = 0x01 // not supported
		} else {
			out[1] = 0x03 // supported in conformance with a standard
			if rctd {
				out[1] |= 0x80 // CTDP
			}
			binary.BigEndian.PutUint16(out[2:4], uint16(found.cdbLen()))
			out = append(out, found.usage...)
			if rctd {
				out = append(out, timeoutsDescriptor()...)
			}
		}
	default:
		return invalidField(2, 2)
	}
	r.sendData(out, alloc)
	return nil
}

// timeoutsDescriptor is the command timeouts descriptor (SPC-4 §6.35.4):
// no nominal timeout, 30 s recommended.
func timeoutsDescriptor() []byte {
	d := make([]byte, 12)
	binary.BigEndian.PutUint16(d[0:2], 0x0a)
	binary.BigEndian.PutUint32(d[8:12], 30)
	return d
}

// reportTMFs answers REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS with what
// the transports of this package deliver: ABORT TASK, ABORT TASK SET,
// CLEAR TASK SET, LOGICAL UNIT RESET and target reset.
func (r *request) reportTMFs() error {
	repd := r.cdb[2]&0x80 != 0
	alloc := int(be32(r.cdb[6:10]))
	out := make([]byte, 4, 16)
	out[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02 // ATS ATSS CTSS LURS TRS
	if repd {
		out = out[:16]
		out[3] = 0x0c
	}
	r.sendData(out, alloc)
	return nil
}
