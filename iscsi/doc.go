// Package iscsi is an iSCSI target (RFC 7143): it accepts connections on
// portals, runs login and text-key negotiation, serves discovery sessions
// (SendTargets) and normal sessions, and carries SCSI commands between
// initiators and the logical units of package scsi.
//
// A Server holds targets (an IQN plus a scsi.Target of logical units), serves
// any number of listeners, and shuts down gracefully with Shutdown. Targets
// and logical units may be added and removed while the server runs.
//
// Sessions have up to the negotiated MaxConnections connections and run
// at up to ErrorRecoveryLevel 2 (recovery R2T and SNACK at 1, connection
// recovery with TASK REASSIGN at 2), as Options.Negotiation offers; the
// defaults are one connection and level 0. Within a session, every non-immediate PDU that carries a CmdSN (SCSI commands,
// NOP-Out, Text, task management and Logout requests) goes through one
// ordered admission queue inside a window whose size is the queue depth; a
// PDU that arrives ahead of a gap waits for it to be filled, and an ABORT
// TASK for a command never received consumes that command's CmdSN.
// Admitted commands execute concurrently: the queue depth is real
// concurrency against the backend. At ErrorRecoveryLevel 0 write data that
// fails its digest cannot be asked for again, so the connection is dropped.
//
// A PDU whose header digest fails ends its connection at every
// ErrorRecoveryLevel. RFC 7143 §7.8 (RFC 3720 §6.7) lets a receiver either
// discard the header "and all data up to the beginning of a later PDU" or
// close the connection, and says the later PDU must be found "by other
// means such as the operation of a sync and steering layer": the failed
// header's data segment length cannot be trusted, so skipping by it could
// read the middle of a data segment as the next header. RFC 7143 dropped
// markers, the one such layer iSCSI had (this target answers IFMarker and
// OFMarker with No), so nothing locates the next PDU; Linux LIO closes the
// connection too. At ErrorRecoveryLevel 2 the connection's tasks then wait
// for TASK REASSIGN on another connection, as for any connection failure.
//
// Security: Target.Allow admits or refuses logins by initiator name,
// address and portal group (refused ones get "authorization failure" and
// are not listed by SendTargets); an Authenticator runs the security
// stage, and NewCHAPAuthenticator provides one-way and mutual CHAP per
// login policy. Options.LoginTimeout and Options.Limits bound what a
// hostile client can hold: a login's duration, keys and text, open
// connections, connections in login (a newer one displaces the
// longest-idle one) and sessions per target. Within a session the queue
// depth bounds immediate commands (beyond it: Reject "too many immediate
// commands") and task management functions in progress (beyond it:
// "function rejected"), and what a connection keeps for SNACK counts in
// the session's buffer budget and is capped (an initiator that never
// acknowledges its statuses is dropped).
//
// The data path of a connection: one reader goroutine decodes PDUs into
// reused buffers and reads immediate, unsolicited and solicited write data
// straight into the task's buffer; a task runs once it is admitted and its
// data is complete, always on a worker goroutine reused across commands,
// never in the reader (a command hung in a slow device must not stop the
// connection from reading task management and NOP-Outs); SCSI reads and
// writes go straight between that buffer and the backend. A command that
// ends early (task set full, a CDB beyond MaxIOSize, bad write data) still
// takes the rest of the Data-Out the initiator is sending, in silence,
// before its status goes out (RFC 7143 §11.4). Responses
// go through one ordered outbound queue: a sender that finds the socket
// idle writes at once, and what queues up meanwhile leaves in one vectored
// write (writev) per batch, header and data never copied together. Data
// buffers come from size-classed pools, and a session holds at most queue
// depth x burst length bytes of them (beyond that a command gets TASK SET
// FULL).
package iscsi
