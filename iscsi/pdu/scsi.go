package pdu

import "encoding/binary"

// AHS types (RFC 7143 §11.2.2.1).
const (
	AHSExtendedCDB    = 1
	AHSBidiReadLength = 2
)

// SCSICommand is a SCSI Command PDU (opcode 0x01, RFC 7143 §11.3).
type SCSICommand struct {
	Immediate bool
	Final     bool
	Read      bool
	Write     bool
	// Attr is the task attribute: 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA.
	Attr                       uint8
	LUN                        uint64
	ITT                        uint32
	ExpectedDataTransferLength uint32
	CmdSN                      uint32
	ExpStatSN                  uint32
	// CDB is the whole CDB: the 16 bytes of the BHS followed by any
	// extended-CDB AHS bytes. Decode slices it from an internal buffer; it
	// is valid until the next Decode into the same message.
	CDB []byte
	// BidiReadLength is the expected bidirectional read data length; valid
	// when HasBidiReadLength.
	BidiReadLength    uint32
	HasBidiReadLength bool
	// Data is the immediate data carried in the PDU.
	Data []byte

	cdb [16 + 256]byte
}

// Encode writes m into p.
func (m *SCSICommand) Encode(p *PDU) {
	var flags byte
	if m.Final {
		flags |= 0x80
	}
	if m.Read {
		flags |= 0x40
	}
	if m.Write {
		flags |= 0x20
	}
	flags |= m.Attr & 0x07
	p.start(OpSCSICommand, m.Immediate, flags)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.ExpectedDataTransferLength)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	copy(p.Header[32:48], m.CDB)
	if len(m.CDB) > 16 {
		ext := m.CDB[16:]
		// AHSLength counts the reserved byte plus the CDB bytes.
		l := len(ext) + 1
		p.AHS = binary.BigEndian.AppendUint16(p.AHS, uint16(l))
		p.AHS = append(p.AHS, AHSExtendedCDB)
		p.AHS = append(p.AHS, 0)
		p.AHS = append(p.AHS, ext...)
		for len(p.AHS)%4 != 0 {
			p.AHS = append(p.AHS, 0)
		}
	}
	if m.HasBidiReadLength {
		p.AHS = append(p.AHS, 0, 5, AHSBidiReadLength, 0)
		p.AHS = binary.BigEndian.AppendUint32(p.AHS, m.BidiReadLength)
	}
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p, validating the AHS.
func (m *SCSICommand) Decode(p *PDU) error {
	if err := expect(p, OpSCSICommand); err != nil {
		return err
	}
	f := p.Header[1]
	m.Immediate = p.Immediate()
	m.Final = f&0x80 != 0
	m.Read = f&0x40 != 0
	m.Write = f&0x20 != 0
	m.Attr = f & 0x07
	m.LUN = p.LUN()
	m.ITT = p.ITT()
	m.ExpectedDataTransferLength = p.u32(20)
	m.CmdSN = p.u32(24)
	m.ExpStatSN = p.u32(28)
	n := copy(m.cdb[:], p.Header[32:48])
	m.HasBidiReadLength = false
	m.BidiReadLength = 0
	m.Data = p.Data
	if m.Attr > 4 {
		return fieldError(OpSCSICommand, "ATTR", "task attribute %d is reserved", m.Attr)
	}
	if !m.Final && !m.Write {
		return fieldError(OpSCSICommand, "F", "F bit clear on a command that sends no data")
	}
	if len(p.Data) > 0 && !m.Write {
		return fieldError(OpSCSICommand, "W", "immediate data on a command without the W bit")
	}
	err := walkAHS(p, func(typ byte, body []byte) error {
		switch typ {
		case AHSExtendedCDB:
			if n != 16 {
				return fieldError(OpSCSICommand, "AHS", "more than one extended CDB AHS")
			}
			// body is reserved byte + CDB bytes (padding excluded by walkAHS).
			if len(body) < 2 {
				return fieldError(OpSCSICommand, "AHS", "extended CDB AHS too short")
			}
			n += copy(m.cdb[16:], body[1:])
		case AHSBidiReadLength:
			if len(body) != 5 || m.HasBidiReadLength {
				return fieldError(OpSCSICommand, "AHS", "bad bidirectional read length AHS")
			}
			m.BidiReadLength = binary.BigEndian.Uint32(body[1:5])
			m.HasBidiReadLength = true
		default:
			return fieldError(OpSCSICommand, "AHS", "unknown AHS type %d", typ)
		}
		return nil
	})
	m.CDB = m.cdb[:n]
	return err
}

// walkAHS calls fn for each AHS in p with its type and body (AHSLength
// bytes following the type byte, padding excluded).
func walkAHS(p *PDU, fn func(typ byte, body []byte) error) error {
	a := p.AHS
	for len(a) > 0 {
		if len(a) < 4 {
			return fieldError(p.Opcode(), "AHS", "truncated AHS header")
		}
		l := int(binary.BigEndian.Uint16(a[0:2]))
		typ := a[2]
		// AHSLength counts the bytes after the type byte, including the
		// type-specific byte at offset 3.
		if l == 0 || 3+l > len(a) {
			return fieldError(p.Opcode(), "AHSLength", "AHS length %d exceeds TotalAHSLength", l)
		}
		if err := fn(typ, a[3:3+l]); err != nil {
			return err
		}
		adv := 3 + l
		adv += Padding(adv)
		if adv > len(a) {
			return fieldError(p.Opcode(), "AHSLength", "AHS padding exceeds TotalAHSLength")
		}
		a = a[adv:]
	}
	return nil
}

// SCSIResponse is a SCSI Response PDU (opcode 0x21, §11.4).
type SCSIResponse struct {
	BidiOverflow  bool
	BidiUnderflow bool
	Overflow      bool
	Underflow     bool
	Response      uint8
	Status        uint8
	ITT           uint32
	SNACKTag      uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	ExpDataSN     uint32
	BidiResidual  uint32
	ResidualCount uint32
	// Data is the data segment: a two-byte SenseLength, the sense data and
	// any response data. Use [AppendSenseData] and [SenseData].
	Data []byte
}

// Encode writes m into p.
func (m *SCSIResponse) Encode(p *PDU) {
	flags := byte(0x80)
	if m.BidiOverflow {
		flags |= 0x10
	}
	if m.BidiUnderflow {
		flags |= 0x08
	}
	if m.Overflow {
		flags |= 0x04
	}
	if m.Underflow {
		flags |= 0x02
	}
	p.start(OpSCSIResponse, false, flags)
	p.Header[2] = m.Response
	p.Header[3] = m.Status
	p.put32(16, m.ITT)
	p.put32(20, m.SNACKTag)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.put32(36, m.ExpDataSN)
	p.put32(40, m.BidiResidual)
	p.put32(44, m.ResidualCount)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *SCSIResponse) Decode(p *PDU) error {
	if err := expect(p, OpSCSIResponse); err != nil {
		return err
	}
	f := p.Header[1]
	m.BidiOverflow, m.BidiUnderflow = f&0x10 != 0, f&0x08 != 0
	m.Overflow, m.Underflow = f&0x04 != 0, f&0x02 != 0
	m.Response, m.Status = p.Header[2], p.Header[3]
	m.ITT = p.ITT()
	m.SNACKTag, m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(20), p.u32(24), p.u32(28), p.u32(32)
	m.ExpDataSN, m.BidiResidual, m.ResidualCount = p.u32(36), p.u32(40), p.u32(44)
	m.Data = p.Data
	if m.Overflow && m.Underflow {
		return fieldError(OpSCSIResponse, "O/U", "both overflow and underflow set")
	}
	if len(m.Data) == 1 {
		return fieldError(OpSCSIResponse, "SenseLength", "data segment of one byte")
	}
	if len(m.Data) >= 2 && int(binary.BigEndian.Uint16(m.Data))+2 > len(m.Data) {
		return fieldError(OpSCSIResponse, "SenseLength", "sense length exceeds data segment")
	}
	return nil
}

// AppendSenseData appends the SCSI Response data segment carrying sense to dst.
func AppendSenseData(dst, sense []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(sense)))
	return append(dst, sense...)
}

// SenseData returns the sense bytes of a SCSI Response data segment.
func SenseData(data []byte) []byte {
	if len(data) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(data))
	if 2+n > len(data) {
		return data[2:]
	}
	return data[2 : 2+n]
}

// DataOut is a SCSI Data-Out PDU (opcode 0x05, §11.7).
type DataOut struct {
	Final        bool
	LUN          uint64
	ITT          uint32
	TTT          uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
	Data         []byte
}

// Encode writes m into p.
func (m *DataOut) Encode(p *PDU) {
	p.start(OpDataOut, false, flag(m.Final, 0x80))
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(28, m.ExpStatSN)
	p.put32(36, m.DataSN)
	p.put32(40, m.BufferOffset)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p's header. It does not look at the data segment, so
// it may be called after [Reader.ReadHeader] and before the data is read.
func (m *DataOut) Decode(p *PDU) error {
	if err := expect(p, OpDataOut); err != nil {
		return err
	}
	m.Final = p.Final()
	m.LUN = p.LUN()
	m.ITT = p.ITT()
	m.TTT = p.u32(20)
	m.ExpStatSN = p.u32(28)
	m.DataSN = p.u32(36)
	m.BufferOffset = p.u32(40)
	m.Data = p.Data
	if p.TotalAHSLength() != 0 {
		return fieldError(OpDataOut, "TotalAHSLength", "Data-Out carries no AHS")
	}
	return nil
}

// DataIn is a SCSI Data-In PDU (opcode 0x25, §11.7).
type DataIn struct {
	Final         bool
	Acknowledge   bool
	Overflow      bool
	Underflow     bool
	HasStatus     bool
	Status        uint8
	LUN           uint64
	ITT           uint32
	TTT           uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	DataSN        uint32
	BufferOffset  uint32
	ResidualCount uint32
	Data          []byte
}

// Encode writes m into p.
func (m *DataIn) Encode(p *PDU) {
	flags := flag(m.Final, 0x80) | flag(m.Acknowledge, 0x40)
	if m.HasStatus {
		flags |= 0x01 | flag(m.Overflow, 0x04) | flag(m.Underflow, 0x02)
	}
	p.start(OpDataIn, false, flags)
	if m.HasStatus {
		p.Header[3] = m.Status
		p.put32(24, m.StatSN)
		p.put32(44, m.ResidualCount)
	}
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.put32(36, m.DataSN)
	p.put32(40, m.BufferOffset)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *DataIn) Decode(p *PDU) error {
	if err := expect(p, OpDataIn); err != nil {
		return err
	}
	f := p.Header[1]
	m.Final, m.Acknowledge = f&0x80 != 0, f&0x40 != 0
	m.Overflow, m.Underflow, m.HasStatus = f&0x04 != 0, f&0x02 != 0, f&0x01 != 0
	m.Status = p.Header[3]
	m.LUN = p.LUN()
	m.ITT = p.ITT()
	m.TTT, m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(20), p.u32(24), p.u32(28), p.u32(32)
	m.DataSN, m.BufferOffset, m.ResidualCount = p.u32(36), p.u32(40), p.u32(44)
	m.Data = p.Data
	if m.HasStatus && !m.Final {
		return fieldError(OpDataIn, "S", "status on a Data-In without the F bit")
	}
	if m.Overflow && m.Underflow {
		return fieldError(OpDataIn, "O/U", "both overflow and underflow set")
	}
	return nil
}

// R2T is a Ready To Transfer PDU (opcode 0x31, §11.8).
type R2T struct {
	LUN                       uint64
	ITT                       uint32
	TTT                       uint32
	StatSN                    uint32
	ExpCmdSN                  uint32
	MaxCmdSN                  uint32
	R2TSN                     uint32
	BufferOffset              uint32
	DesiredDataTransferLength uint32
}

// Encode writes m into p.
func (m *R2T) Encode(p *PDU) {
	p.start(OpR2T, false, 0x80)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.put32(36, m.R2TSN)
	p.put32(40, m.BufferOffset)
	p.put32(44, m.DesiredDataTransferLength)
	p.setLengths()
}

// Decode reads m from p.
func (m *R2T) Decode(p *PDU) error {
	if err := expect(p, OpR2T); err != nil {
		return err
	}
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(20), p.u32(24), p.u32(28), p.u32(32)
	m.R2TSN, m.BufferOffset, m.DesiredDataTransferLength = p.u32(36), p.u32(40), p.u32(44)
	if m.DesiredDataTransferLength == 0 {
		return fieldError(OpR2T, "DesiredDataTransferLength", "zero")
	}
	return nil
}

func flag(b bool, v byte) byte {
	if b {
		return v
	}
	return 0
}

func expect(p *PDU, op Opcode) error {
	if got := p.Opcode(); got != op {
		return protocolError(op, "decoding a %v PDU as %v", got, op)
	}
	return nil
}
