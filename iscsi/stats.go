package iscsi

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// sessionCounters are a session's counters: the commands it ran and the
// task management functions it received.
type sessionCounters struct {
	io  scsi.IOCounters
	tmf [len(tmfNames)]atomic.Uint64 // by function code; 0 holds unknown codes
}

// connCounters are a connection's transport counters.
type connCounters struct {
	pdusIn, pdusOut   atomic.Uint64
	bytesIn, bytesOut atomic.Uint64
	digestErrors      atomic.Uint64
	r2ts              atomic.Uint64
	rejects           atomic.Uint64
}

// serverCounters are the server's own counters.
type serverCounters struct {
	logins       atomic.Uint64
	loginsFailed atomic.Uint64
	digestErrors atomic.Uint64
}

// tmfNames names the task management functions by code (RFC 7143
// §11.5.1); code 0 stands for codes outside the table.
var tmfNames = [...]string{"UNKNOWN", "ABORT TASK", "ABORT TASK SET", "CLEAR ACA", "CLEAR TASK SET", "LOGICAL UNIT RESET", "TARGET WARM RESET", "TARGET COLD RESET", "TASK REASSIGN"}

// tmfName returns the name of task management function code f.
func tmfName(f uint8) string {
	if int(f) < len(tmfNames) {
		return tmfNames[f]
	}
	return tmfNames[0]
}

// execute runs the task's command in the SCSI layer, counting it in the
// session's counters.
func (t *task) execute(cmd *scsi.Command) scsi.Result {
	st := &t.sess.stats.io
	st.Begin()
	start := time.Now()
	res := t.sess.device.Execute(t, cmd)
	st.End(cmd.CDB, len(cmd.DataOut), min(max(res.DataInLen, 0), int(t.edtl)), &res, time.Since(start))
	return res
}

// received counts a PDU read in the full feature phase, whose header is
// in p: its header, AHS, data segment with padding, and digests.
func (c *conn) received(p *pdu.PDU) {
	dsl := p.DataSegmentLength()
	n := pdu.BHSLen + 4*int(p.Header[4]) + (dsl+3)&^3
	if sess := c.sess(); sess != nil {
		if sess.params.HeaderDigest {
			n += 4
		}
		if sess.params.DataDigest && dsl > 0 {
			n += 4
		}
	}
	c.stats.pdusIn.Add(1)
	c.stats.bytesIn.Add(uint64(n))
}

// sent counts PDUs about to be written with one vectored write of the
// buffers vec (which the write consumes).
func (c *conn) sent(pdus int, vec [][]byte) {
	n := 0
	for _, b := range vec {
		n += len(b)
	}
	c.stats.pdusOut.Add(uint64(pdus))
	c.stats.bytesOut.Add(uint64(n))
}

// rejected counts a Reject sent for reason.
func (c *conn) rejected(reason pdu.RejectReason) {
	c.stats.rejects.Add(1)
	if reason == pdu.RejectDataDigest {
		c.digestError()
	}
}

// digestError counts a PDU whose digest was wrong, in the connection's
// counters and the server's (which outlive the connection the error
// usually ends).
func (c *conn) digestError() {
	c.stats.digestErrors.Add(1)
	c.srv.counters.digestErrors.Add(1)
}

// SessionStats are the counters of a live session.
type SessionStats struct {
	// IOStats counts the session's commands, over all its LUNs.
	scsi.IOStats
	// QueueDepth is the commands admitted and not yet finished (the part
	// of the CmdSN window in use); MaxQueueDepth is the window's size.
	QueueDepth, MaxQueueDepth int
	// TaskManagement counts the task management functions received, by
	// name ("ABORT TASK", "LOGICAL UNIT RESET", ...).
	TaskManagement map[string]uint64
	// Connections holds the counters of the session's live connections.
	Connections []ConnectionStats
}

// ConnectionStats are the transport counters of one connection.
type ConnectionStats struct {
	CID                   uint16
	RemoteAddr, LocalAddr string
	// PDUsIn and BytesIn count what was read in the full feature phase
	// (headers, data, padding and digests); PDUsOut and BytesOut what
	// was handed to the socket (a write that fails ends the connection).
	PDUsIn, PDUsOut, BytesIn, BytesOut uint64
	// DigestErrors counts PDUs whose header or data digest was wrong.
	DigestErrors uint64
	// R2Ts counts the Ready To Transfer PDUs sent.
	R2Ts uint64
	// Rejects counts the Reject PDUs sent.
	Rejects uint64
}

// statsLocked snapshots the session's counters. Called with sess.mu held.
func (sess *session) statsLocked() SessionStats {
	s := SessionStats{
		IOStats:        sess.stats.io.Snapshot(),
		QueueDepth:     int(sess.inflight),
		MaxQueueDepth:  int(sess.depth),
		TaskManagement: make(map[string]uint64),
	}
	for f := range sess.stats.tmf {
		if n := sess.stats.tmf[f].Load(); n > 0 {
			s.TaskManagement[tmfNames[f]] += n
		}
	}
	for _, c := range sess.conns {
		if !c.closed() {
			s.Connections = append(s.Connections, c.statsSnapshot())
		}
	}
	slices.SortFunc(s.Connections, func(a, b ConnectionStats) int { return int(a.CID) - int(b.CID) })
	return s
}

func (c *conn) statsSnapshot() ConnectionStats {
	return ConnectionStats{
		CID:          c.cid,
		RemoteAddr:   c.nc.RemoteAddr().String(),
		LocalAddr:    c.nc.LocalAddr().String(),
		PDUsIn:       c.stats.pdusIn.Load(),
		PDUsOut:      c.stats.pdusOut.Load(),
		BytesIn:      c.stats.bytesIn.Load(),
		BytesOut:     c.stats.bytesOut.Load(),
		DigestErrors: c.stats.digestErrors.Load(),
		R2Ts:         c.stats.r2ts.Load(),
		Rejects:      c.stats.rejects.Load(),
	}
}

// ServerStats are a server's own counters.
type ServerStats struct {
	// Logins counts the logins that reached full feature phase (normal
	// and discovery sessions); LoginsFailed those refused with a Login
	// Response or dropped (timeout, broken PDU), not counting clients
	// that simply closed the connection.
	Logins, LoginsFailed uint64
	// DigestErrors counts the PDUs of every connection whose header or
	// data digest was wrong.
	DigestErrors uint64
	// EventsDropped counts the events Options.Observer missed because
	// its queue was full.
	EventsDropped uint64
}

// Stats returns the server's own counters; per-session counters are in
// Sessions.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Logins:        s.counters.logins.Load(),
		LoginsFailed:  s.counters.loginsFailed.Load(),
		DigestErrors:  s.counters.digestErrors.Load(),
		EventsDropped: s.events.dropped.Load(),
	}
}
