package iscsi

import (
	"fmt"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// abortWait bounds how long a task management function waits for the tasks
// it aborted to finish before it answers.
const abortWait = 10 * time.Second

// handleTaskMgmt runs a task management function (RFC 7143 §11.5) in its
// own goroutine, so the reader keeps draining the connection meanwhile.
func (c *conn) handleTaskMgmt(p *pdu.PDU, admitted bool) error {
	var m pdu.TaskMgmtRequest
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	sess := c.sess()
	if !m.Immediate && !admitted && !c.admitControl(p, m.CmdSN) {
		return nil
	}
	// ABORT TASK finds its task here, in the reader, because a task never
	// received consumes its CmdSN in the session's queue, which only the
	// reader feeds.
	if m.Function == pdu.TMFTaskReassign {
		// In the reader: the task's data phase resumes on this
		// connection after the response.
		t, answer := c.reassign(&m)
		if err := c.sendMessage(&pdu.TaskMgmtResponse{ITT: m.ITT, Response: answer}, statAdvance); err != nil {
			if t != nil {
				t.unmove()
			}
			return err
		}
		if t == nil {
			return nil
		}
		return c.resume(t, m.ExpDataSN)
	}
	if sess.tmfRunning.Add(1) > int64(sess.depth) {
		// As many task management functions as the queue is deep are
		// already waiting for their tasks (a device that hangs): this
		// one is refused at once rather than adding a goroutine.
		sess.tmfRunning.Add(-1)
		c.tmfDone(&m, pdu.TMFResponseRejected)
		return c.sendMessage(&pdu.TaskMgmtResponse{ITT: m.ITT, Response: pdu.TMFResponseRejected}, statAdvance)
	}
	var target *task
	var answer uint8
	if m.Function == pdu.TMFAbortTask {
		target, answer = c.abortTarget(&m)
	}
	go func() {
		defer sess.tmfRunning.Add(-1)
		// Like the connection and task goroutines, a panic here (in the
		// SCSI layer's reset or abort handling) ends this connection only.
		defer c.containPanic(fmt.Sprintf("task management function %d", m.Function))
		resp := pdu.TaskMgmtResponse{ITT: m.ITT, Response: answer}
		switch {
		case target != nil:
			abortAndWait([]*task{target})
		case m.Function != pdu.TMFAbortTask:
			resp.Response = c.taskMgmt(&m)
		}
		c.tmfDone(&m, resp.Response)
		c.sendMessage(&resp, statAdvance)
		if m.Function == pdu.TMFTargetColdReset && resp.Response == pdu.TMFResponseComplete {
			// A cold reset ends every session of the target, this one included.
			for _, s := range c.srv.sessionsOf(sess.target) {
				s.close(errTargetReset)
			}
		}
	}()
	return nil
}

type resetError struct{}

func (resetError) Error() string { return "target cold reset" }

var errTargetReset error = resetError{}

func (c *conn) taskMgmt(m *pdu.TaskMgmtRequest) uint8 {
	sess := c.sess()
	dev := sess.device
	lunExists := func() bool {
		lun, ok := scsi.DecodeLUN(m.LUN)
		if !ok {
			return false
		}
		for _, l := range dev.LUNs() {
			if l == lun {
				return true
			}
		}
		return false
	}
	switch m.Function {
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet:
		if !lunExists() {
			return pdu.TMFResponseNoLUN
		}
		sessions := []*session{sess}
		if m.Function == pdu.TMFClearTaskSet {
			sessions = c.srv.sessionsOf(sess.target)
		}
		abortAndWait(tasksOn(sessions, m.LUN, m.ITT))
		return pdu.TMFResponseComplete
	case pdu.TMFLogicalUnitReset:
		if !lunExists() {
			return pdu.TMFResponseNoLUN
		}
		abortAndWait(tasksOn(c.srv.sessionsOf(sess.target), m.LUN, m.ITT))
		if err := dev.Transport().ResetLogicalUnit(sess.nexus, m.LUN); err != nil {
			return pdu.TMFResponseRejected
		}
		return pdu.TMFResponseComplete
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		var all []*task
		for _, s := range c.srv.sessionsOf(sess.target) {
			all = append(all, s.allTasks(m.ITT)...)
		}
		abortAndWait(all)
		dev.Transport().ResetTarget(sess.nexus, m.Function == pdu.TMFTargetColdReset)
		return pdu.TMFResponseComplete
	default:
		// CLEAR ACA: ACA is never established (NACA=1 is refused).
		return pdu.TMFResponseNotSupported
	}
}

// abortTarget finds the task an ABORT TASK request names. It returns the
// task and TMFResponseComplete, or no task and the answer to give at once:
// a task not received yet whose CmdSN lies in the window, before this
// request, counts as received and aborted (RFC 7143 §11.5.1 b), so its
// CmdSN is consumed and it will not run if it comes later; one outside the
// window (completed, or never sent) does not exist. Reader goroutine only.
func (c *conn) abortTarget(m *pdu.TaskMgmtRequest) (*task, uint8) {
	sess := c.sess()
	sess.mu.Lock()
	defer sess.mu.Unlock()
	if t := sess.tasks[m.RTT]; t != nil && t.lun == m.LUN {
		return t, pdu.TMFResponseComplete
	}
	if snInWindow(m.RefCmdSN, sess.adm.exp, sess.adm.max) && snGreater(m.CmdSN, m.RefCmdSN) {
		sess.consumeLocked(c, m.RefCmdSN)
		return nil, pdu.TMFResponseComplete
	}
	return nil, pdu.TMFResponseNoTask
}

// sessionsOf lists the live sessions logged in to t.
func (s *Server) sessionsOf(t *Target) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, sess := range s.sessions {
		if sess.target == t {
			out = append(out, sess)
		}
	}
	return out
}

// allTasks returns the session's tasks, except the one with ITT skip.
func (sess *session) allTasks(skip uint32) []*task {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	out := make([]*task, 0, len(sess.tasks))
	for itt, t := range sess.tasks {
		if itt != skip {
			out = append(out, t)
		}
	}
	return out
}

// tasksOn returns the tasks of the sessions addressed to lun.
func tasksOn(sessions []*session, lun uint64, skip uint32) []*task {
	var out []*task
	for _, s := range sessions {
		for _, t := range s.allTasks(skip) {
			if t.lun == lun {
				out = append(out, t)
			}
		}
	}
	return out
}

// abortAndWait aborts tasks silently and waits for them to finish.
func abortAndWait(tasks []*task) {
	for _, t := range tasks {
		t.abort(true)
	}
	deadline := time.NewTimer(abortWait)
	defer deadline.Stop()
	for _, t := range tasks {
		select {
		case <-t.finished():
		case <-deadline.C:
			return
		}
	}
}
