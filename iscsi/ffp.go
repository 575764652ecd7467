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
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		op := p.Opcode()
		if sess.discovery && op != pdu.OpTextReq && op != pdu.OpLogoutReq && op != pdu.OpNOPOut {
			// Discovery sessions carry only text, logout and NOP (§4.3).
			if err := c.r.DiscardData(&p); err != nil {
				return err
			}
			c.sendReject(&p.Header, pdu.RejectProtocolError)
			continue
		}
		var err error
		switch op {
		case pdu.OpSCSICommand:
			err = c.handleCommand(&p)
		case pdu.OpDataOut:
			err = c.handleDataOut(&p)
		default:
			if err = c.r.ReadSegment(&p); err == nil {
				err = c.handleControl(&p, false)
			}
		}
		// Tasks the PDU made runnable start even when it ended the
		// connection: they were claimed, and only running ends them.
		c.startReady()
		if err != nil {
			return err
		}
		// Control PDUs whose CmdSN turn the PDU brought run now.
		if err := c.runDeferred(); err != nil {
			return err
		}
	}
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
		// SNACK needs ErrorRecoveryLevel > 0, which is never negotiated.
		return c.reject(p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectProtocolError, Msg: "SNACK at ErrorRecoveryLevel 0"})
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

// handleLogout ends the session or connection after outstanding tasks finish.
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
	switch m.ReasonCode {
	case pdu.LogoutCloseSession, pdu.LogoutCloseConnection:
		if m.ReasonCode == pdu.LogoutCloseConnection && m.CID != c.cid {
			resp.Response = pdu.LogoutResponseCIDNotFound
		}
	case pdu.LogoutRemoveRecovery:
		resp.Response = pdu.LogoutResponseNoRecovery
	}
	if resp.Response != pdu.LogoutResponseSuccess {
		return c.sendMessage(&resp, statAdvance)
	}
	c.startReady() // the logout's CmdSN may have admitted queued commands
	sess.abortStalled()
	// Wait for the session's commands, but not past the connection's end:
	// a command hung in its device must not keep Server.Close (and so
	// Shutdown's deadline) waiting for this reader. The waiter goroutine
	// ends with the last command.
	waited := make(chan struct{})
	go func() { sess.waitTasks(); close(waited) }()
	select {
	case <-waited:
	case <-c.done:
		return net.ErrClosed
	}
	if err := c.sendMessage(&resp, statAdvance); err != nil {
		return err
	}
	return errLoggedOut
}

// abortStalled aborts the tasks that only this connection's reader could
// move on: write tasks still waiting for data and tasks queued behind a
// CmdSN gap. The reader stops reading while a logout waits for the
// session's tasks, so without this a logout sent while a write waits for
// its data deadlocked the connection for good. Reader goroutine only.
func (sess *session) abortStalled() {
	sess.mu.Lock()
	var stalled []*task
	for _, t := range sess.tasks {
		if !t.started {
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
