package iscsi

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// r2t is one outstanding Ready To Transfer of a write task.
type r2t struct {
	ttt      uint32
	sn       uint32 // R2TSN
	start    uint32 // first buffer offset asked for
	offset   uint32 // next expected buffer offset
	end      uint32
	dataSN   uint32
	finished bool
}

// task is one SCSI command of a session, from arrival to response.
type task struct {
	sess *session
	// cp is the connection the task is allegiant to: the one its command
	// came on, until TASK REASSIGN moves it (ErrorRecoveryLevel 2).
	cp atomic.Pointer[conn]
	// sendMu orders respond against a reassignment: the response goes on
	// the connection in force when it is queued, and responded tells a
	// reassignment that it must be sent again.
	sendMu    sync.Mutex
	responded bool
	// moving is set while TASK REASSIGN moves the task to another
	// connection, from the grant to the resumption (see reassign).
	moving atomic.Bool
	// status is the task's SCSI Response as first queued, kept at
	// ErrorRecoveryLevel 2 to send again after TASK REASSIGN (nil below).
	// Guarded by sendMu.
	status *pdu.PDU

	itt       uint32
	cmdSN     uint32
	immediate bool
	lun       uint64
	cdb       []byte
	cdbBuf    [16]byte // backing store of cdb when it fits
	attr      scsi.TaskAttribute
	read      bool
	write     bool
	edtl      uint32

	bufp     *[]byte      // data buffer (write data in, read data out), from the pool
	reserved atomic.Int64 // bytes of the session's buffer budget bufp holds
	refs     atomic.Int32
	// outBuf holds the response PDUs of a task with at most two of them
	// (the common case) while they are queued; run's goroutine only.
	outBuf [2]outPDU

	// Write-data gathering, touched only by the connection's reader
	// goroutine (and read by run, which the reader starts once the data
	// is complete).
	unsolicited uint32 // bytes the initiator may send without R2T
	unsolNext   uint32 // next expected unsolicited offset
	unsolOpen   bool   // unsolicited Data-Out expected, its F bit not seen yet
	unsolDataSN uint32
	received    uint32
	nextR2T     uint32 // first offset not yet solicited
	r2tSN       uint32
	r2ts        []*r2t
	// holes are write data lost to digest errors at ErrorRecoveryLevel 1,
	// to ask for again with recovery R2Ts (see recoverDataOut).
	holes []span
	// recoveries counts the Data-Out PDUs that failed their digest.
	recoveries int
	// dataInLen is the read data sent; ackTTT the target transfer tag of
	// its last Data-In at ErrorRecoveryLevel 1 (A bit). Set by respond.
	dataInLen uint32
	ackTTT    uint32
	// dataInSeg is the segment length its Data-In were cut to.
	dataInSeg uint32
	// dataDone: all write data arrived, or the task failed and its open
	// Data-Out sequences have ended.
	dataDone bool
	// failSense, when set, fails the task with CHECK CONDITION instead of
	// executing it: its write data broke the protocol (wrong offset, DataSN
	// or TTT; set before dataDone) or it asked for more than MaxIOSize (set
	// before the task starts).
	failSense []byte
	// full fails the task with TASK SET FULL: its buffer did not fit in
	// the session's budget. Set before the task starts.
	full bool

	// pending counts what the task still waits for before it can run:
	// admission by CmdSN order and, for writes, the rest of its data. The
	// one who brings it to zero hands the task to a worker.
	pending atomic.Int32
	// claimed is set by whoever ends the task's wait: the dispatch that
	// runs it, or an abort that finishes it unrun.
	claimed atomic.Bool

	// The task is the context its command executes under (see Err):
	// cancelled when the task is aborted or its session ends.
	cancelled atomic.Bool
	cancelMu  sync.Mutex
	cancelCh  chan struct{} // made on the first Done call
	aborted   atomic.Bool
	barrier   <-chan struct{} // an earlier ORDERED task, or nil
	ordered   chan struct{}   // closed when this ORDERED task completes
	waitFor   []*task         // earlier tasks an ORDERED task waits for
	started   bool            // handed to run; guarded by sess.mu
	slotFree  bool            // queue slot given back; guarded by sess.mu
	doneOnce  sync.Once
	// doneCh is closed when the task has finished (see finished); made
	// only when someone waits. Guarded by cancelMu, like doneFlag.
	doneCh   chan struct{}
	doneFlag bool

	scmd scsi.Command // the command handed to the SCSI layer; run only
}

func (t *task) buf() []byte { return *t.bufp }

// conn returns the connection the task is allegiant to.
func (t *task) conn() *conn { return t.cp.Load() }

// A task is a context.Context that costs no allocation unless something
// waits on Done: commands run with one per task, and the SCSI layer only
// polls Err.
var _ context.Context = (*task)(nil)

// Deadline reports that a task has no deadline.
func (t *task) Deadline() (time.Time, bool) { return time.Time{}, false }

// Value returns nil: a task carries no values.
func (t *task) Value(any) any { return nil }

// Err reports context.Canceled once the task has been cancelled.
func (t *task) Err() error {
	if t.cancelled.Load() {
		return context.Canceled
	}
	return nil
}

// Done returns a channel closed when the task is cancelled.
func (t *task) Done() <-chan struct{} {
	t.cancelMu.Lock()
	defer t.cancelMu.Unlock()
	if t.cancelCh == nil {
		t.cancelCh = make(chan struct{})
		if t.cancelled.Load() {
			close(t.cancelCh)
		}
	}
	return t.cancelCh
}

// finished returns a channel closed once the task has finished: its
// response is queued (or it was aborted) and its slot given back.
func (t *task) finished() <-chan struct{} {
	t.cancelMu.Lock()
	defer t.cancelMu.Unlock()
	if t.doneCh == nil {
		t.doneCh = make(chan struct{})
		if t.doneFlag {
			close(t.doneCh)
		}
	}
	return t.doneCh
}

// cancel cancels the task's context; later calls do nothing.
func (t *task) cancel() {
	t.cancelMu.Lock()
	defer t.cancelMu.Unlock()
	if !t.cancelled.Swap(true) && t.cancelCh != nil {
		close(t.cancelCh)
	}
}

// release drops a reference to the data buffer; the last one returns it.
func (t *task) release() {
	if t.refs.Add(-1) == 0 && t.bufp != nil {
		t.sess.srv.buffers.Put(t.bufp)
		t.bufp = nil
		t.sess.releaseBuffer(t.reserved.Swap(0))
	}
}

// abort ends the task: it stops waiting for data, its context is
// cancelled, and when silent no response is sent for it.
func (t *task) abort(silent bool) {
	if silent {
		t.aborted.Store(true)
	}
	t.cancel()
	if t.claimed.CompareAndSwap(false, true) {
		// Not running yet (queued behind a CmdSN gap, or waiting for
		// data): it ends now. A queued CmdSN slot stays queued so the
		// window advances past it in order.
		t.finish()
	}
}

// ready drops one of the conditions the task waits for; the last one makes
// it runnable. Only a reader calls it, rc's (admission happens in the
// reader of whichever connection fills the CmdSN gap, write data in the
// reader of the task's own connection); rc starts the tasks after the PDU
// at hand is handled (startReady), outside the session lock.
func (t *task) ready(rc *conn) {
	if t.pending.Add(-1) == 0 && t.claimed.CompareAndSwap(false, true) {
		rc.runnable = append(rc.runnable, t)
	}
}

// startReady hands the tasks that became runnable to workers. They never
// run in the reader goroutine itself: a command stuck in a slow or hung
// device must not stop the connection from reading NOP-Outs, task
// management and commands for other LUNs. Each task runs on a worker of
// its own connection. Reader goroutine only.
func (c *conn) startReady() {
	for i, t := range c.runnable {
		c.runnable[i] = nil
		t.conn().dispatch(t)
	}
	c.runnable = c.runnable[:0]
}

// dispatch runs t on an idle worker goroutine of the connection, or on a
// new one. Workers live as long as the connection, so their number is
// bounded by the most tasks ever runnable at once (the queue depth), and
// their stacks are reused from command to command.
func (c *conn) dispatch(t *task) {
	c.active.Add(1)
	select {
	case c.work <- t:
	default:
		go c.worker(t)
	}
}

func (c *conn) worker(t *task) {
	for {
		t.run()
		c.active.Add(-1)
		select {
		case t = <-c.work:
		case <-c.done:
			return
		}
	}
}

// dataComplete reports whether every byte of write data has arrived.
func (t *task) dataComplete() bool { return t.received >= t.edtl }

// failed reports whether the task ends without executing its command:
// bad write data, more than MaxIOSize, or no room in the buffer budget.
// Reader goroutine only (until the task runs).
func (t *task) failed() bool { return t.failSense != nil || t.full }

// sequenceOpen reports whether a Data-Out sequence of the task has not
// seen its last PDU: the unsolicited burst, or an outstanding R2T.
func (t *task) sequenceOpen() bool {
	if t.unsolOpen {
		return true
	}
	for _, r := range t.r2ts {
		if !r.finished {
			return true
		}
	}
	return false
}

// endSequence closes the sequence m belongs to when m carries the F bit.
func (t *task) endSequence(m *pdu.DataOut) {
	if !m.Final {
		return
	}
	if m.TTT == pdu.ReservedTag {
		t.unsolOpen = false
		return
	}
	if r := t.findR2T(m.TTT); r != nil {
		r.finished = true
	}
}

// settleFailed makes a failed write task runnable (to send its status)
// once none of its Data-Out sequences is open: RFC 7143 §11.4 has the
// status wait for the data the initiator is still sending.
func (t *task) settleFailed(rc *conn) {
	if !t.dataDone && !t.sequenceOpen() {
		t.dataDone = true
		t.ready(rc)
	}
}

func (t *task) findR2T(ttt uint32) *r2t {
	for _, r := range t.r2ts {
		if r.ttt == ttt && !r.finished {
			return r
		}
	}
	return nil
}

// checkDataOut checks a Data-Out of n bytes against what the task expects:
// the next piece of the unsolicited burst, or of an outstanding R2T (which
// it returns).
func (t *task) checkDataOut(m *pdu.DataOut, n uint32) (*r2t, *pdu.ProtocolError) {
	bad := func(format string, args ...any) *pdu.ProtocolError {
		return &pdu.ProtocolError{Op: pdu.OpDataOut, Reason: pdu.RejectProtocolError, Msg: fmt.Sprintf(format, args...)}
	}
	if !t.write || t.bufp == nil || len(t.buf()) < int(t.edtl) {
		return nil, bad("task 0x%x takes no write data", m.ITT)
	}
	end := m.BufferOffset + n
	if m.TTT == pdu.ReservedTag {
		switch {
		case m.BufferOffset != t.unsolNext || end > t.unsolicited || end < m.BufferOffset:
			return nil, bad("unsolicited data at offset %d+%d outside the first burst of %d", m.BufferOffset, n, t.unsolicited)
		case m.DataSN != t.unsolDataSN:
			return nil, bad("DataSN %d, expected %d", m.DataSN, t.unsolDataSN)
		}
		return nil, nil
	}
	r := t.findR2T(m.TTT)
	switch {
	case r == nil:
		return nil, bad("no outstanding R2T with TTT 0x%x", m.TTT)
	case m.BufferOffset != r.offset || end > r.end || end < m.BufferOffset:
		return nil, bad("data at offset %d+%d does not continue the R2T at %d..%d", m.BufferOffset, n, r.offset, r.end)
	case m.DataSN != r.dataSN:
		return nil, bad("DataSN %d, expected %d", m.DataSN, r.dataSN)
	}
	return r, nil
}

// accept records n bytes of m, checked by checkDataOut (r is its R2T, or
// nil for unsolicited data), as received.
func (t *task) accept(m *pdu.DataOut, r *r2t, n uint32) {
	t.received += n
	if r == nil {
		t.unsolDataSN++
		t.unsolNext += n
		if m.Final || t.unsolNext == t.unsolicited {
			t.unsolOpen = false
		}
		return
	}
	r.dataSN++
	r.offset += n
	if r.offset == r.end {
		r.finished = true
	}
}

// run executes the task once its data has arrived and any ORDERED task
// before it has completed, then sends Data-In and status.
func (t *task) run() {
	defer t.finish()
	defer func() {
		if v := recover(); v != nil {
			c := t.conn()
			c.log.Error("panic executing a command; connection closed", "panic", v, "cdb", fmt.Sprintf("% x", t.cdb), "stack", string(debug.Stack()))
			c.close(fmt.Errorf("internal error: %v", v))
		}
	}()
	if t.barrier != nil {
		select {
		case <-t.barrier:
		case <-t.Done():
			return
		}
	}
	for _, w := range t.waitFor {
		select {
		case <-w.finished():
		case <-t.Done():
			return
		}
	}
	if t.failSense != nil {
		t.respond(&scsi.Result{Status: scsi.StatusCheckCondition, Sense: t.failSense})
		return
	}
	if t.full {
		t.respond(&scsi.Result{Status: scsi.StatusTaskSetFull})
		return
	}
	cmd := &t.scmd
	*cmd = scsi.Command{
		Nexus:     t.sess.nexus,
		LUN:       t.lun,
		CDB:       t.cdb,
		Attribute: t.attr,
	}
	if t.write {
		cmd.DataOut = t.buf()[:t.edtl]
	} else if t.read {
		cmd.DataIn = t.buf()
	}
	res := t.execute(cmd)
	if t.aborted.Load() {
		return
	}
	t.respond(&res)
}

// finish unregisters the task and frees its queue slot.
func (t *task) finish() {
	t.doneOnce.Do(func() {
		sess := t.sess
		sess.mu.Lock()
		if sess.tasks[t.itt] == t {
			delete(sess.tasks, t.itt)
		}
		t.freeSlotLocked()
		sess.mu.Unlock()
		if t.ordered != nil {
			close(t.ordered)
		}
		t.cancel()
		t.cancelMu.Lock()
		t.doneFlag = true
		if t.doneCh != nil {
			close(t.doneCh)
		}
		t.cancelMu.Unlock()
		t.release()
	})
}

func (t *task) freeSlotLocked() {
	if !t.slotFree {
		t.slotFree = true
		t.sess.inflight--
		t.sess.growWindow()
	}
}

// respond queues the task's Data-In PDUs and its status for the
// connection's writer. The data buffer stays referenced until written.
func (t *task) respond(res *scsi.Result) {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	c := t.conn()
	p := &c.params
	var resp pdu.SCSIResponse
	resp.ITT = t.itt
	resp.Status = uint8(res.Status)
	if tl := uint32(max(res.TransferLen, 0)); tl != t.edtl {
		switch {
		case tl < t.edtl:
			resp.Underflow, resp.ResidualCount = true, t.edtl-tl
		case tl > t.edtl:
			resp.Overflow, resp.ResidualCount = true, tl-t.edtl
		}
	}
	var dataSN uint32
	out := t.outBuf[:0]
	if t.read && res.DataInLen > 0 {
		n := min(uint32(res.DataInLen), t.edtl)
		data := t.buf()[:n]
		seg := p.InitiatorMaxRecvDataSegmentLength
		burst := p.MaxBurstLength
		// At ErrorRecoveryLevel 1 the status goes apart, so that SNACK
		// can ask for either, and the last Data-In asks for a DataACK.
		recovery := p.ErrorRecoveryLevel >= 1
		collapse := res.Status == scsi.StatusGood && len(res.Sense) == 0 && !recovery
		t.dataInLen, t.dataInSeg = n, seg
		if recovery {
			t.ackTTT = c.nextTTT()
		}
		for off := uint32(0); off < n; {
			// Data-In sequences are bounded by MaxBurstLength.
			l, final := dataInSegment(off, n, seg, burst)
			last := off+l == n
			din := pdu.DataIn{
				Final:        final,
				LUN:          t.lun,
				ITT:          t.itt,
				TTT:          pdu.ReservedTag,
				DataSN:       dataSN,
				BufferOffset: off,
				Data:         data[off : off+l],
			}
			out = append(out, outPDU{kind: statNone})
			e := &out[len(out)-1]
			if last && recovery {
				din.Acknowledge, din.TTT = true, t.ackTTT
			}
			if last && collapse {
				din.HasStatus = true
				din.Status = resp.Status
				din.Overflow, din.Underflow, din.ResidualCount = resp.Overflow, resp.Underflow, resp.ResidualCount
				e.kind = statAdvance
			}
			din.Encode(&e.p)
			dataSN++
			off += l
		}
		if collapse {
			t.send(c, out)
			return
		}
	} else if t.write {
		dataSN = t.r2tSN
	}
	resp.ExpDataSN = dataSN
	if len(res.Sense) > 0 {
		resp.Data = pdu.AppendSenseData(make([]byte, 0, 2+len(res.Sense)), res.Sense)
	}
	out = append(out, outPDU{kind: statAdvance})
	resp.Encode(&out[len(out)-1].p)
	if p.ErrorRecoveryLevel >= 2 {
		last := &out[len(out)-1].p
		t.status = &pdu.PDU{Header: last.Header, Data: last.Data}
	}
	t.send(c, out)
}

// send queues the task's last PDUs, holding a reference to its buffer
// until they are written. Before that the task leaves the session's task
// table and gives back its queue slot, so that the MaxCmdSN they carry
// already counts the slot as free, and (unless the buffer is kept for
// recovery) its share of the session's buffer budget, so that a command
// the initiator sends as soon as it sees the status finds the budget free
// (the buffer itself stays until the writer is done with it). Leaving the
// table first matters: once the status is
// out the initiator may reuse the task's tag at once, and at
// ErrorRecoveryLevel 1 ask for its Data-In again with a Data SNACK, while
// this goroutine has not finished the task yet.
//
// At ErrorRecoveryLevel 2 the task stays findable until its status is
// acknowledged, with its data buffer, so that TASK REASSIGN can send them
// again on another connection. Called with sendMu held.
func (t *task) send(c *conn, out []outPDU) {
	t.refs.Add(1)
	out[len(out)-1].owner = t
	erl := c.params.ErrorRecoveryLevel
	t.retire(erl >= 2)
	if erl == 0 || (erl == 1 && !(t.read && t.dataInLen > 0)) {
		// Above, the buffer is kept for SNACK or TASK REASSIGN until
		// the initiator acknowledges it, and keeps its share of the
		// budget till then (see release): an initiator that never
		// acknowledges runs out of budget, not the server of memory.
		t.sess.releaseBuffer(t.reserved.Swap(0))
	}
	t.responded = true
	c.queue(false, true, out...)
	clear(out)
}

// retire takes a task whose status is about to be queued out of the
// session's task table and gives back its queue slot; with keep
// (ErrorRecoveryLevel 2) it moves to the unacknowledged tasks, in the
// same critical section, so that TASK REASSIGN always finds it in one of
// the two.
func (t *task) retire(keep bool) {
	sess := t.sess
	sess.mu.Lock()
	if sess.tasks[t.itt] == t {
		delete(sess.tasks, t.itt)
	}
	t.freeSlotLocked()
	var old *task
	if keep {
		old = sess.keepUnackedLocked(t)
	}
	sess.mu.Unlock()
	if old != nil {
		old.release()
	}
}
