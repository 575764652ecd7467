package pdu

import "encoding/binary"

// Task management function codes (§11.5.1).
const (
	TMFAbortTask        = 1
	TMFAbortTaskSet     = 2
	TMFClearACA         = 3
	TMFClearTaskSet     = 4
	TMFLogicalUnitReset = 5
	TMFTargetWarmReset  = 6
	TMFTargetColdReset  = 7
	TMFTaskReassign     = 8
)

// Task management response codes (§11.6.1).
const (
	TMFResponseComplete          = 0
	TMFResponseNoTask            = 1
	TMFResponseNoLUN             = 2
	TMFResponseTaskAllegiant     = 3
	TMFResponseNoReassignSupport = 4
	TMFResponseNotSupported      = 5
	TMFResponseAuthFailed        = 6
	TMFResponseRejected          = 255
)

// TaskMgmtRequest is a Task Management Function Request PDU (opcode 0x02, §11.5).
type TaskMgmtRequest struct {
	Immediate bool
	Function  uint8
	LUN       uint64
	ITT       uint32
	// RTT is the referenced task tag (ABORT TASK, TASK REASSIGN).
	RTT       uint32
	CmdSN     uint32
	ExpStatSN uint32
	RefCmdSN  uint32
	ExpDataSN uint32
}

// Encode writes m into p.
func (m *TaskMgmtRequest) Encode(p *PDU) {
	p.start(OpTaskMgmtReq, m.Immediate, 0x80|m.Function&0x7f)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.RTT)
	p.put32(24, m.CmdSN)
	p.put32(28, m.ExpStatSN)
	p.put32(32, m.RefCmdSN)
	p.put32(36, m.ExpDataSN)
	p.setLengths()
}

// Decode reads m from p.
func (m *TaskMgmtRequest) Decode(p *PDU) error {
	if err := expect(p, OpTaskMgmtReq); err != nil {
		return err
	}
	m.Immediate = p.Immediate()
	m.Function = p.Header[1] & 0x7f
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.RTT, m.CmdSN, m.ExpStatSN = p.u32(20), p.u32(24), p.u32(28)
	m.RefCmdSN, m.ExpDataSN = p.u32(32), p.u32(36)
	if !p.Final() {
		return fieldError(OpTaskMgmtReq, "F", "F bit must be set")
	}
	if len(p.Data) != 0 {
		return fieldError(OpTaskMgmtReq, "DataSegmentLength", "task management requests carry no data")
	}
	return nil
}

// TaskMgmtResponse is a Task Management Function Response PDU (opcode 0x22, §11.6).
type TaskMgmtResponse struct {
	Response uint8
	ITT      uint32
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
}

// Encode writes m into p.
func (m *TaskMgmtResponse) Encode(p *PDU) {
	p.start(OpTaskMgmtResp, false, 0x80)
	p.Header[2] = m.Response
	p.put32(16, m.ITT)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.setLengths()
}

// Decode reads m from p.
func (m *TaskMgmtResponse) Decode(p *PDU) error {
	if err := expect(p, OpTaskMgmtResp); err != nil {
		return err
	}
	m.Response, m.ITT = p.Header[2], p.ITT()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(24), p.u32(28), p.u32(32)
	return nil
}

// Asynchronous event codes (§11.9.1).
const (
	AsyncSCSIEvent          = 0
	AsyncLogoutRequest      = 1
	AsyncDropConnection     = 2
	AsyncDropAllConnections = 3
	AsyncRenegotiate        = 4
	AsyncVendor             = 255
)

// AsyncMessage is an Asynchronous Message PDU (opcode 0x32, §11.9).
type AsyncMessage struct {
	LUN        uint64
	StatSN     uint32
	ExpCmdSN   uint32
	MaxCmdSN   uint32
	AsyncEvent uint8
	AsyncVCode uint8
	Parameter1 uint16
	Parameter2 uint16
	Parameter3 uint16
	// Data carries sense data (SenseLength-prefixed) for SCSI events.
	Data []byte
}

// Encode writes m into p.
func (m *AsyncMessage) Encode(p *PDU) {
	p.start(OpAsyncMsg, false, 0x80)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, ReservedTag)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.Header[36], p.Header[37] = m.AsyncEvent, m.AsyncVCode
	p.put16(38, m.Parameter1)
	p.put16(40, m.Parameter2)
	p.put16(42, m.Parameter3)
	p.Data = m.Data
	p.setLengths()
}

// Decode reads m from p.
func (m *AsyncMessage) Decode(p *PDU) error {
	if err := expect(p, OpAsyncMsg); err != nil {
		return err
	}
	m.LUN = p.LUN()
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN = p.u32(24), p.u32(28), p.u32(32)
	m.AsyncEvent, m.AsyncVCode = p.Header[36], p.Header[37]
	m.Parameter1, m.Parameter2, m.Parameter3 = p.u16(38), p.u16(40), p.u16(42)
	m.Data = p.Data
	return nil
}

// Reject is a Reject PDU (opcode 0x3f, §11.17).
type Reject struct {
	Reason   RejectReason
	StatSN   uint32
	ExpCmdSN uint32
	MaxCmdSN uint32
	DataSN   uint32
	// Header is the BHS of the rejected PDU, carried as the data segment.
	Header []byte
}

// Encode writes m into p.
func (m *Reject) Encode(p *PDU) {
	p.start(OpReject, false, 0x80)
	p.Header[2] = byte(m.Reason)
	p.put32(16, ReservedTag)
	p.put32(24, m.StatSN)
	p.put32(28, m.ExpCmdSN)
	p.put32(32, m.MaxCmdSN)
	p.put32(36, m.DataSN)
	p.Data = m.Header
	p.setLengths()
}

// Decode reads m from p.
func (m *Reject) Decode(p *PDU) error {
	if err := expect(p, OpReject); err != nil {
		return err
	}
	m.Reason = RejectReason(p.Header[2])
	m.StatSN, m.ExpCmdSN, m.MaxCmdSN, m.DataSN = p.u32(24), p.u32(28), p.u32(32), p.u32(36)
	m.Header = p.Data
	if len(m.Header) < BHSLen {
		return fieldError(OpReject, "DataSegmentLength", "reject carries %d bytes, not the rejected header", len(m.Header))
	}
	return nil
}

// SNACK types (§11.16.1).
const (
	SNACKDataR2T  = 0
	SNACKStatus   = 1
	SNACKDataACK  = 2
	SNACKRDataACK = 3
)

// SNACKRequest is a SNACK Request PDU (opcode 0x10, §11.16).
type SNACKRequest struct {
	Type      uint8
	LUN       uint64
	ITT       uint32
	TTT       uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

// Encode writes m into p.
func (m *SNACKRequest) Encode(p *PDU) {
	p.start(OpSNACKReq, false, 0x80|m.Type&0x0f)
	binary.BigEndian.PutUint64(p.Header[8:16], m.LUN)
	p.put32(16, m.ITT)
	p.put32(20, m.TTT)
	p.put32(28, m.ExpStatSN)
	p.put32(40, m.BegRun)
	p.put32(44, m.RunLength)
	p.setLengths()
}

// Decode reads m from p.
func (m *SNACKRequest) Decode(p *PDU) error {
	if err := expect(p, OpSNACKReq); err != nil {
		return err
	}
	m.Type = p.Header[1] & 0x0f
	m.LUN, m.ITT = p.LUN(), p.ITT()
	m.TTT, m.ExpStatSN = p.u32(20), p.u32(28)
	m.BegRun, m.RunLength = p.u32(40), p.u32(44)
	if m.Type > SNACKRDataACK {
		return fieldError(OpSNACKReq, "Type", "reserved SNACK type %d", m.Type)
	}
	return nil
}
