package scsi

import "encoding/binary"

// Mode page codes the unit implements.
const (
	pageErrorRecovery = 0x01
	pageCaching       = 0x08
	pageControl       = 0x0a
	pageInfoExcept    = 0x1c
	pageAll           = 0x3f
)

// modePageCodes lists the pages in the order MODE SENSE returns them.
var modePageCodes = []byte{pageErrorRecovery, pageCaching, pageControl, pageInfoExcept}

// Page control values of MODE SENSE.
const (
	pcCurrent = iota
	pcChangeable
	pcDefault
	pcSaved
)

// modePage builds page code for page control pc from state m.
func (lu *LogicalUnit) modePage(code byte, pc int, m modeState) []byte {
	changeable := pc == pcChangeable
	var p []byte
	switch code {
	case pageErrorRecovery:
		p = make([]byte, 12)
		if !changeable {
			p[2] = 0xc0 // AWRE, ARRE
		}
	case pageCaching:
		p = make([]byte, 20)
		switch {
		case changeable:
			p[2] = 0x04 // WCE
		case m.wce:
			p[2] |= 0x04
		}
		if !changeable && m.rcd {
			p[2] |= 0x01
		}
	case pageControl:
		p = make([]byte, 12)
		if changeable {
			p[2] = 0x04 // D_SENSE
			p[4] = 0x08 // SWP
		} else {
			if m.dsense {
				p[2] |= 0x04
			}
			if m.swp {
				p[4] |= 0x08
			}
			p[3] = 0x10 // unrestricted reordering, QERR 0
			if m.tas {
				p[5] |= 0x40
			}
			binary.BigEndian.PutUint16(p[8:10], 0xffff) // busy timeout: unlimited
		}
	case pageInfoExcept:
		p = make([]byte, 12)
		if !changeable {
			p[2] = 0x08 // DEXCPT: no informational exceptions
		}
	default:
		return nil
	}
	p[0] = code
	p[1] = byte(len(p) - 2)
	return p
}

func (r *request) modeSense() error {
	six := r.cdb[0] == 0x1a
	dbd := r.cdb[1]&0x08 != 0
	llbaa := !six && r.cdb[1]&0x10 != 0
	pc := int(r.cdb[2] >> 6)
	page := r.cdb[2] & 0x3f
	subpage := r.cdb[3]
	var alloc int
	if six {
		alloc = int(r.cdb[4])
	} else {
		alloc = int(be16(r.cdb[7:9]))
	}
	if pc == pcSaved {
		return errSavingNotSupp
	}
	r.lu.mu.Lock()
	m := r.lu.mode
	wp := r.lu.cfg.ReadOnly || m.swp
	if pc == pcDefault {
		m = modeState{wce: r.lu.cfg.WriteCache, tas: true}
	}
	r.lu.mu.Unlock()
	var pages []byte
	switch {
	case page == pageAll && (subpage == 0 || subpage == 0xff):
		for _, c := range modePageCodes {
			pages = append(pages, r.lu.modePage(c, pc, m)...)
		}
	case subpage != 0:
		return invalidField(3, -1)
	default:
		p := r.lu.modePage(page, pc, m)
		if p == nil {
			return invalidField(2, 5)
		}
		pages = p
	}
	var desc []byte
	if !dbd {
		if llbaa {
			desc = make([]byte, 16)
			binary.BigEndian.PutUint64(desc[0:8], r.lu.nblocks)
			binary.BigEndian.PutUint32(desc[12:16], r.lu.blockSize)
		} else {
			desc = make([]byte, 8)
			binary.BigEndian.PutUint32(desc[0:4], uint32(min(r.lu.nblocks, 0xffffffff)))
			binary.BigEndian.PutUint32(desc[4:8], r.lu.blockSize) // byte 4 reserved, 24-bit length
		}
	}
	deviceSpecific := byte(0x10) // DPOFUA
	if wp {
		deviceSpecific |= 0x80 // WP
	}
	var out []byte
	if six {
		out = []byte{0, 0, deviceSpecific, byte(len(desc))}
		out = append(append(out, desc...), pages...)
		out[0] = byte(min(len(out)-1, 0xff))
	} else {
		out = make([]byte, 8)
		out[3] = deviceSpecific
		if llbaa && len(desc) > 0 {
			out[4] = 0x01 // LONGLBA
		}
		binary.BigEndian.PutUint16(out[6:8], uint16(len(desc)))
		out = append(append(out, desc...), pages...)
		binary.BigEndian.PutUint16(out[0:2], uint16(len(out)-2))
	}
	r.sendData(out, alloc)
	return nil
}

func (r *request) modeSelect() error {
	six := r.cdb[0] == 0x15
	if r.cdb[1]&0x01 != 0 { // SP: no page is saveable
		return invalidField(1, 0)
	}
	var plen, hdr int
	if six {
		plen, hdr = int(r.cdb[4]), 4
	} else {
		plen, hdr = int(be16(r.cdb[7:9])), 8
	}
	if plen == 0 {
		return nil
	}
	data, err := r.dataOut(int64(plen))
	if err != nil {
		return err
	}
	if plen < hdr {
		return errParamLength
	}
	var bdl int
	if six {
		bdl = int(data[3])
	} else {
		bdl = int(be16(data[6:8]))
	}
	if hdr+bdl > plen {
		return errParamLength
	}
	// A block descriptor may restate the block length but not change it.
	if bdl > 0 {
		d := data[hdr : hdr+bdl]
		var blen uint32
		switch {
		case bdl == 8:
			blen = be32(d[4:8]) & 0xffffff
		case bdl == 16 && !six && data[4]&0x01 != 0:
			blen = be32(d[12:16])
		default:
			return invalidParam(hdr - 1)
		}
		if blen != 0 && blen != r.lu.blockSize {
			return invalidParam(hdr + bdl - 1)
		}
	}
	r.lu.mu.Lock()
	defer r.lu.mu.Unlock()
	m := r.lu.mode
	for off := hdr + bdl; off < plen; {
		if plen-off < 2 {
			return errParamLength
		}
		code := data[off] & 0x3f
		if data[off]&0x40 != 0 { // SPF: no subpages are implemented
			return invalidParam(off)
		}
		n := int(data[off+1]) + 2
		if off+n > plen {
			return errParamLength
		}
		got := data[off : off+n]
		cur := r.lu.modePage(code, pcCurrent, m)
		mask := r.lu.modePage(code, pcChangeable, m)
		if cur == nil {
			return invalidParam(off)
		}
		if len(cur) != n {
			return invalidParam(off + 1)
		}
		for i := 2; i < n; i++ {
			if (got[i]^cur[i])&^mask[i] != 0 {
				return invalidParam(off + i)
			}
		}
		switch code {
		case pageCaching:
			m.wce = got[2]&0x04 != 0
		case pageControl:
			m.dsense = got[2]&0x04 != 0
			m.swp = got[4]&0x08 != 0
		}
		off += n
	}
	if m != r.lu.mode {
		if r.lu.mode.wce && !m.wce {
			// Turning the write cache off makes what it held durable.
			if err := r.lu.dev.Sync(); err != nil {
				return ioError(err, true)
			}
		}
		r.lu.mode = m
		r.lu.addUALocked(uaModeChanged, r.nexus)
	}
	return nil
}
