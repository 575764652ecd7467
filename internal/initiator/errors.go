package initiator

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// ErrConnClosed is matched (errors.Is) by every error a call returns because
// the connection ended: dropped by the target, closed by [Conn.Close] or
// [Conn.Logout], or broken by an I/O or protocol error. The concrete error
// is a *ClosedError that also unwraps to the cause.
var ErrConnClosed = errors.New("initiator: connection closed")

// ErrProtocol is wrapped by errors reporting that the target broke RFC 7143
// (out-of-order DataSN, a Data-In beyond the expected length, a PDU of the
// wrong kind for a task, ...).
var ErrProtocol = errors.New("initiator: target protocol violation")

// ErrTaskAborted is returned by [Conn.Do] and [Conn.Command] when a task
// management function issued on this connection aborted the command.
var ErrTaskAborted = errors.New("initiator: task aborted by task management function")

// ErrNotLoggedIn is returned by full-feature calls on a connection whose
// login has not completed.
var ErrNotLoggedIn = errors.New("initiator: not in the full feature phase")

// ClosedError reports that the connection ended. It matches ErrConnClosed
// and unwraps to Cause.
type ClosedError struct {
	Cause error
}

func (e *ClosedError) Error() string {
	if e.Cause == nil {
		return ErrConnClosed.Error()
	}
	return ErrConnClosed.Error() + ": " + e.Cause.Error()
}

// Is reports whether target is ErrConnClosed.
func (e *ClosedError) Is(target error) bool { return target == ErrConnClosed }

// Unwrap returns the cause.
func (e *ClosedError) Unwrap() error { return e.Cause }

// RejectError is returned to the caller whose PDU the target answered with a
// Reject PDU (RFC 7143 §11.17).
type RejectError struct {
	Reason pdu.RejectReason
	// Header is the BHS of the rejected PDU as the target returned it.
	Header [pdu.BHSLen]byte
}

func (e *RejectError) Error() string {
	op := pdu.Opcode(e.Header[0] & 0x3f)
	return fmt.Sprintf("initiator: target rejected %v (ITT 0x%08x): reason 0x%02x",
		op, binary.BigEndian.Uint32(e.Header[16:20]), uint8(e.Reason))
}

// LoginError reports a login response with a non-zero status class
// (RFC 7143 §11.13.5).
type LoginError struct {
	Class  uint8
	Detail uint8
	// Params holds the keys of the failing response (for a redirection,
	// TargetAddress).
	Params map[string]string
}

func (e *LoginError) Error() string {
	return fmt.Sprintf("initiator: login failed: status class 0x%02x detail 0x%02x", e.Class, e.Detail)
}

// Status returns the status as one number, class<<8 | detail.
func (e *LoginError) Status() uint16 { return uint16(e.Class)<<8 | uint16(e.Detail) }

// StatusError is returned by the SCSI helpers ([Conn.ReadBlocks],
// [Conn.TestUnitReady], ...) when a command completes with a non-GOOD SCSI
// status or a non-zero iSCSI response code.
type StatusError struct {
	// Response is the iSCSI response code (0: command completed at target).
	Response byte
	// Status is the SCSI status byte.
	Status byte
	// Sense is the sense data, if any.
	Sense []byte
}

func (e *StatusError) Error() string {
	if e.Response != 0 {
		return fmt.Sprintf("initiator: iSCSI response 0x%02x", e.Response)
	}
	if len(e.Sense) > 0 {
		key, asc, ascq := ParseSense(e.Sense)
		return fmt.Sprintf("initiator: SCSI status 0x%02x, sense key 0x%x, ASC/ASCQ 0x%02x/0x%02x", e.Status, key, asc, ascq)
	}
	return fmt.Sprintf("initiator: SCSI status 0x%02x", e.Status)
}

// SenseKey returns the sense key, ASC and ASCQ of the sense data.
func (e *StatusError) SenseKey() (key, asc, ascq byte) { return ParseSense(e.Sense) }

// ParseSense returns the sense key, additional sense code and qualifier of
// fixed-format (0x70/0x71) or descriptor-format (0x72/0x73) sense data, or
// zeros when sense is too short or of an unknown format.
func ParseSense(sense []byte) (key, asc, ascq byte) {
	if len(sense) < 1 {
		return 0, 0, 0
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		if len(sense) >= 3 {
			key = sense[2] & 0x0f
		}
		if len(sense) >= 14 {
			asc, ascq = sense[12], sense[13]
		}
	case 0x72, 0x73:
		if len(sense) >= 4 {
			key, asc, ascq = sense[1]&0x0f, sense[2], sense[3]
		}
	}
	return key, asc, ascq
}

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}
