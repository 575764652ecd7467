package scsi

// MaxLUN is the highest LUN a Target accepts: the flat space addressing
// method (SAM-5 §4.7.7) carries 14 bits.
const MaxLUN = 16383

// EncodeLUN returns the 8-byte SAM LUN field for lun: peripheral device
// addressing for LUNs below 256, flat space addressing above.
func EncodeLUN(lun uint16) uint64 {
	if lun < 256 {
		return uint64(lun) << 48
	}
	return (uint64(0x40|(lun>>8)&0x3f)<<8 | uint64(lun&0xff)) << 48
}

// DecodeLUN returns the LUN addressed by the 8-byte SAM LUN field. It
// accepts the peripheral and flat space addressing methods of a single level
// LUN and reports false for any other form.
func DecodeLUN(raw uint64) (uint16, bool) {
	if raw&0x0000ffffffffffff != 0 {
		return 0, false
	}
	first := uint16(raw >> 48)
	switch first >> 14 {
	case 0: // peripheral device addressing, bus 0
		if first&0x3f00 != 0 {
			return 0, false
		}
		return first & 0xff, true
	case 1: // flat space addressing
		return first & 0x3fff, true
	}
	return 0, false
}
