// Package pdu encodes and decodes iSCSI protocol data units (RFC 7143 §11).
//
// A PDU travels as a 48-byte basic header segment (BHS), optional additional
// header segments (AHS), an optional header digest, a data segment padded to
// four bytes and an optional data digest. [PDU] holds one in its raw form;
// the message types ([SCSICommand], [DataIn], [LoginRequest], …) each
// translate between a PDU and typed fields, one struct per message in the
// manner of pgproto3. [Reader] and [Writer] move PDUs over a connection,
// with digests, into and out of reused buffers.
package pdu

import (
	"encoding/binary"
	"fmt"
)

// BHSLen is the length of the basic header segment.
const BHSLen = 48

// MaxDataSegmentLength is the largest data segment the 24-bit length field
// can describe.
const MaxDataSegmentLength = 1<<24 - 1

// ReservedTag is the all-ones initiator/target task tag that means "none".
const ReservedTag = 0xffffffff

// Opcode is an iSCSI PDU opcode (the low six bits of BHS byte 0).
type Opcode uint8

// Initiator opcodes.
const (
	OpNOPOut      Opcode = 0x00
	OpSCSICommand Opcode = 0x01
	OpTaskMgmtReq Opcode = 0x02
	OpLoginReq    Opcode = 0x03
	OpTextReq     Opcode = 0x04
	OpDataOut     Opcode = 0x05
	OpLogoutReq   Opcode = 0x06
	OpSNACKReq    Opcode = 0x10
)

// Target opcodes.
const (
	OpNOPIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMsg     Opcode = 0x32
	OpReject       Opcode = 0x3f
)

var opcodeNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResponse: "SCSI Response", OpTaskMgmtResp: "Task Management Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "R2T", OpAsyncMsg: "Asynchronous Message", OpReject: "Reject",
}

// String returns the RFC 7143 name of the opcode.
func (o Opcode) String() string {
	if n, ok := opcodeNames[o]; ok {
		return n
	}
	return fmt.Sprintf("opcode 0x%02x", uint8(o))
}

// Known reports whether o is an opcode RFC 7143 defines.
func (o Opcode) Known() bool { _, ok := opcodeNames[o]; return ok }

// FromInitiator reports whether o is sent by initiators.
func (o Opcode) FromInitiator() bool { return o.Known() && o < 0x20 }

// PDU is one PDU in wire form. Header is the BHS; AHS holds the additional
// header segments exactly as on the wire (a multiple of four bytes); Data is
// the data segment without padding. Decoders of message types reference
// Data rather than copy it.
type PDU struct {
	Header [BHSLen]byte
	AHS    []byte
	Data   []byte

	buf []byte // reusable backing store for Data, owned by Reader.ReadPDU
}

// Opcode returns the PDU's opcode.
func (p *PDU) Opcode() Opcode { return Opcode(p.Header[0] & 0x3f) }

// Immediate reports the I bit (immediate delivery).
func (p *PDU) Immediate() bool { return p.Header[0]&0x40 != 0 }

// Final reports the F bit.
func (p *PDU) Final() bool { return p.Header[1]&0x80 != 0 }

// TotalAHSLength returns the AHS length in bytes as the header states it.
func (p *PDU) TotalAHSLength() int { return int(p.Header[4]) * 4 }

// DataSegmentLength returns the data segment length as the header states it.
func (p *PDU) DataSegmentLength() int {
	return int(p.Header[5])<<16 | int(p.Header[6])<<8 | int(p.Header[7])
}

// LUN returns bytes 8-15 of the header: the LUN field for opcodes that have one.
func (p *PDU) LUN() uint64 { return binary.BigEndian.Uint64(p.Header[8:16]) }

// ITT returns the initiator task tag.
func (p *PDU) ITT() uint32 { return binary.BigEndian.Uint32(p.Header[16:20]) }

// CmdSN returns bytes 24-27, the CmdSN of initiator PDUs that carry one.
func (p *PDU) CmdSN() uint32 { return binary.BigEndian.Uint32(p.Header[24:28]) }

// ExpStatSN returns bytes 28-31, the ExpStatSN of initiator PDUs.
func (p *PDU) ExpStatSN() uint32 { return binary.BigEndian.Uint32(p.Header[28:32]) }

// Reset clears the PDU for reuse, keeping its buffers.
func (p *PDU) Reset() {
	p.Header = [BHSLen]byte{}
	p.AHS = p.AHS[:0]
	p.Data = nil
}

// setLengths fills TotalAHSLength and DataSegmentLength from AHS and Data.
func (p *PDU) setLengths() {
	p.Header[4] = byte(len(p.AHS) / 4)
	n := len(p.Data)
	p.Header[5], p.Header[6], p.Header[7] = byte(n>>16), byte(n>>8), byte(n)
}

// start begins encoding: clears the header and writes opcode and flags.
func (p *PDU) start(op Opcode, immediate bool, flags byte) {
	p.Header = [BHSLen]byte{}
	p.AHS = p.AHS[:0]
	p.Data = nil
	p.Header[0] = byte(op)
	if immediate {
		p.Header[0] |= 0x40
	}
	p.Header[1] = flags
}

func (p *PDU) u32(off int) uint32 { return binary.BigEndian.Uint32(p.Header[off : off+4]) }
func (p *PDU) put32(off int, v uint32) {
	binary.BigEndian.PutUint32(p.Header[off:off+4], v)
}
func (p *PDU) u16(off int) uint16 { return binary.BigEndian.Uint16(p.Header[off : off+2]) }
func (p *PDU) put16(off int, v uint16) {
	binary.BigEndian.PutUint16(p.Header[off:off+2], v)
}

// Padding returns the number of pad bytes that follow a data segment of n bytes.
func Padding(n int) int { return (4 - n&3) & 3 }
