// Package scsi is the SCSI command set of iscsikit: SAM-5, SPC-4 and
// SBC-4 for direct access block devices, over a backend.Device. It knows
// nothing about iSCSI: a transport hands it an I_T nexus, a LUN, a CDB
// and data buffers, and gets back a status, sense data and data.
//
// # Targets and logical units
//
// A LogicalUnit is one block device with its identity (serial number and
// NAA designator, random unless configured), geometry, mode pages, unit
// attentions and reservations (SPC-2 and persistent).
// A Target is the set of units one target device exposes, by LUN: it
// routes commands (Target.Execute), answers REPORT LUNS and LUNs without
// a unit, and tells its nexuses of LUNs attached and detached. A unit
// may be attached to several Targets (one per initiator's view of a
// target, as mgmt does); it keeps its state per I_T nexus.
//
// Commands are described by one table (operation code, CDB usage bits,
// flags, handler), from which dispatch, CDB validation and REPORT
// SUPPORTED OPERATION CODES all come. Commands run concurrently, on the
// transport's goroutines; READ and WRITE move data between the device
// and the transport's buffers directly, without a copy, and a command
// allocates nothing (BenchmarkReadWrite).
//
// # Lifecycle
//
// A unit serves from NewLogicalUnit until Close. It counts its commands
// in flight: Close and Reopen drain them first while new ones wait, so
// that a unit can be given new storage or settings live (Reopen, or
// PrepareReopen and Commit to change several at once) without failing
// any command, and Close never closes a device under a command.
// Target.Close detaches every unit and closes the ones attached nowhere
// else. NewLogicalUnit and Reopen refuse a bad UnitConfig with a
// *ConfigError naming the field (errors.Is ErrInvalidConfig).
//
// # Errors of the backend
//
// What a Device's error becomes (DATA PROTECT for no space, NOT READY,
// BUSY, a retryable ABORTED COMMAND, MEDIUM ERROR with the bad block's
// LBA, or a *Sense of the device's own) is tabulated in package
// backend's documentation. A device implementing backend.ContextDevice
// gets the command's context, which the transport ends when the command
// is aborted (ABORT TASK, LOGICAL UNIT RESET, a lost session).
//
// # The transport's side
//
// Target.Execute runs a command. What only a transport does goes through
// Target.Transport, so that it stays out of an embedder's way: the task
// management and nexus events it reports (ResetLogicalUnit, ResetTarget,
// NexusLost), the data limit of a command (MaxTransferLength) and the
// sense data of a failed data phase (DataPhaseErrorSense).
// IllegalRequestSense builds the sense data of any command refused before
// it reaches a unit.
package scsi
