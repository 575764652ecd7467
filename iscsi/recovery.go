package iscsi

import (
	"errors"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Error recovery level 2: connection recovery (RFC 7143 §6.2.2, §7.1.4,
// §11.5.1 TASK REASSIGN). When a connection of a session at level 2 fails,
// is logged out with reason 2 ("remove the connection for recovery") or
// is replaced by a login with its CID, its tasks are not ended: they keep
// running, or waiting for their data, for DefaultTime2Wait plus
// DefaultTime2Retain seconds. The initiator logs in a connection (or uses
// another of the session) and moves each task to it with TASK REASSIGN:
// a task still in progress carries on there (a write asks again for the
// data it is missing), a task that already answered sends its Data-In
// (from the ExpDataSN the request gives) and its status again. Tasks not
// reassigned in time are ended; a session left without connections ends
// then too. A completed task stays findable until its status is
// acknowledged by ExpStatSN, so a response lost with its connection can
// still be sent again.

// errTime2Retain ends a session whose connections all failed and none
// came back within DefaultTime2Wait + DefaultTime2Retain.
var errTime2Retain = errors.New("no connection came back within Time2Wait + Time2Retain")

// recovers reports whether the session recovers connections: level 2
// and a DefaultTime2Retain above 0.
func (sess *session) recovers() bool {
	return sess.params.ErrorRecoveryLevel >= 2 && sess.params.DefaultTime2Retain > 0
}

// retainFor is how long a failed connection's tasks wait for TASK
// REASSIGN.
func (sess *session) retainFor() time.Duration {
	return time.Duration(sess.params.DefaultTime2Wait+sess.params.DefaultTime2Retain) * time.Second
}

// keepUnackedLocked keeps t, whose response is being queued, until its
// status is acknowledged (see forget), holding its data buffer. It
// returns the task it displaced, for the caller to release outside
// sess.mu: an older task with the tag, answered on another connection
// whose ExpStatSN has not caught up (the initiator reused the tag, so it
// has its status). Called with sess.mu held.
func (sess *session) keepUnackedLocked(t *task) *task {
	old := sess.unacked[t.itt]
	if sess.closed || old == t {
		return nil
	}
	t.refs.Add(1)
	sess.unacked[t.itt] = t
	return old
}

// forget drops a task whose status the initiator acknowledged.
func (sess *session) forget(t *task) {
	sess.mu.Lock()
	kept := sess.unacked[t.itt] == t
	if kept {
		delete(sess.unacked, t.itt)
	}
	sess.mu.Unlock()
	if kept {
		t.release()
	}
}

// dropUnacked forgets every kept task allegiant to c (every one when c
// is nil).
func (sess *session) dropUnacked(c *conn) {
	sess.mu.Lock()
	var gone []*task
	for itt, t := range sess.unacked {
		if c == nil || (t.conn() == c && !t.moving.Load()) {
			gone = append(gone, t)
			delete(sess.unacked, itt)
		}
	}
	sess.mu.Unlock()
	for _, t := range gone {
		t.release()
	}
}

// connFailed keeps the tasks of c, a connection that failed or was
// removed for recovery, for TASK REASSIGN until Time2Wait + Time2Retain
// have passed; then those still allegiant to it end, and the session too
// when it has no connection left.
func (sess *session) connFailed(c *conn) {
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return
	}
	if len(sess.conns) > 0 && !sess.holdsTasksOfLocked(c) {
		// Nothing to reassign and the session goes on: no timer, so an
		// initiator that makes and breaks connections over and over
		// does not pile them up for Time2Retain. Its CID is remembered
		// (one entry per CID) for a logout removing it for recovery.
		if sess.idle == nil {
			sess.idle = make(map[uint16]bool)
		}
		sess.idle[c.cid] = true
		sess.mu.Unlock()
		return
	}
	timer := time.AfterFunc(sess.retainFor(), func() { sess.expire(c) })
	sess.timers[c] = timer
	sess.mu.Unlock()
	c.log.Info("connection failed; its tasks wait for TASK REASSIGN", "cid", c.cid, "retain", sess.retainFor())
}

// expire ends the tasks a failed connection left that were not
// reassigned in time.
func (sess *session) expire(c *conn) {
	sess.mu.Lock()
	delete(sess.timers, c)
	left := len(sess.conns)
	if left == 0 {
		// Decided under the lock that join takes: a connection logging
		// in to the session from now on is refused, not closed right
		// after its login succeeded.
		sess.ending = true
	}
	sess.mu.Unlock()
	if left == 0 {
		sess.close(errTime2Retain)
		return
	}
	sess.endConnTasks(c)
	sess.dropUnacked(c)
}

// holdsTasksOfLocked reports whether a task allegiant to c is left: in
// progress, waiting for its CmdSN turn or for the acknowledgement of its
// status. Called with sess.mu held.
func (sess *session) holdsTasksOfLocked(c *conn) bool {
	for _, t := range sess.tasks {
		if t.conn() == c {
			return true
		}
	}
	for _, t := range sess.unacked {
		if t.conn() == c {
			return true
		}
	}
	for _, a := range sess.adm.early {
		if a.task != nil && a.task.conn() == c {
			return true
		}
	}
	return false
}

// stopTimers stops the Time2Retain timers of a session that ends.
func (sess *session) stopTimers() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	for c, t := range sess.timers {
		t.Stop()
		delete(sess.timers, c)
	}
}

// reassignWait bounds how long TASK REASSIGN waits for the reader of the
// task's old connection to stop.
const reassignWait = 5 * time.Second

// reassign moves the task a TASK REASSIGN names to c (RFC 7143 §11.5.1)
// and returns the TMF response code. A task still in progress goes on on
// c; one that already answered answers again on c. Reader goroutine only:
// a write asks for its missing data from here.
func (c *conn) reassign(m *pdu.TaskMgmtRequest) (*task, uint8) {
	sess := c.sess()
	if sess.params.ErrorRecoveryLevel < 2 {
		return nil, pdu.TMFResponseNoReassignSupport
	}
	sess.mu.Lock()
	t := sess.tasks[m.RTT]
	if t == nil {
		t = sess.unacked[m.RTT]
	}
	if t != nil {
		// Its buffer stays while it moves, even if Time2Retain runs
		// out meanwhile; resume lets go.
		t.refs.Add(1)
	}
	sess.mu.Unlock()
	if t == nil {
		return nil, pdu.TMFResponseNoTask
	}
	old := t.conn()
	if old == c || !old.closed() {
		t.release()
		return nil, pdu.TMFResponseTaskAllegiant
	}
	// The old reader touched the task's data-phase state last.
	select {
	case <-old.readerGone:
	case <-time.After(reassignWait):
		t.release()
		return nil, pdu.TMFResponseRejected
	}
	// One reassignment at a time: the same task asked for on two
	// connections at once moves to one of them only.
	if t.conn() != old || !t.moving.CompareAndSwap(false, true) {
		t.release()
		return nil, pdu.TMFResponseTaskAllegiant
	}
	return t, pdu.TMFResponseComplete
}

// unmove gives up the reassignment of t that reassign granted c, when its
// TMF response could not be sent.
func (t *task) unmove() {
	t.moving.Store(false)
	t.release()
}

// resume carries a reassigned task on on c, after the TMF response: one
// that responded sends its Data-In from expDataSN and its status again, a
// write missing data asks for it. Reader goroutine only.
func (c *conn) resume(t *task, expDataSN uint32) error {
	defer t.release()
	t.sendMu.Lock()
	t.cp.Store(c)
	t.moving.Store(false)
	if t.responded {
		err := c.resend(t, expDataSN)
		t.sendMu.Unlock()
		return err
	}
	t.sendMu.Unlock()
	if !t.write || t.dataDone {
		return nil
	}
	// The data the old connection was waiting for is asked for again:
	// open sequences are closed and what they lacked becomes holes.
	if t.unsolNext < t.unsolicited {
		t.holes = append(t.holes, span{t.unsolNext, t.unsolicited})
		t.unsolNext = t.unsolicited
	}
	t.unsolOpen = false
	for _, r := range t.r2ts {
		if !r.finished && r.offset < r.end {
			t.holes = append(t.holes, span{r.offset, r.end})
		}
		r.finished = true
	}
	if t.failed() {
		t.settleFailed(c)
		return nil
	}
	return c.solicit(t)
}

// resend queues t's Data-In from DataSN expDataSN and its status on c,
// with a StatSN of c. Called with t.sendMu held.
func (c *conn) resend(t *task, expDataSN uint32) error {
	var out []outPDU
	if t.read && t.dataInLen > 0 {
		seg, burst := c.params.InitiatorMaxRecvDataSegmentLength, c.params.MaxBurstLength
		if seg != t.dataInSeg {
			// Cut differently on this connection: the DataSNs the
			// initiator has mean other bytes, so all of it comes again
			// (as R-Data SNACK would have it, RFC 7143 §11.16.3).
			expDataSN = 0
			t.dataInSeg = seg
		}
		sn := uint32(0)
		for off := uint32(0); off < t.dataInLen; sn++ {
			l, final := dataInSegment(off, t.dataInLen, seg, burst)
			if !snGreater(expDataSN, sn) {
				din := pdu.DataIn{Final: final, LUN: t.lun, ITT: t.itt, TTT: pdu.ReservedTag, DataSN: sn, BufferOffset: off, Data: t.buf()[off : off+l]}
				if off+l == t.dataInLen {
					din.Acknowledge, din.TTT = true, t.ackTTT
				}
				out = append(out, outPDU{})
				din.Encode(&out[len(out)-1].p)
			}
			off += l
		}
	}
	st := outPDU{kind: statAdvance}
	st.p.Header, st.p.Data = t.status.Header, t.status.Data
	out = append(out, st)
	t.refs.Add(1)
	out[len(out)-1].owner = t
	return c.queue(false, false, out...)
}
