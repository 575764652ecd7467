package iscsi

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
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
		c.received(&p)
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
			if err = c.r.ReadSegment(&p); err != nil {
				break
			}
			switch op {
			case pdu.OpNOPOut:
				err = c.handleNOPOut(&p)
			case pdu.OpTextReq:
				err = c.handleText(&p)
			case pdu.OpLogoutReq:
				err = c.handleLogout(&p)
			case pdu.OpTaskMgmtReq:
				err = c.handleTaskMgmt(&p)
			case pdu.OpSNACKReq:
				// SNACK needs ErrorRecoveryLevel > 0, which is never negotiated.
				err = c.reject(&p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectProtocolError, Msg: "SNACK at ErrorRecoveryLevel 0"})
			case pdu.OpLoginReq:
				err = c.reject(&p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectProtocolError, Msg: "login request in full feature phase"})
			default:
				err = c.reject(&p, &pdu.ProtocolError{Op: op, Reason: pdu.RejectNotSupported, Msg: "opcode not supported"})
			}
		}
		// Tasks the PDU made runnable start even when it ended the
		// connection: they were claimed, and only running ends them.
		c.startReady()
		if err != nil {
			return err
		}
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

// admit applies the CmdSN rules to a non-immediate PDU. It reports whether
// the PDU is in the window; out-of-window PDUs are silently ignored (§4.2.2.1).
func (sess *session) admitCmdSN(cmdSN uint32) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if !snInWindow(cmdSN, sess.expCmdSN, sess.maxCmdSN) {
		return false
	}
	if cmdSN == sess.expCmdSN {
		sess.expCmdSN++
		sess.startEarlyLocked()
		sess.growWindow()
	}
	return true
}

// startEarlyLocked starts queued commands whose turn has come.
func (sess *session) startEarlyLocked() {
	for {
		t, ok := sess.early[sess.expCmdSN]
		if !ok {
			return
		}
		delete(sess.early, sess.expCmdSN)
		sess.expCmdSN++
		select {
		case <-t.finished(): // aborted while queued
		default:
			sess.startLocked(t)
		}
	}
}

// startLocked hands an admitted task to its goroutine, after applying the
// task-attribute ordering rules. Called with sess.mu held.
func (sess *session) startLocked(t *task) {
	switch t.attr {
	case scsi.TaskHeadOfQueue:
		// Runs at once, ahead of everything queued.
	case scsi.TaskOrdered:
		for _, o := range sess.tasks {
			if o != t && o.started {
				t.waitFor = append(t.waitFor, o)
			}
		}
		t.ordered = make(chan struct{})
		sess.barrier = t.ordered
	default:
		t.barrier = sess.barrier
	}
	t.started = true
	t.ready()
}

// handleCommand reads a SCSI Command PDU (whose header has been read), its
// immediate data straight into the task's buffer, and admits the task.
func (c *conn) handleCommand(p *pdu.PDU) error {
	sess := c.sess()
	cmd := &c.cmd
	if err := cmd.Decode(p); err != nil {
		if derr := c.r.DiscardData(p); derr != nil {
			return derr
		}
		return c.reject(p, err)
	}
	params := sess.params
	dsl := uint32(p.DataSegmentLength())
	var perr *pdu.ProtocolError
	switch {
	case dsl > 0 && !cmd.Write:
		// Only write data travels with a command (RFC 7143 §11.3.4); the
		// segment is skipped so the connection stays in step.
		perr = &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: pdu.RejectProtocolError, Msg: "data segment on a command without the W bit"}
	case dsl > 0 && !params.ImmediateData:
		perr = &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: pdu.RejectProtocolError, Msg: "immediate data not negotiated"}
	case dsl > params.FirstBurstLength:
		perr = &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: pdu.RejectProtocolError, Msg: "immediate data exceeds FirstBurstLength"}
	case dsl > cmd.ExpectedDataTransferLength:
		perr = &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: pdu.RejectProtocolError, Msg: "immediate data exceeds the expected data transfer length"}
	case cmd.Read && cmd.Write:
		perr = &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: pdu.RejectNotSupported, Msg: "bidirectional commands are not supported"}
	}
	if perr != nil {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.reject(p, perr)
	}
	if !cmd.Immediate {
		sess.mu.Lock()
		inWindow := snInWindow(cmd.CmdSN, sess.expCmdSN, sess.maxCmdSN)
		sess.mu.Unlock()
		if !inWindow {
			c.log.Debug("ignoring command outside the CmdSN window", "cmdsn", cmd.CmdSN)
			return c.r.DiscardData(p)
		}
	}

	t := &task{
		sess:      sess,
		c:         c,
		itt:       cmd.ITT,
		cmdSN:     cmd.CmdSN,
		immediate: cmd.Immediate,
		lun:       cmd.LUN,
		attr:      taskAttribute(cmd.Attr),
		read:      cmd.Read,
		write:     cmd.Write,
		edtl:      cmd.ExpectedDataTransferLength,
	}
	t.cdb = append(t.cdbBuf[:0], cmd.CDB...)
	if !t.read && !t.write {
		t.edtl = 0
	}
	size := int(t.edtl)
	tooBig := size > c.srv.opt.MaxIOSize
	if !tooBig && size > 0 {
		reserved, ok := sess.reserveBuffer(int64(size))
		t.reserved.Store(reserved)
		t.full = !ok
	}
	skip := tooBig || t.full // the task fails without its data
	if skip {
		size = 0
	}
	t.bufp = c.srv.buffers.Get(size)
	t.refs.Store(1)
	if tooBig {
		// More data than one command may carry: the task fails without
		// its data being solicited (Data-Out sent for it is rejected).
		t.failSense = scsi.IllegalRequestSense(0x24, 0x00)
	}

	// Immediate data lands in the buffer directly.
	if dsl > 0 {
		dst := t.buf()[:min(int(dsl), len(t.buf()))]
		if skip {
			if err := c.r.DiscardData(p); err != nil {
				return err
			}
		} else if err := c.r.ReadData(p, dst); err != nil {
			t.release()
			return c.reject(p, err)
		}
	}
	t.received = dsl
	t.nextR2T = dsl
	t.pending.Store(1) // admission
	if t.write && !skip && !t.dataComplete() {
		t.pending.Add(1) // the rest of the write data
	}
	if t.write {
		t.unsolicited = dsl
		if !cmd.Final && !params.InitialR2T {
			t.unsolicited = min(params.FirstBurstLength, t.edtl)
			t.nextR2T = t.unsolicited
		}
		t.unsolNext = dsl
	}

	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		t.release()
		return nil
	}
	if _, dup := sess.tasks[t.itt]; dup {
		sess.mu.Unlock()
		t.release()
		return c.sendReject(&p.Header, pdu.RejectTaskInProgress)
	}
	sess.tasks[t.itt] = t
	sess.inflight++
	switch {
	case cmd.Immediate:
		sess.startLocked(t)
	case cmd.CmdSN == sess.expCmdSN:
		sess.expCmdSN++
		sess.startLocked(t)
		sess.startEarlyLocked()
	default:
		sess.early[cmd.CmdSN] = t
	}
	sess.mu.Unlock()

	if skip || !t.write || t.dataComplete() {
		t.dataDone = true
		return nil
	}
	return c.solicit(t)
}

func taskAttribute(a uint8) scsi.TaskAttribute {
	switch a {
	case 2:
		return scsi.TaskOrdered
	case 3:
		return scsi.TaskHeadOfQueue
	case 4:
		return scsi.TaskACA
	default:
		return scsi.TaskSimple
	}
}

// solicit sends R2Ts for a write task until MaxOutstandingR2T are
// outstanding or all of the data has been asked for. Reader goroutine only.
func (c *conn) solicit(t *task) error {
	params := t.sess.params
	outstanding := uint32(0)
	for _, r := range t.r2ts {
		if !r.finished {
			outstanding++
		}
	}
	for outstanding < params.MaxOutstandingR2T && t.nextR2T < t.edtl {
		l := min(params.MaxBurstLength, t.edtl-t.nextR2T)
		r := &r2t{ttt: c.nextTTT(), offset: t.nextR2T, end: t.nextR2T + l}
		t.r2ts = append(t.r2ts, r)
		m := pdu.R2T{
			LUN:                       t.lun,
			ITT:                       t.itt,
			TTT:                       r.ttt,
			R2TSN:                     t.r2tSN,
			BufferOffset:              t.nextR2T,
			DesiredDataTransferLength: l,
		}
		t.r2tSN++
		c.stats.r2ts.Add(1)
		t.nextR2T += l
		outstanding++
		// Queued without waiting: the reader goes on reading.
		e := outPDU{kind: statCurrent}
		m.Encode(&e.p)
		if err := c.queue(false, false, e); err != nil {
			return err
		}
	}
	return nil
}

func (c *conn) nextTTT() uint32 {
	for {
		v := c.nopTTT.Add(1)
		if v != pdu.ReservedTag {
			return v
		}
	}
}

// handleDataOut reads a Data-Out PDU's payload straight into its task's
// buffer after checking it against what the task expects.
func (c *conn) handleDataOut(p *pdu.PDU) error {
	sess := c.sess()
	var m pdu.DataOut
	if err := m.Decode(p); err != nil {
		if derr := c.r.DiscardData(p); derr != nil {
			return derr
		}
		return c.reject(p, err)
	}
	sess.mu.Lock()
	t := sess.tasks[m.ITT]
	if t != nil {
		t.refs.Add(1)
	}
	sess.mu.Unlock()
	if t == nil {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpDataOut, Reason: pdu.RejectProtocolError, Msg: fmt.Sprintf("no task with ITT 0x%x", m.ITT)})
	}
	defer t.release()
	n := uint32(p.DataSegmentLength())
	if t.failSense != nil || t.full {
		// The task already failed (bad data, no buffer): drop the rest
		// of its burst.
		return c.r.DiscardData(p)
	}
	bad := func(format string, args ...any) error {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		if t.write {
			// At ErrorRecoveryLevel 0 the data cannot be recovered: the
			// PDU is rejected and the command fails instead of waiting
			// for data that will never come.
			if !t.dataDone {
				t.failSense = scsi.DataPhaseErrorSense()
				t.dataDone = true
				t.ready()
			}
		}
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpDataOut, Reason: pdu.RejectProtocolError, Msg: fmt.Sprintf(format, args...)})
	}
	if !t.write || t.bufp == nil || len(t.buf()) < int(t.edtl) {
		return bad("task 0x%x takes no write data", m.ITT)
	}
	if m.TTT == pdu.ReservedTag {
		if m.BufferOffset != t.unsolNext || m.BufferOffset+n > t.unsolicited || m.BufferOffset+n < m.BufferOffset {
			return bad("unsolicited data at offset %d+%d outside the first burst of %d", m.BufferOffset, n, t.unsolicited)
		}
		if m.DataSN != t.unsolDataSN {
			return bad("DataSN %d, expected %d", m.DataSN, t.unsolDataSN)
		}
		if err := c.r.ReadData(p, t.buf()[m.BufferOffset:m.BufferOffset+n]); err != nil {
			return c.reject(p, err)
		}
		t.unsolDataSN++
		t.unsolNext += n
	} else {
		var r *r2t
		for _, x := range t.r2ts {
			if x.ttt == m.TTT && !x.finished {
				r = x
				break
			}
		}
		if r == nil {
			return bad("no outstanding R2T with TTT 0x%x", m.TTT)
		}
		if m.BufferOffset != r.offset || m.BufferOffset+n > r.end || m.BufferOffset+n < m.BufferOffset {
			return bad("data at offset %d+%d does not continue the R2T at %d..%d", m.BufferOffset, n, r.offset, r.end)
		}
		if m.DataSN != r.dataSN {
			return bad("DataSN %d, expected %d", m.DataSN, r.dataSN)
		}
		if err := c.r.ReadData(p, t.buf()[m.BufferOffset:m.BufferOffset+n]); err != nil {
			return c.reject(p, err)
		}
		r.dataSN++
		r.offset += n
		if r.offset == r.end {
			r.finished = true
		}
	}
	t.received += n
	if t.dataComplete() {
		if !t.dataDone {
			t.dataDone = true
			t.ready()
		}
		return nil
	}
	return c.solicit(t)
}

// handleNOPOut answers pings and records answers to ours.
func (c *conn) handleNOPOut(p *pdu.PDU) error {
	var m pdu.NOPOut
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	sess := c.sess()
	if !m.Immediate && !sess.admitCmdSN(m.CmdSN) {
		return nil
	}
	if m.TTT != pdu.ReservedTag {
		// The answer to one of our NOP-Ins.
		c.nopPending.CompareAndSwap(m.TTT, 0)
		return nil
	}
	in := pdu.NOPIn{LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag, Data: m.Data}
	var out pdu.PDU
	in.Encode(&out)
	return c.send(&out, statAdvance)
}

// handleLogout ends the session or connection after outstanding tasks finish.
func (c *conn) handleLogout(p *pdu.PDU) error {
	var m pdu.LogoutRequest
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	sess := c.sess()
	if !m.Immediate {
		sess.admitCmdSN(m.CmdSN)
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
		var out pdu.PDU
		resp.Encode(&out)
		return c.send(&out, statAdvance)
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
	var out pdu.PDU
	resp.Encode(&out)
	if err := c.send(&out, statAdvance); err != nil {
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
