package scsi

import "encoding/binary"

// vpdPages lists the vital product data pages of a unit in ascending order.
func (lu *LogicalUnit) vpdPages() []byte {
	pages := []byte{0x00, 0x80, 0x83}
	if lu.cfg.ThirdPartyCopy {
		pages = append(pages, 0x8f)
	}
	pages = append(pages, 0xb0, 0xb1)
	if lu.cfg.ThinProvisioning {
		pages = append(pages, 0xb2)
	}
	return pages
}

// vpdPage builds VPD page code as seen through nexus n (the device
// identification page names the target port).
func (lu *LogicalUnit) vpdPage(code byte, n Nexus) ([]byte, bool) {
	var body []byte
	switch code {
	case 0x00: // supported VPD pages
		body = lu.vpdPages()
	case 0x80: // unit serial number
		body = []byte(lu.cfg.Serial)
	case 0x83:
		body = lu.deviceIdentification(n)
	case 0x8f:
		if !lu.cfg.ThirdPartyCopy {
			return nil, false
		}
		body = lu.thirdPartyCopyPage()
	case 0xb0:
		body = lu.blockLimits()
	case 0xb1: // block device characteristics
		body = make([]byte, 0x3c)
		binary.BigEndian.PutUint16(body[0:2], lu.cfg.RotationRate)
		if lu.cfg.ThinProvisioning {
			// WABEREQ 01: after SANITIZE BLOCK ERASE reads succeed
			// (returning zeroes, LBPRZ).
			body[3] = 0x40
		}
		if lu.cfg.CryptoErase {
			// WACEREQ 01: after SANITIZE CRYPTOGRAPHIC ERASE reads
			// succeed (returning what the old data decrypts to under
			// the new key, or zeroes where nothing was written).
			body[3] |= 0x10
		}
	case 0xb2:
		if !lu.cfg.ThinProvisioning {
			return nil, false
		}
		body = make([]byte, 4)
		// LBPU, LBPWS, LBPWS10; LBPRZ (unmapped blocks read as zero);
		// provisioning type thin.
		body[1] = 0x80 | 0x40 | 0x20 | 0x04
		body[2] = 0x02
	default:
		return nil, false
	}
	b := make([]byte, 4, 4+len(body))
	b[1] = code
	binary.BigEndian.PutUint16(b[2:4], uint16(len(body)))
	return append(b, body...), true
}

// deviceIdentification builds the designators of VPD page 0x83: the
// unit's NAA and T10 vendor ID, and the relative port, target port name
// and target device name of the nexus.
func (lu *LogicalUnit) deviceIdentification(n Nexus) []byte {
	var b []byte
	add := func(codeSet, assocType byte, piv bool, id []byte) {
		h := []byte{codeSet, assocType, 0, byte(len(id))}
		if piv {
			h[0] |= 0x50 // protocol identifier iSCSI
			h[1] |= 0x80
		}
		b = append(b, h...)
		b = append(b, id...)
	}
	add(0x01, 0x03, false, lu.cfg.NAA) // binary, LU, NAA
	t10 := make([]byte, 8, 8+len(lu.cfg.Serial))
	putASCII(t10, lu.cfg.Vendor)
	add(0x02, 0x01, false, append(t10, lu.cfg.Serial...)) // ASCII, LU, T10 vendor ID
	if n.RelativePortID != 0 {
		rel := make([]byte, 4)
		binary.BigEndian.PutUint16(rel[2:], n.RelativePortID)
		add(0x01, 0x10|0x04, true, rel) // binary, target port, relative port
	}
	if g, ok := lu.portGroupOf(n.RelativePortID); ok {
		tpg := make([]byte, 4)
		binary.BigEndian.PutUint16(tpg[2:], g)
		add(0x01, 0x10|0x05, true, tpg) // binary, target port, target port group
	}
	if n.TargetPort != "" {
		add(0x03, 0x10|0x08, true, scsiNameString(n.TargetPort)) // UTF-8, target port, SCSI name
	}
	if n.TargetName != "" {
		add(0x03, 0x20|0x08, true, scsiNameString(n.TargetName)) // UTF-8, target device, SCSI name
	}
	return b
}

// scsiNameString null-terminates s and pads it to a multiple of four bytes
// (SPC-4 §7.8.6.11).
func scsiNameString(s string) []byte {
	n := (len(s) + 4) &^ 3
	b := make([]byte, n)
	copy(b, s)
	return b
}

// maxTransferBlocks is the transfer limit in logical blocks.
func (lu *LogicalUnit) maxTransferBlocks() uint32 {
	return uint32(lu.cfg.MaxTransferLength >> lu.blockShift)
}

// blockLimits builds the body of the block limits VPD page (SBC-4 §6.6.4).
func (lu *LogicalUnit) blockLimits() []byte {
	b := make([]byte, 0x3c)
	// WSNZ clear: WRITE SAME with zero blocks writes through the last LBA
	// (within the maximum WRITE SAME length).
	b[1] = lu.compareBlocks
	binary.BigEndian.PutUint16(b[2:4], uint16(1)<<lu.physExp)
	binary.BigEndian.PutUint32(b[4:8], lu.maxTransferBlocks())
	binary.BigEndian.PutUint32(b[8:12], max(uint32(1)<<lu.physExp, uint32(1<<20)>>lu.blockShift))
	if lu.cfg.ThinProvisioning {
		binary.BigEndian.PutUint32(b[16:20], maxUnmapBlocks)
		binary.BigEndian.PutUint32(b[20:24], maxUnmapDescs)
		binary.BigEndian.PutUint32(b[24:28], uint32(1)<<lu.physExp)
	}
	binary.BigEndian.PutUint64(b[32:40], maxWriteSameBlocks) // maximum WRITE SAME length
	// WRITE ATOMIC: any alignment and granularity, up to maxAtomicBlocks;
	// no atomic boundaries (the MAXIMUM ATOMIC TRANSFER LENGTH WITH
	// ATOMIC BOUNDARY and MAXIMUM ATOMIC BOUNDARY SIZE stay 0).
	if n := lu.maxAtomicBlocks(); n > 0 {
		binary.BigEndian.PutUint32(b[40:44], n)
		binary.BigEndian.PutUint32(b[44:48], 1)
		binary.BigEndian.PutUint32(b[48:52], 1)
	}
	return b
}

// maxAtomicBlocks is the MAXIMUM ATOMIC TRANSFER LENGTH: 1 MiB, within
// the transfer limit, the 16-bit length of WRITE ATOMIC(16) and what the
// device makes atomic for all its clients (atomicCap). 0 means the unit
// offers no WRITE ATOMIC.
func (lu *LogicalUnit) maxAtomicBlocks() uint32 {
	return min(lu.maxTransferBlocks(), uint32(1<<20)>>lu.blockShift, 0xffff, lu.atomicCap)
}
