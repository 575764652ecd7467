package pdu

import (
	"errors"
	"fmt"
)

// RejectReason is the reason code of a Reject PDU (RFC 7143 §11.17.1).
type RejectReason uint8

// Reject reasons.
const (
	RejectDataDigest       RejectReason = 0x02
	RejectSNACK            RejectReason = 0x03
	RejectProtocolError    RejectReason = 0x04
	RejectNotSupported     RejectReason = 0x05
	RejectImmediateCommand RejectReason = 0x06
	RejectTaskInProgress   RejectReason = 0x07
	RejectInvalidDataAck   RejectReason = 0x08
	RejectInvalidPDUField  RejectReason = 0x09
	RejectOutOfResources   RejectReason = 0x0a
	RejectWaitingForLogout RejectReason = 0x0c
)

// ProtocolError describes a PDU that violates RFC 7143. Reason is the Reject
// reason a target answers it with; Fatal errors (a framing error, a header
// digest error) leave the byte stream unusable, so the connection must end.
type ProtocolError struct {
	Op     Opcode
	Field  string
	Reason RejectReason
	Fatal  bool
	Msg    string
	// Err is the sentinel the error wraps, if any (ErrHeaderDigest,
	// ErrDataDigest), for errors.Is.
	Err error
}

// Unwrap returns the sentinel error e wraps.
func (e *ProtocolError) Unwrap() error { return e.Err }

func (e *ProtocolError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("iscsi: %v: %s: %s", e.Op, e.Field, e.Msg)
	}
	return fmt.Sprintf("iscsi: %v: %s", e.Op, e.Msg)
}

// ErrHeaderDigest is wrapped by the error for a PDU whose header digest does
// not match. The stream can no longer be trusted.
var ErrHeaderDigest = errors.New("header digest mismatch")

// ErrDataDigest is wrapped by the error for a PDU whose data digest does not
// match. The header was valid, so the stream is still framed.
var ErrDataDigest = errors.New("data digest mismatch")

func fieldError(op Opcode, field, format string, args ...any) *ProtocolError {
	return &ProtocolError{Op: op, Field: field, Reason: RejectInvalidPDUField, Msg: fmt.Sprintf(format, args...)}
}

func protocolError(op Opcode, format string, args ...any) *ProtocolError {
	return &ProtocolError{Op: op, Reason: RejectProtocolError, Msg: fmt.Sprintf(format, args...)}
}
