package backend

import (
	"context"
	"errors"
	"fmt"
)

// The errors a Device returns, and what an initiator makes of them.
//
// The SCSI layer (package scsi) turns a Device's error into the status
// and sense data of the command that met it, by errors.Is and errors.As,
// so a Device may wrap these with context of its own:
//
//	error a Device returns          status / sense key        ASC/ASCQ  the initiator
//	------------------------------  ------------------------  --------  ------------------------
//	ErrOutOfRange                   ILLEGAL REQUEST           21/00     fails the command
//	ErrReadOnly                     DATA PROTECT              27/00     fails writes
//	ErrNoSpace                      DATA PROTECT              27/07     fails the write: SPACE
//	                                                                     ALLOCATION FAILED WRITE
//	                                                                     PROTECT (thin pool full)
//	ErrNotReady                     NOT READY                 04/00     retries, then fails
//	ErrBusy                         status BUSY               -         retries after a while
//	ErrTransient                    ABORTED COMMAND           00/00     retries
//	*MediumError (reads)            MEDIUM ERROR              11/00     fails; INFORMATION holds
//	                                                                     the LBA of MediumError.Off
//	*MediumError (writes)           MEDIUM ERROR              0C/00     as above (WRITE ERROR)
//	a *scsi.Sense                   its own status and sense  its own   as SCSI says
//	the command's context ended     status TASK ABORTED       -         (the transport decides)
//	(ContextDevice, aborted task)
//	anything else, reads            MEDIUM ERROR              11/00     fails; INFORMATION holds
//	                                                                     the first LBA not moved
//	anything else, writes           MEDIUM ERROR              0C/00     as above
//	anything else, Sync             MEDIUM ERROR              0C/00     fails the flush
//
// A Device implemented outside this package may return the scsi
// package's *scsi.Sense for a condition this table lacks; it is reported
// as it is. (This package does not import scsi: the mapping lives there.)
var (
	// ErrNoSpace: the storage has no space for the write (a full thin
	// pool, a full file system). File returns it for ENOSPC and EDQUOT.
	ErrNoSpace = errors.New("backend: no space left for the write")
	// ErrNotReady: the storage cannot serve for now (a cluster without
	// quorum, a device being brought up).
	ErrNotReady = errors.New("backend: storage not ready")
	// ErrBusy: the storage refuses more work for now; the initiator
	// retries the command later.
	ErrBusy = errors.New("backend: storage busy")
	// ErrTransient: the operation failed in a way that retrying it may
	// mend (a lost connection to remote storage, re-established).
	ErrTransient = errors.New("backend: transient failure")
)

// MediumError is a failure of the medium at a byte offset: the SCSI
// layer reports the logical block holding Off in the sense data's
// INFORMATION field, so the initiator knows which block is bad.
type MediumError struct {
	Off int64 // the first byte that could not be read or written
	Err error // the cause, if any
}

func (e *MediumError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("backend: medium error at byte %d", e.Off)
	}
	return fmt.Sprintf("backend: medium error at byte %d: %v", e.Off, e.Err)
}

// Unwrap returns the cause.
func (e *MediumError) Unwrap() error { return e.Err }

// ContextDevice is implemented by devices whose reads and writes can be
// cancelled: a remote or otherwise slow backend. The SCSI layer then
// calls these instead of ReadAt and WriteAt, with the command's context,
// which ends when the command is aborted (ABORT TASK, a LOGICAL UNIT
// RESET, a lost session). A call cancelled so returns ctx's error; the
// command ends with TASK ABORTED.
type ContextDevice interface {
	Device
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	WriteAtContext(ctx context.Context, p []byte, off int64) (int, error)
}
