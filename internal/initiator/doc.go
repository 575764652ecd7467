// Package initiator is an internal iSCSI test initiator.
//
// The project's tests use it to log in to the iscsikit target over real TCP
// (or any net.Conn), run discovery, read and write blocks, exercise task
// management and NOP pings, and send deliberately malformed PDUs through a
// raw API ([Conn.SendPDU], [Conn.WriteRaw], [Conn.ReadPDU]) while the
// connection keeps its sequence numbers straight ([Conn.NextCmdSN],
// [Conn.ExpStatSN], [Conn.NextITT]).
//
// It is not a production initiator: it supports one connection per session,
// ErrorRecoveryLevel=0 only (a digest error or protocol violation ends the
// connection), no bidirectional commands and no multi-PDU text requests.
// What it does, it does strictly: Data-In DataSN order and buffer offsets,
// R2T sequence and bounds, StatSN continuity and the CmdSN window are all
// checked, so a target bug shows up as an error ([ErrProtocol]) or as an
// entry in [Conn.Violations] rather than as silently wrong data.
//
// Concurrency: a [Conn] in the full feature phase is safe for concurrent use.
// One reader goroutine demultiplexes incoming PDUs by initiator task tag to
// the waiting callers; sends are serialized by a mutex under which CmdSN is
// assigned, so commands leave in CmdSN order and wait for the MaxCmdSN
// window. Target NOP-In pings are answered automatically unless
// [Options.ManualNOPIn] is set.
package initiator
