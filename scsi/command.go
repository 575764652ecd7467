package scsi

// Status is a SCSI status byte (SAM-5 §5.3).
type Status byte

// SCSI status codes.
const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

// TaskAttribute is the SAM-5 task attribute of a command.
type TaskAttribute uint8

// Task attributes (SAM-5 §8.6).
const (
	TaskSimple TaskAttribute = iota
	TaskOrdered
	TaskHeadOfQueue
	TaskACA
)

// Nexus identifies an I_T nexus: the initiator port and the target port a
// command arrived through. The SCSI layer keys unit attentions and
// reservations by it, and reports the target port in VPD page 0x83.
type Nexus struct {
	// InitiatorPort is the initiator port name, for iSCSI
	// "<initiator name>,i,0x<ISID in hex>".
	InitiatorPort string
	// TargetName is the SCSI target device name, for iSCSI the target IQN.
	TargetName string
	// TargetPort is the target port name, for iSCSI
	// "<target name>,t,0x<portal group tag in hex>".
	TargetPort string
	// RelativePortID is the relative target port identifier (1-based).
	RelativePortID uint16
}

// Command is one SCSI command as delivered by a transport.
type Command struct {
	// Nexus is the I_T nexus the command arrived on.
	Nexus Nexus
	// LUN is the 8-byte SAM LUN field as it appeared on the wire, big endian.
	LUN uint64
	// CDB is the command descriptor block (6 to 260 bytes).
	CDB []byte
	// Attribute is the task attribute.
	Attribute TaskAttribute
	// DataOut holds the data the initiator sent for the command (may be
	// shorter or longer than the CDB implies; the transport passes what the
	// initiator announced as expected data transfer length).
	DataOut []byte
	// DataIn is a buffer, owned by the transport, into which the command
	// writes the data it returns, starting at offset 0. Its length is the
	// initiator's expected data-in transfer length; the command never writes
	// beyond it.
	DataIn []byte
}

// Result is the outcome of a command.
type Result struct {
	// Status is the SCSI status.
	Status Status
	// Sense holds sense data when Status is CHECK CONDITION, nil otherwise.
	Sense []byte
	// DataInLen is the number of valid bytes written into Command.DataIn.
	DataInLen int
	// TransferLen is the number of bytes the command itself wanted to
	// transfer in its data direction (from the CDB's transfer or allocation
	// length). The transport compares it with the initiator's expected
	// length to report residual overflow or underflow.
	TransferLen int
}
