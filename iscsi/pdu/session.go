package pdu

import "encoding/binary"

// Login stages (CSG/NSG values, RFC 7143 §11.12.3).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginRequest is a Login Request PDU (opcode 0x03, §11.12).
type LoginRequest struct {
	Transit    bool
	Continue   bool
	CSG        uint8
	NSG        uint8
	VersionMax uint8
	VersionMin uint8
	ISID       [6]byte
	TSIH       uint16
	ITT        uint32
	CID        uint16
	CmdSN      uint32
	ExpStatSN  uint32
	Data       []byte
}

// Encode writes m into p.
func (m *LoginRequest) Encode(p *PDU) {
	p.start(OpLoginReq, true, flag(m.Transit, 0x80)|flag(m.Continue, 0x40)|(m.CSG&3)<<2|(m.NSG&3))
	p.Header[2], p.Header[3] = m.VersionMax, m.VersionMin
	copy(p.Header[8:14], m.ISID[:])
	p.put16(14, m.TSIH)
	p.put32(16, m.ITT)
	p.put16(20, m.CID)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p and checks the stage fields.
func (m *LoginRequest) Decode(p *PDU) error {
	if err := expect(p, OpLoginReq); err != nil {
		return err
	}
	f := p.Header[1]
	m.Transit, m.Continue = f&0x80 != 0, f&0x40 != 0
	m.CSG, m.NSG = (f>>2)&3, f&3
	m.VersionMax, m.VersionMin = p.Header[2], p.Header[3]
	copy(m.ISID[:], p.Header[8:14])
	m.TSIH = p.u16(14)
	m.ITT = p.ITT()
	m.CID = p.u16(20)
	m.CmdSN, m.ExpStatSN = p.u32(24), p.u32(28)
	m.Data = p.Data
	if m.Transit && m.Continue {
		return fieldError(OpLoginReq, "T/C", "both Transit and Continue set")
	}
	if m.CSG == 2 || (m.Transit && (m.NSG == 2 || m.NSG <= m.CSG)) {
		return fieldError(OpLoginReq, "CSG/NSG", "invalid stage transition %d -> %d", m.CSG, m.NSG)
	}
	if p.TotalAHSLength() != 0 {
		return fieldError(OpLoginReq, "TotalAHSLength", "Login Request carries no AHS")
	}
	return nil
}

// LoginResponse is a Login Response PDU (opcode 0x23, §11.13).
type LoginResponse struct {
	Transit       bool
	Continue      bool
	CSG           uint8
	NSG           uint8
	VersionMax    uint8
	VersionActive uint8
	ISID          [6]byte
	TSIH          uint16
	ITT           uint32
	StatSN        uint32
	ExpCmdSN      uint32
	MaxCmdSN      uint32
	StatusClass   uint8
	StatusDetail  uint8
	Data          []byte
}

// Encode writes m into p.
func (m *LoginResponse) Encode(p *PDU) {
	p.start(OpLoginResp, false, flag(m.Transit, 0x80)|flag(m.Continue, 0x40)|(m.CSG&3)<<2|(m.NSG&3))
	p.Header[2], p.Header[3] = m.VersionMax, m.VersionActive
	copy(p.Header[8:14], m.ISID[:])
	p.put16(14, m.TSIH)
	p.put32(16, m.ITT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.Header[36], p.Header[37] = m.StatusClass, m.StatusDetail
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *LoginResponse) Decode(p *PDU) error {
	if err := expect(p, OpLoginResp); err != nil {
		return err
	}
	f := p.Header[1]
	m.Transit, m.Continue = f&0x80 != 0, f&0x40 != 0
	m.CSG, m.NSG = (f>>2)&3, f&3
	m.VersionMax, m.VersionActive = p.Header[2], p.Header[3]
	copy(m.ISID[:], p.Header[8:14])
	m.TSIH = p.u16(14)
	m.ITT = p.ITT()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(24), p.u32(28), p.u32(32)
	m.StatusClass, m.StatusDetail = p.Header[36], p.Header[37]
	m.Data = p.Data
	if m.Transit && m.Continue {
		return fieldError(OpLoginResp, "T/C", "both Transit and Continue set")
	}
	return nil
}

// TextRequest is a Text Request PDU (opcode 0x04, §11.10).
type TextRequest struct {
	Immediate bool
	Final     bool
	Continue  bool
	LUN       uint64
	ITT       uint32
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte
}

// Encode writes m into p.
func (m *TextRequest) Encode(p *PDU) {
	p.start(OpTextReq, m.Immediate, flag(m.Final, 0x80)|flag(m.Continue, 0x40))
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *TextRequest) Decode(p *PDU) error {
	if err := expect(p, OpTextReq); err != nil {
		return err
	}
	m.Immediate = p.Immediate()
	m.Final, m.Continue = p.Final(), p.Header[1]&0x40 != 0
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.CmdSN, m.ExpStatSN = p.u32(20), p.u32(24), p.u32(28)
	m.Data = p.Data
	if m.Final && m.Continue {
		return fieldError(OpTextReq, "F/C", "both Final and Continue set")
	}
	return nil
}

// TextResponse is a Text Response PDU (opcode 0x24, §11.11).
type TextResponse struct {
	Final    bool
	Continue bool
	LUN      uint64
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	Data     []byte
}

// Encode writes m into p.
func (m *TextResponse) Encode(p *PDU) {
	p.start(OpTextResp, false, flag(m.Final, 0x80)|flag(m.Continue, 0x40))
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *TextResponse) Decode(p *PDU) error {
	if err := expect(p, OpTextResp); err != nil {
		return err
	}
	m.Final, m.Continue = p.Final(), p.Header[1]&0x40 != 0
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(20), p.u32(24), p.u32(28), p.u32(32)
	m.Data = p.Data
	if m.Final && m.Continue {
		return fieldError(OpTextResp, "F/C", "both Final and Continue set")
	}
	return nil
}

// Logout reason codes (§11.14.1).
const (
	LogoutCloseSession    = 0
	LogoutCloseConnection = 1
	LogoutRemoveRecovery  = 2
)

// LogoutRequest is a Logout Request PDU (opcode 0x06, §11.14).
type LogoutRequest struct {
	Immediate  bool
	ReasonCode uint8
	ITT        uint32
	CID        uint16
	CmdSN      uint32
	ExpStatSN  uint32
}

// Encode writes m into p.
func (m *LogoutRequest) Encode(p *PDU) {
	p.start(OpLogoutReq, m.Immediate, 0x80|m.ReasonCode&0x7f)
	p.put32(16, m.ITT)
	p.put16(20, m.CID)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	p.setLengths()
}

// Decode reads m from p.
func (m *LogoutRequest) Decode(p *PDU) error {
	if err := expect(p, OpLogoutReq); err != nil {
		return err
	}
	m.Immediate = p.Immediate()
	m.ReasonCode = p.Header[1] & 0x7f
	m.ITT, m.CID = p.ITT(), p.u16(20)
	m.CmdSN, m.ExpStatSN = p.u32(24), p.u32(28)
	if !p.Final() {
		return fieldError(OpLogoutReq, "F", "F bit must be set")
	}
	if m.ReasonCode > LogoutRemoveRecovery {
		return fieldError(OpLogoutReq, "ReasonCode", "reserved reason code %d", m.ReasonCode)
	}
	return nil
}

// Logout response codes (§11.15.1).
const (
	LogoutResponseSuccess       = 0
	LogoutResponseCIDNotFound   = 1
	LogoutResponseNoRecovery    = 2
	LogoutResponseCleanupFailed = 3
)

// LogoutResponse is a Logout Response PDU (opcode 0x26, §11.15).
type LogoutResponse struct {
	Response    uint8
	ITT         uint32
	StatSN      uint32
	ExpCmdSN    uint32
	MaxCmdSN    uint32
	Time2Wait   uint16
	Time2Retain uint16
}

// Encode writes m into p.
func (m *LogoutResponse) Encode(p *PDU) {
	p.start(OpLogoutResp, false, 0x80)
	p.Header[2] = m.Response
	p.put32(16, m.ITT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.put16(40, m.Time2Wait)
	p.put16(42, m.Time2Retain)
	p.setLengths()
}

// Decode reads m from p.
func (m *LogoutResponse) Decode(p *PDU) error {
	if err := expect(p, OpLogoutResp); err != nil {
		return err
	}
	m.Response, m.ITT = p.Header[2], p.ITT()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(24), p.u32(28), p.u32(32)
	m.Time2Wait, m.Time2Retain = p.u16(40), p.u16(42)
	return nil
}

// NOPOut is a NOP-Out PDU (opcode 0x00, §11.18).
type NOPOut struct {
	Immediate bool
	LUN       uint64
	ITT       uint32
	TTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
	Data      []byte
}

// Encode writes m into p.
func (m *NOPOut) Encode(p *PDU) {
	p.start(OpNOPOut, m.Immediate, 0x80)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *NOPOut) Decode(p *PDU) error {
	if err := expect(p, OpNOPOut); err != nil {
		return err
	}
	m.Immediate = p.Immediate()
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.CmdSN, m.ExpStatSN = p.u32(20), p.u32(24), p.u32(28)
	m.Data = p.Data
	if !p.Final() {
		return fieldError(OpNOPOut, "F", "F bit must be set")
	}
	if m.ITT == ReservedTag && m.TTT == ReservedTag {
		return fieldError(OpNOPOut, "ITT", "both ITT and TTT are reserved")
	}
	if m.ITT == ReservedTag && !m.Immediate {
		return fieldError(OpNOPOut, "I", "a NOP-Out answering a NOP-In must be immediate")
	}
	return nil
}

// NOPIn is a NOP-In PDU (opcode 0x20, §11.19).
type NOPIn struct {
	LUN      uint64
	ITT      uint32
	TTT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	Data     []byte
}

// Encode writes m into p.
func (m *NOPIn) Encode(p *PDU) {
	p.start(OpNOPIn, false, 0x80)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *NOPIn) Decode(p *PDU) error {
	if err := expect(p, OpNOPIn); err != nil {
		return err
	}
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(20), p.u32(24), p.u32(28), p.u32(32)
	m.Data = p.Data
	return nil
}
