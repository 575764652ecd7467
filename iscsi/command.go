package iscsi

import (
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

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
	if perr := c.checkCommand(cmd, uint32(p.DataSegmentLength())); perr != nil {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.reject(p, perr)
	}
	if !cmd.Immediate && !sess.inWindow(cmd.CmdSN) {
		c.log.Debug("ignoring command outside the CmdSN window", "cmdsn", cmd.CmdSN)
		return c.r.DiscardData(p)
	}
	t := c.newTask(cmd, uint32(p.DataSegmentLength()))
	if err := c.readImmediateData(t, p); err != nil {
		t.release()
		if errors.Is(err, pdu.ErrDataDigest) && c.erl() >= 1 {
			// RFC 7143 §7.8: the command is discarded, not admitted;
			// the initiator retries it, and its immediate data with it.
			c.log.Info("immediate data failed its digest; command discarded", "itt", fmt.Sprintf("0x%x", cmd.ITT))
			return c.sendReject(&p.Header, pdu.RejectDataDigest)
		}
		return err
	}
	switch err := c.admitTask(t, cmd); {
	case errors.Is(err, errNotAdmitted):
		return nil
	case errors.Is(err, errTooManyImmediate):
		return c.sendReject(&p.Header, pdu.RejectImmediateCommand)
	case err != nil:
		return c.sendReject(&p.Header, pdu.RejectTaskInProgress)
	}
	if t.dataDone || t.failed() {
		return nil
	}
	return c.solicit(t)
}

// checkCommand checks a SCSI Command's data segment of dsl bytes and its
// direction against what the session negotiated.
func (c *conn) checkCommand(cmd *pdu.SCSICommand, dsl uint32) *pdu.ProtocolError {
	params := c.sess().params
	var msg string
	reason := pdu.RejectProtocolError
	switch {
	case dsl > 0 && !cmd.Write:
		// Only write data travels with a command (RFC 7143 §11.3.4); the
		// segment is skipped so the connection stays in step.
		msg = "data segment on a command without the W bit"
	case dsl > 0 && !params.ImmediateData:
		msg = "immediate data not negotiated"
	case dsl > params.FirstBurstLength:
		msg = "immediate data exceeds FirstBurstLength"
	case dsl > cmd.ExpectedDataTransferLength:
		msg = "immediate data exceeds the expected data transfer length"
	case cmd.Read && cmd.Write:
		msg, reason = "bidirectional commands are not supported", pdu.RejectNotSupported
	default:
		return nil
	}
	return &pdu.ProtocolError{Op: pdu.OpSCSICommand, Reason: reason, Msg: msg}
}

// newTask makes the task of a decoded SCSI Command with dsl bytes of
// immediate data: its buffer (within the
// session's budget), and what it expects of the data phase. A task that
// cannot get its buffer (beyond MaxIOSize, or the budget is spent) fails
// without its data; it still takes its unsolicited data in silence before
// its status goes out (RFC 7143 §11.4).
func (c *conn) newTask(cmd *pdu.SCSICommand, dsl uint32) *task {
	sess := c.sess()
	t := &task{
		sess:      sess,
		itt:       cmd.ITT,
		cmdSN:     cmd.CmdSN,
		immediate: cmd.Immediate,
		lun:       cmd.LUN,
		attr:      taskAttribute(cmd.Attr),
		read:      cmd.Read,
		write:     cmd.Write,
		edtl:      cmd.ExpectedDataTransferLength,
	}
	t.cp.Store(c)
	t.cdb = append(t.cdbBuf[:0], cmd.CDB...)
	if !t.read && !t.write {
		t.edtl = 0
	}
	size := int(t.edtl)
	if size > c.maxIOSize(sess, cmd.LUN) {
		// More data than one command may carry: the task fails without
		// its data being solicited.
		t.failSense = scsi.IllegalRequestSense(0x24, 0x00)
	} else if size > 0 {
		reserved, ok := sess.reserveBuffer(int64(size))
		t.reserved.Store(reserved)
		t.full = !ok
	}
	if t.failed() {
		size = 0
	}
	t.bufp = c.srv.buffers.Get(size)
	t.refs.Store(1)
	if t.write {
		params := sess.params
		t.unsolicited = dsl
		if !cmd.Final && !params.InitialR2T {
			t.unsolicited = min(params.FirstBurstLength, t.edtl)
			t.unsolOpen = t.unsolicited > dsl
		}
		t.unsolNext = dsl
		t.received = dsl
		t.nextR2T = t.unsolicited
	}
	t.pending.Store(1) // admission
	switch {
	case !t.write:
		t.dataDone = true
	case t.failed():
		// Nothing is solicited; only the unsolicited burst may be open.
		t.dataDone = !t.unsolOpen
	default:
		t.dataDone = t.dataComplete()
	}
	if !t.dataDone {
		t.pending.Add(1) // the rest of the write data
	}
	return t
}

// readImmediateData reads a command's data segment into its task's buffer,
// or skips it when the task fails without its data. A digest error ends
// the connection at ErrorRecoveryLevel 0 (see dataLost); above, it is
// returned for the caller to discard the command.
func (c *conn) readImmediateData(t *task, p *pdu.PDU) error {
	dsl := p.DataSegmentLength()
	if dsl == 0 {
		return nil
	}
	if t.failed() {
		return c.r.DiscardData(p)
	}
	if err := c.r.ReadData(p, t.buf()[:dsl]); err != nil {
		if errors.Is(err, pdu.ErrDataDigest) && c.erl() >= 1 {
			return err // the caller discards the command
		}
		return c.dataLost(p, err)
	}
	return nil
}

// errNotAdmitted reports a command the session does not take: it is
// closing, or the command's CmdSN is already taken by one queued ahead.
var errNotAdmitted = errors.New("command not admitted")

// errTaskInProgress reports a command whose ITT names a task in progress.
var errTaskInProgress = errors.New("task tag in use")

// errTooManyImmediate reports an immediate command that finds every queue
// slot taken: immediate commands skip the CmdSN window, so without this
// bound an initiator could start any number of them (RFC 7143 §11.17.1
// has the Reject reason "immediate command reject - too many immediate
// commands" for it).
var errTooManyImmediate = errors.New("too many immediate commands")

// admitTask registers t with its session and passes it through the CmdSN
// queue (an immediate command starts at once).
func (c *conn) admitTask(t *task, cmd *pdu.SCSICommand) error {
	sess := t.sess
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closed {
		t.release()
		return errNotAdmitted
	}
	if _, dup := sess.tasks[t.itt]; dup {
		t.release()
		return errTaskInProgress
	}
	if cmd.Immediate && sess.inflight >= sess.depth {
		t.release()
		return errTooManyImmediate
	}
	sess.tasks[t.itt] = t
	sess.inflight++
	if cmd.Immediate {
		sess.startLocked(c, t)
		return nil
	}
	if sess.offerLocked(c, cmd.CmdSN, admittee{task: t}) == outside {
		delete(sess.tasks, t.itt)
		sess.inflight--
		t.release()
		c.log.Debug("ignoring command with a CmdSN already queued", "cmdsn", cmd.CmdSN)
		return errNotAdmitted
	}
	return nil
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
	if len(t.holes) > 0 {
		if err := c.solicitHoles(t, &outstanding); err != nil {
			return err
		}
	}
	for outstanding < params.MaxOutstandingR2T && t.nextR2T < t.edtl {
		l := min(params.MaxBurstLength, t.edtl-t.nextR2T)
		if err := c.sendR2T(t, t.nextR2T, l); err != nil {
			return err
		}
		t.nextR2T += l
		outstanding++
	}
	return nil
}

// sendR2T asks for l bytes of t's data at offset off. Reader goroutine
// only.
func (c *conn) sendR2T(t *task, off, l uint32) error {
	r := &r2t{ttt: c.nextTTT(), sn: t.r2tSN, start: off, offset: off, end: off + l}
	t.r2ts = append(t.r2ts, r)
	m := pdu.R2T{
		LUN:                       t.lun,
		ITT:                       t.itt,
		TTT:                       r.ttt,
		R2TSN:                     r.sn,
		BufferOffset:              off,
		DesiredDataTransferLength: l,
	}
	t.r2tSN++
	c.stats.r2ts.Add(1)
	// Queued without waiting: the reader goes on reading.
	e := outPDU{kind: statCurrent}
	m.Encode(&e.p)
	return c.queue(false, false, e)
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
	var m pdu.DataOut
	if err := m.Decode(p); err != nil {
		if derr := c.r.DiscardData(p); derr != nil {
			return derr
		}
		return c.reject(p, err)
	}
	t := c.sess().taskRef(m.ITT)
	if t == nil {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpDataOut, Reason: pdu.RejectProtocolError, Msg: fmt.Sprintf("no task with ITT 0x%x", m.ITT)})
	}
	defer t.release()
	if t.conn() != c {
		// Data-Out travels on the connection of its task (allegiance,
		// RFC 7143 §5.1).
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpDataOut, Reason: pdu.RejectProtocolError, Msg: fmt.Sprintf("Data-Out for task 0x%x on a connection other than its command's", m.ITT)})
	}
	if t.write && t.failed() {
		// The task ended early (bad data, no buffer): the rest of its
		// open sequences is taken in silence, and its status waits for
		// their last PDUs (RFC 7143 §11.4).
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		t.endSequence(&m)
		t.settleFailed(c)
		return nil
	}
	n := uint32(p.DataSegmentLength())
	r, perr := t.checkDataOut(&m, n)
	if perr != nil {
		if err := c.r.DiscardData(p); err != nil {
			return err
		}
		if t.write && !t.dataDone {
			// At ErrorRecoveryLevel 0 the data cannot be asked for
			// again: the command fails (once its open sequences end)
			// instead of waiting for data that will never come.
			t.failSense = t.sess.device.Transport().DataPhaseErrorSense()
			t.endSequence(&m)
			t.settleFailed(c)
		}
		return c.reject(p, perr)
	}
	if err := c.r.ReadData(p, t.buf()[m.BufferOffset:m.BufferOffset+n]); err != nil {
		if errors.Is(err, pdu.ErrDataDigest) && c.erl() >= 1 {
			return c.recoverDataOut(t, &m, r, n, p)
		}
		return c.dataLost(p, err)
	}
	t.accept(&m, r, n)
	if t.dataComplete() {
		if !t.dataDone {
			t.dataDone = true
			t.ready(c)
		}
		return nil
	}
	return c.solicit(t)
}

// dataLost handles a data segment that could not be read. At
// ErrorRecoveryLevel 0 write data that failed its digest cannot be asked
// for again (that is R2T recovery, ERL 1): as LIO does, the PDU is
// rejected and the connection dropped, which ends the session and its
// tasks, so the write does not wait for data that never comes.
func (c *conn) dataLost(p *pdu.PDU, err error) error {
	var pe *pdu.ProtocolError
	if !errors.Is(err, pdu.ErrDataDigest) || !errors.As(err, &pe) {
		return c.reject(p, err)
	}
	c.log.Warn("write data lost at ErrorRecoveryLevel 0; dropping the connection", "opcode", p.Opcode().String(), "itt", fmt.Sprintf("0x%x", p.ITT()), "err", err)
	c.sendReject(&p.Header, pe.Reason)
	return fmt.Errorf("write data lost at ErrorRecoveryLevel 0: %w", err)
}

// taskRef returns the task with ITT itt holding a reference to its
// buffer, or nil.
func (sess *session) taskRef(itt uint32) *task {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	t := sess.tasks[itt]
	if t != nil {
		t.refs.Add(1)
	}
	return t
}

// maxIOSize is the most data one command to wire LUN lun may carry: its
// unit's MaxTransferLength, capped by Options.MaxIOSize when that is set.
func (c *conn) maxIOSize(sess *session, lun uint64) int {
	limit := sess.device.Transport().MaxTransferLength(lun)
	if cap := c.srv.opt.MaxIOSize; cap > 0 && cap < limit {
		return cap
	}
	return limit
}
