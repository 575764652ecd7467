package scsi

import (
	"context"
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/backend"
)

// request is one command on its way through a logical unit.
type request struct {
	ctx   context.Context
	lu    *LogicalUnit
	cmd   *Command
	cdb   []byte
	nexus string
	// tgt is the target the command came through: the units EXTENDED
	// COPY may reach.
	tgt    *Target
	dsense bool
	res    Result
}

// fail turns a handler's error into a CHECK CONDITION result, encoding the
// sense in the format the control mode page selects.
func (r *request) fail(err error) Result {
	var s *Sense
	var st statusError
	switch {
	case errors.As(err, &st):
		return Result{Status: Status(st), TransferLen: r.res.TransferLen}
	case errors.As(err, &s):
	case errors.Is(err, backend.ErrOutOfRange):
		s = errLBAOutOfRange
	case errors.Is(err, backend.ErrReadOnly):
		s = errWriteProtected
	default:
		s = errHardware
	}
	return Result{
		Status:      StatusCheckCondition,
		Sense:       s.Encode(r.dsense),
		TransferLen: r.res.TransferLen,
	}
}

// sendData returns b to the initiator, truncated to the allocation length
// alloc and to the transport's buffer.
func (r *request) sendData(b []byte, alloc int) {
	n := min(len(b), alloc)
	r.res.TransferLen = n
	r.res.DataInLen = copy(r.cmd.DataIn, b[:n])
}

// ioError maps a backend error to the command's status and sense, by the
// table in package backend's documentation: the backend's typed errors,
// a *Sense of its own, an aborted command's context; anything else is a
// medium error (a write error for writes).
func ioError(err error, write bool) error {
	var s *Sense
	switch {
	case err == nil:
		return nil
	case errors.As(err, &s):
		return s
	case errors.Is(err, backend.ErrOutOfRange), errors.Is(err, backend.ErrReadOnly):
		return err
	case errors.Is(err, backend.ErrNoSpace):
		return errNoSpace
	case errors.Is(err, backend.ErrNotReady):
		return errNotReady
	case errors.Is(err, backend.ErrBusy):
		return statusError(StatusBusy)
	case errors.Is(err, backend.ErrTransient):
		return errTransient
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return statusError(StatusTaskAborted)
	case write:
		return errWriteError
	default:
		return errMediumError
	}
}

// ioErrorAt is ioError for a transfer at byte off that moved n bytes
// before it failed: a medium error carries the LBA of the first block that
// failed in its INFORMATION field (SBC-4 §4.18.1), the one a
// backend.MediumError names or else the first one not moved.
func (r *request) ioErrorAt(err error, write bool, off int64, n int) error {
	if err == nil {
		return nil
	}
	var me *backend.MediumError
	if errors.As(err, &me) {
		off, n = me.Off, 0
	}
	err = ioError(err, write)
	var s *Sense
	if errors.As(err, &s) && s.Key == SenseMediumError {
		at := *s
		at.Info = uint64(off+int64(max(n, 0))) / uint64(r.lu.blockSize)
		at.InfoValid = true
		return &at
	}
	return err
}

// statusError ends a command with a status other than CHECK CONDITION and
// no sense data.
type statusError Status

func (e statusError) Error() string { return fmt.Sprintf("scsi: status 0x%02x", byte(e)) }

// errReservationConflict ends a command that another nexus's reservation
// forbids.
var errReservationConflict error = statusError(StatusReservationConflict)
