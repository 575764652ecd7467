package iscsi

import (
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// admission is a session's one ordered CmdSN queue (RFC 7143 §3.2.2.1,
// §4.2.2.1). Every PDU that carries a CmdSN and is not immediate (SCSI
// Command, NOP-Out, Text, Task Management and Logout requests) goes through
// offer, whatever connection it arrived on, and consuming CmdSNs in order
// is the queue's only job: a gap, an abort of a task never received or a
// PDU of any kind ahead of its turn cannot leave the window stuck.
//
// What happens once a CmdSN is consumed belongs to the entry: a task is
// started (on a worker of its own connection), a control PDU is run for
// the connection it arrived on (its allegiance): inline when that is the
// connection whose reader consumed it, else handed over to that connection
// (see handOff). The session owns the CmdSN window; each connection owns
// its StatSN. Guarded by session.mu.
type admission struct {
	exp uint32 // ExpCmdSN: the next CmdSN to consume
	max uint32 // MaxCmdSN: the highest CmdSN the initiator may send
	// early holds what arrived ahead of exp inside the window, by CmdSN,
	// until the gap before it is filled.
	early map[uint32]admittee
}

// admittee is what holds a CmdSN in the queue: a task, a control PDU, or
// neither, for a CmdSN that counts as received although its PDU never came
// (the referenced task of an ABORT TASK that was never received, RFC 7143
// §11.5.1).
type admittee struct {
	task *task
	ctl  *deferredPDU
}

// deferredPDU is a control PDU (NOP-Out, Text, Task Management or Logout
// request) that arrived ahead of its CmdSN: a copy of it, run by its
// connection's reader once its turn comes.
type deferredPDU struct {
	c *conn
	p pdu.PDU
}

// verdict is what offer decided about a PDU.
type verdict int

const (
	// outside: the CmdSN is outside the window or already taken; the PDU
	// is ignored (RFC 7143 §4.2.2.1).
	outside verdict = iota
	// queued: the PDU waits for the gap before it to be filled.
	queued
	// admitted: the PDU's CmdSN was consumed; the caller runs it now.
	admitted
)

// offerLocked puts a non-immediate PDU with CmdSN sn in the queue. When sn
// is the next CmdSN it is consumed at once, a task is started, and the
// entries queued behind it whose turn has now come are consumed in order.
// rc is the connection whose reader offers it. Called with session.mu held.
func (sess *session) offerLocked(rc *conn, sn uint32, a admittee) verdict {
	q := &sess.adm
	if !snInWindow(sn, q.exp, q.max) {
		return outside
	}
	if sn != q.exp {
		if _, taken := q.early[sn]; taken {
			return outside
		}
		if a.ctl != nil {
			// The reader reuses its PDU buffers: keep a copy.
			a.ctl.p.Data = append([]byte(nil), a.ctl.p.Data...)
			a.ctl.p.AHS = append([]byte(nil), a.ctl.p.AHS...)
		}
		q.early[sn] = a
		return queued
	}
	q.exp++
	if a.task != nil {
		sess.startLocked(rc, a.task)
	}
	sess.drainLocked(rc)
	sess.growWindow()
	return admitted
}

// consumeLocked counts CmdSN sn as received without a PDU: the task an
// ABORT TASK names was never received, and it must neither run if it comes
// later nor hold up the commands after it. Called with session.mu held.
func (sess *session) consumeLocked(rc *conn, sn uint32) {
	sess.offerLocked(rc, sn, admittee{})
}

// drainLocked consumes the queued entries whose turn has come, in the
// reader of rc: the tasks become runnable there, the control PDUs join its
// deferred list.
func (sess *session) drainLocked(rc *conn) {
	q := &sess.adm
	for {
		a, ok := q.early[q.exp]
		if !ok {
			return
		}
		delete(q.early, q.exp)
		q.exp++
		switch {
		case a.task != nil:
			select {
			case <-a.task.finished(): // aborted while queued
			default:
				sess.startLocked(rc, a.task)
			}
		case a.ctl != nil:
			rc.deferred = append(rc.deferred, a.ctl)
		}
	}
}

// startLocked hands an admitted task to its goroutine, after applying the
// task-attribute ordering rules, in the reader of rc. Called with sess.mu
// held.
func (sess *session) startLocked(rc *conn, t *task) {
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
	t.ready(rc)
}

// queuedTasksLocked returns the tasks waiting in the queue for their turn.
func (sess *session) queuedTasksLocked() []*task {
	var out []*task
	for _, a := range sess.adm.early {
		if a.task != nil {
			out = append(out, a.task)
		}
	}
	return out
}

// window returns ExpCmdSN and MaxCmdSN for a PDU about to be sent.
func (sess *session) window() (uint32, uint32) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.adm.exp, sess.adm.max
}

// inWindow reports whether sn lies in the command window now.
func (sess *session) inWindow(sn uint32) bool {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return snInWindow(sn, sess.adm.exp, sess.adm.max)
}

// growWindow raises MaxCmdSN as far as the free queue slots allow; it never
// lowers it. Called with mu held.
func (sess *session) growWindow() {
	free := int64(sess.depth) - int64(sess.inflight)
	if free < 1 {
		return
	}
	want := sess.adm.exp + uint32(free) - 1
	if snGreater(want, sess.adm.max) {
		sess.adm.max = want
	}
}

// snGreater compares serial numbers per RFC 1982 (32-bit).
func snGreater(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// snInWindow reports whether exp <= sn <= max in serial arithmetic.
func snInWindow(sn, exp, max uint32) bool {
	return !snGreater(exp, sn) && !snGreater(sn, max)
}

// admitControl passes a non-immediate control PDU p with CmdSN sn through
// the session's queue. It reports whether the PDU runs now; a PDU ahead of
// its turn is kept and run later by runDeferred, one outside the window is
// ignored. Reader goroutine only.
func (c *conn) admitControl(p *pdu.PDU, sn uint32) bool {
	sess := c.sess()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if sess.closed {
		return false
	}
	switch sess.offerLocked(c, sn, admittee{ctl: &deferredPDU{c: c, p: *p}}) {
	case admitted:
		return true
	case outside:
		c.log.Debug("ignoring PDU outside the CmdSN window", "opcode", p.Opcode().String(), "cmdsn", sn)
	}
	return false
}

// runDeferred runs the control PDUs whose CmdSN turn came while another
// PDU was handled, in CmdSN order, and starts what they make runnable. A
// PDU that arrived on another connection of the session is handed over to
// it. Reader goroutine only.
func (c *conn) runDeferred() error {
	for len(c.deferred) > 0 {
		d := c.deferred[0]
		c.deferred[0] = nil
		c.deferred = c.deferred[1:]
		if d.c != c {
			d.c.handOff(d)
			continue
		}
		err := c.handleControl(&d.p, true)
		c.startReady()
		if err != nil {
			return err
		}
	}
	c.deferred = nil
	return nil
}

// handOff gives c a control PDU of its own whose CmdSN turn came in the
// reader of another connection of the session. c's reader may be blocked
// reading, so a goroutine runs the handed PDUs, in the order they came,
// holding c.rmu like the reader does; it ends when none is left. A PDU
// that ends the connection (a logout) closes it from there.
func (c *conn) handOff(d *deferredPDU) {
	c.hmu.Lock()
	c.handed = append(c.handed, d)
	start := !c.handing
	c.handing = true
	c.hmu.Unlock()
	if start {
		go c.runHanded()
	}
}

func (c *conn) runHanded() {
	defer c.containPanic("hand-off")
	for {
		c.hmu.Lock()
		if len(c.handed) == 0 {
			c.handing = false
			c.hmu.Unlock()
			return
		}
		d := c.handed[0]
		c.handed[0] = nil
		c.handed = c.handed[1:]
		c.hmu.Unlock()
		c.rmu.Lock()
		err := c.handleControl(&d.p, true)
		c.startReady()
		if err == nil {
			err = c.runDeferred()
		}
		c.rmu.Unlock()
		if err != nil {
			c.close(err)
		}
	}
}
