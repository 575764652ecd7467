package iscsi

import (
	"errors"
	"net"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// errLoggedOut ends the reader loop after a successful logout.
var errLoggedOut = errors.New("logged out")

// fullFeature is the reader loop of the full feature phase.
func (c *conn) fullFeature() error {
	sess := c.sess()
	var p pdu.PDU
	for {
		if err := c.r.ReadHeader(&p); err != nil {
			var pe *pdu.ProtocolError
			if errors.As(err, &pe) && !pe.Fatal {
				// Oversized data segment: skip it and reject the PDU.
				if derr := c.r.DiscardData(&p); derr != nil {
					return derr
				}
				c.log.Warn("rejecting PDU", "err", err)
				c.sendReject(&p.Header, pe.Reason)
				continue
			}
			// A header digest error lands here too: the header's
			// lengths cannot be trusted to find the next PDU (see the
			// package documentation), so the connection ends.
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		c.received(&p)
		if c.keep.on && p.Opcode() != pdu.OpSNACKReq {
			c.acknowledge(ackSN(&p))
		}
		c.rmu.Lock()
		err := c.handlePDU(sess, &p)
		c.rmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// handlePDU handles one PDU whose header has been read, then the control
// PDUs whose CmdSN turn it brought. Called with c.rmu held.
func (c *conn) handlePDU(sess *session, p *pdu.PDU) error {
	op := p.Opcode()
	if sess.discovery && op != pdu.OpTextReq && op != pdu.OpLogoutReq && op != pdu.OpNOPOut {
		// Discovery sessions carry only text, logout and NOP (§4.3).
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.sendReject(&p.Header, pdu.RejectProtocolError)
	}
	var err error
	switch op {
	case pdu.OpSCSICommand:
		err = c.handleCommand(p)
	case pdu.OpDataOut:
		err = c.handleDataOut(p)
	default:
		if err = c.r.ReadSegment(p); err == nil {
			err = c.handleControl(p, false)
		}
	}
	// Tasks the PDU made runnable start even when it ended the
	// connection: they were claimed, and only running ends them.
	c.startReady()
	if err != nil {
		return err
	}
	// Control PDUs whose CmdSN turn the PDU brought run now.
	return c.runDeferred()
}

// handleControl handles a PDU other than a SCSI Command or Data-Out, whose
// data segment has been read. admitted is set when the session's CmdSN
// queue has already consumed its CmdSN (a PDU that waited for its turn).
func (c *conn) handleControl(p *pdu.PDU, admitted bool) error {
	switch op := p.Opcode(); op {
	case pdu.OpNOPOut:
		return c.handleNOPOut(p, admitted)
	case pdu.OpTextReq:
		return c.handleText(p, admitted)
	case pdu.OpLogoutReq:
		return c.handleLogout(p, admitted)
	case pdu.OpTaskMgmtReq:
		return c.handleTaskMgmt(p, admitted)
	case pdu.OpSNACKReq:
		return c.handleSNACK(p)
	case pdu.OpLoginReq:
		return c.reject(p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectProtocolError, Msg: "login request in full feature phase"})
	default:
		return c.reject(p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectNotSupported, Msg: "opcode not supported"})
	}
}

// reject answers a PDU that violates the protocol with a Reject and keeps
// the connection; a fatal error ends it.
func (c *conn) reject(p *pdu.PDU, err error) error {
	var pe *pdu.ProtocolError
	if !errors.As(err, &pe) {
		return err
	}
	c.log.Warn("rejecting PDU", "opcode", p.Opcode().String(), "err", err)
	if pe.Fatal {
		return err
	}
	return c.sendReject(&p.Header, pe.Reason)
}

// handleNOPOut answers pings and records answers to ours.
func (c *conn) handleNOPOut(p *pdu.PDU, admitted bool) error {
	var m pdu.NOPOut
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	if !m.Immediate && !admitted && !c.admitControl(p, m.CmdSN) {
		return nil
	}
	if m.TTT != pdu.ReservedTag {
		// The answer to one of our NOP-Ins.
		c.nopPending.CompareAndSwap(m.TTT, 0)
		return nil
	}
	return c.sendMessage(&pdu.NOPIn{LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag, Data: m.Data}, statAdvance)
}

// handleLogout ends the session or a connection after the tasks it
// concerns finish: every task of the session for "close the session", the
// tasks of the connection for "close the connection" (RFC 7143 §11.14). A
// connection may close another of the session by its CID: that one ends at
// once, with its tasks.
func (c *conn) handleLogout(p *pdu.PDU, admitted bool) error {
	var m pdu.LogoutRequest
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	sess := c.sess()
	if !m.Immediate && !admitted && !c.admitControl(p, m.CmdSN) {
		return nil
	}
	resp := pdu.LogoutResponse{ITT: m.ITT, Response: pdu.LogoutResponseSuccess}
	var only *conn // the connection whose tasks the logout waits for; nil: all
	switch m.ReasonCode {
	case pdu.LogoutCloseSession:
	case pdu.LogoutCloseConnection:
		if m.CID != c.cid {
			other := sess.connByCID(m.CID)
			if other == nil {
				resp.Response = pdu.LogoutResponseCIDNotFound
			} else {
				other.loggedOut.Store(true)
				other.close(errLoggedOut)
				sess.endConnTasks(other)
			}
			return c.sendMessage(&resp, statAdvance)
		}
		only = c
	case pdu.LogoutRemoveRecovery:
		// The connection goes; its tasks wait for TASK REASSIGN
		// (ErrorRecoveryLevel 2, RFC 7143 §11.14.1).
		if !sess.recovers() {
			resp.Response = pdu.LogoutResponseNoRecovery
			break
		}
		resp.Time2Wait, resp.Time2Retain = uint16(sess.params.DefaultTime2Wait), uint16(sess.params.DefaultTime2Retain)
		if m.CID == c.cid {
			if err := c.sendMessage(&resp, statAdvance); err != nil {
				return err
			}
			return errRemovedForRecovery
		}
		if other := sess.connByCID(m.CID); other != nil {
			other.close(errRemovedForRecovery)
		} else if !sess.failedCID(m.CID) {
			resp.Response = pdu.LogoutResponseCIDNotFound
		}
		return c.sendMessage(&resp, statAdvance)
	default:
		resp.Response = pdu.LogoutResponseNoRecovery
	}
	if resp.Response != pdu.LogoutResponseSuccess {
		return c.sendMessage(&resp, statAdvance)
	}
	c.startReady() // the logout's CmdSN may have admitted queued commands
	if only == nil {
		// The session ends: no connection joins it meanwhile.
		sess.mu.Lock()
		sess.ending = true
		sess.mu.Unlock()
	}
	sess.abortStalled(only)
	// Wait for the commands, but not past the connection's end: a command
	// hung in its device must not keep Server.Close (and so Shutdown's
	// deadline) waiting for this reader. The waiter goroutine ends with
	// the last command.
	waited := make(chan struct{})
	go func() { sess.waitTasksOf(only); close(waited) }()
	select {
	case <-waited:
	case <-c.done:
		return net.ErrClosed
	}
	if only != nil {
		c.loggedOut.Store(true)
	} else {
		// The nexus ends before the response, so what its loss releases
		// (an SPC-2 reservation, committed to a shared store by a
		// round trip to the cluster) is released once the initiator
		// learns that it logged out.
		sess.loseNexus()
	}
	if err := c.sendMessage(&resp, statAdvance); err != nil {
		return err
	}
	if only == nil {
		// The session ends with this connection: the others close now.
		for _, o := range sess.connList() {
			if o != c {
				o.close(errLoggedOut)
			}
		}
	}
	return errLoggedOut
}

// errRemovedForRecovery ends a connection logged out with reason 2.
var errRemovedForRecovery = errors.New("connection removed for recovery")

// failedCID reports whether a connection with CID cid failed and its
// tasks still wait for reassignment (or it had none to wait).
func (sess *session) failedCID(cid uint16) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.idle[cid] {
		return true
	}
	for c := range sess.timers {
		if c.cid == cid {
			return true
		}
	}
	return false
}

// connByCID returns the session's connection with CID cid, or nil.
func (sess *session) connByCID(cid uint16) *conn {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.conns[cid]
}

// abortStalled aborts the tasks that only the logging-out reader could
// move on: write tasks of the connection only (all connections when nil)
// still waiting for data, and, for a session logout, tasks queued behind a
// CmdSN gap. The reader stops reading while a logout waits for the tasks,
// so without this a logout sent while a write waits for its data
// deadlocked the connection for good. Reader goroutine only.
func (sess *session) abortStalled(only *conn) {
	sess.mu.Lock()
	var stalled []*task
	for _, t := range sess.tasks {
		if only != nil && t.conn() != only {
			continue
		}
		if !t.started && only == nil {
			stalled = append(stalled, t)
			continue
		}
		if t.write && !t.dataDone {
			stalled = append(stalled, t)
		}
	}
	sess.mu.Unlock()
	for _, t := range stalled {
		t.abort(false)
	}
}
