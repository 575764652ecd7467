package pdu

import "encoding/binary"

// Message is one iSCSI message type (SCSICommand, DataIn, NOPIn, ...): it
// names its opcode and translates between typed fields and a PDU.
// Encode fills the whole PDU, leaving the fields a connection assigns at
// send time (StatSN, ExpCmdSN and MaxCmdSN of target PDUs) for
// [PDU.SetStatSN] and [PDU.SetCommandWindow]. Decode checks the opcode and
// the fields RFC 7143 constrains, and references p.Data rather than
// copying it.
type Message interface {
	Opcode() Opcode
	Encode(p *PDU)
	Decode(p *PDU) error
}

// Every message type is a Message.
var (
	_ Message = (*SCSICommand)(nil)
	_ Message = (*SCSIResponse)(nil)
	_ Message = (*DataOut)(nil)
	_ Message = (*DataIn)(nil)
	_ Message = (*R2T)(nil)
	_ Message = (*LoginRequest)(nil)
	_ Message = (*LoginResponse)(nil)
	_ Message = (*TextRequest)(nil)
	_ Message = (*TextResponse)(nil)
	_ Message = (*LogoutRequest)(nil)
	_ Message = (*LogoutResponse)(nil)
	_ Message = (*NOPOut)(nil)
	_ Message = (*NOPIn)(nil)
	_ Message = (*TaskMgmtRequest)(nil)
	_ Message = (*TaskMgmtResponse)(nil)
	_ Message = (*AsyncMessage)(nil)
	_ Message = (*Reject)(nil)
	_ Message = (*SNACKRequest)(nil)
)

// Opcode returns OpSCSICommand.
func (*SCSICommand) Opcode() Opcode { return OpSCSICommand }

// Opcode returns OpSCSIResponse.
func (*SCSIResponse) Opcode() Opcode { return OpSCSIResponse }

// Opcode returns OpDataOut.
func (*DataOut) Opcode() Opcode { return OpDataOut }

// Opcode returns OpDataIn.
func (*DataIn) Opcode() Opcode { return OpDataIn }

// Opcode returns OpR2T.
func (*R2T) Opcode() Opcode { return OpR2T }

// Opcode returns OpLoginReq.
func (*LoginRequest) Opcode() Opcode { return OpLoginReq }

// Opcode returns OpLoginResp.
func (*LoginResponse) Opcode() Opcode { return OpLoginResp }

// Opcode returns OpTextReq.
func (*TextRequest) Opcode() Opcode { return OpTextReq }

// Opcode returns OpTextResp.
func (*TextResponse) Opcode() Opcode { return OpTextResp }

// Opcode returns OpLogoutReq.
func (*LogoutRequest) Opcode() Opcode { return OpLogoutReq }

// Opcode returns OpLogoutResp.
func (*LogoutResponse) Opcode() Opcode { return OpLogoutResp }

// Opcode returns OpNOPOut.
func (*NOPOut) Opcode() Opcode { return OpNOPOut }

// Opcode returns OpNOPIn.
func (*NOPIn) Opcode() Opcode { return OpNOPIn }

// Opcode returns OpTaskMgmtReq.
func (*TaskMgmtRequest) Opcode() Opcode { return OpTaskMgmtReq }

// Opcode returns OpTaskMgmtResp.
func (*TaskMgmtResponse) Opcode() Opcode { return OpTaskMgmtResp }

// Opcode returns OpAsyncMsg.
func (*AsyncMessage) Opcode() Opcode { return OpAsyncMsg }

// Opcode returns OpReject.
func (*Reject) Opcode() Opcode { return OpReject }

// Opcode returns OpSNACKReq.
func (*SNACKRequest) Opcode() Opcode { return OpSNACKReq }

// Offsets of the sequence-number fields every target PDU has in the same
// place (RFC 7143 §11.2.2 and each target message's layout).
const (
	offStatSN   = 24
	offExpCmdSN = 28
	offMaxCmdSN = 32
)

// SetStatSN sets the StatSN of a PDU a target sends (bytes 24-27 of every
// target opcode; a Data-In without status keeps the field reserved, so a
// connection leaves it alone).
func (p *PDU) SetStatSN(statSN uint32) {
	binary.BigEndian.PutUint32(p.Header[offStatSN:], statSN)
}

// StatSN returns the StatSN of a PDU a target sent.
func (p *PDU) StatSN() uint32 { return p.u32(offStatSN) }

// SetCommandWindow sets ExpCmdSN and MaxCmdSN of a PDU a target sends
// (bytes 28-35 of every target opcode).
func (p *PDU) SetCommandWindow(expCmdSN, maxCmdSN uint32) {
	binary.BigEndian.PutUint32(p.Header[offExpCmdSN:], expCmdSN)
	binary.BigEndian.PutUint32(p.Header[offMaxCmdSN:], maxCmdSN)
}

// CommandWindow returns ExpCmdSN and MaxCmdSN of a PDU a target sent.
func (p *PDU) CommandWindow() (expCmdSN, maxCmdSN uint32) {
	return p.u32(offExpCmdSN), p.u32(offMaxCmdSN)
}
