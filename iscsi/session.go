package iscsi

import (
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// session is an iSCSI session: one I_T nexus with its CmdSN window, its
// negotiated parameters, its tasks and its connections (up to the
// negotiated MaxConnections, RFC 7143 §4.3.2). The session owns CmdSN;
// each connection owns its StatSN; each task has an allegiance to the
// connection its command arrived on, which carries its data and status.
type session struct {
	srv            *Server
	tsih           uint16
	isid           [6]byte
	tpgt           uint16 // the portal group its connections came through
	initiatorName  string
	initiatorAlias string
	target         *Target      // nil for discovery
	device         *scsi.Target // the target's LUN view for this initiator
	discovery      bool
	params         negotiate.Params
	nexus          scsi.Nexus
	depth          uint32
	// bufBudget bounds the bytes of data buffers the session's tasks hold
	// at once: the queue depth times the negotiated burst size (the larger
	// of MaxBurstLength and FirstBurstLength). A command that would go
	// beyond it ends with TASK SET FULL, which initiators retry.
	bufBudget int64
	bufUsed   atomic.Int64
	// tmfRunning counts the task management functions in progress; at
	// most depth run at once.
	tmfRunning atomic.Int64
	stats      sessionCounters // stats.go
	// lastConn is the connection that left the session last, which
	// says why the session ended when none is left (observer.go).
	lastConn atomic.Pointer[conn]

	mu sync.Mutex
	// conns are the session's connections in the full feature phase, by
	// CID.
	conns    map[uint16]*conn
	adm      admission // the CmdSN window and its ordered queue
	inflight uint32
	tasks    map[uint32]*task // by ITT
	// unacked holds, at ErrorRecoveryLevel 2, the tasks that answered
	// and whose status is not acknowledged yet, by ITT (see recovery.go);
	// timers the Time2Retain timers of failed connections.
	unacked map[uint32]*task
	timers  map[*conn]*time.Timer
	// idle holds the CIDs of connections that failed with no task to
	// reassign (no timer was started for them), until the CID logs in
	// again.
	idle map[uint16]bool
	// barrier is closed when the most recent ORDERED task completes.
	barrier chan struct{}
	closed  bool
	// ending: the session is about to end (logged out, its last
	// connection gone at ErrorRecoveryLevel 0, Time2Retain run out with
	// no connection left) and takes no new connection, so that a login
	// joining it now is refused instead of being closed right after it
	// succeeded.
	ending bool
	// nexusGone runs the SCSI layer's I_T nexus loss once the session's
	// tasks have finished; a reinstating login waits for it.
	nexusGone sync.Once
}

// createSession makes the session a completed login asks for, ending an
// older session of the same initiator port on the same target
// (reinstatement, RFC 7143 §6.3.5).
func (s *Server) createSession(c *conn, st *loginState) (*session, error) {
	req := st.first
	sess := &session{
		srv:            s,
		isid:           req.ISID,
		tpgt:           c.tpgt,
		initiatorName:  st.initiatorName,
		initiatorAlias: st.initiatorAlias,
		target:         st.target,
		discovery:      st.sessionType == "Discovery",
		params:         st.neg.Params(),
		depth:          uint32(st.target.queueDepth(s.opt.QueueDepth)),
		conns:          map[uint16]*conn{c.cid: c},
		adm:            admission{exp: req.CmdSN, early: make(map[uint32]admittee)},
		tasks:          make(map[uint32]*task),
		unacked:        make(map[uint32]*task),
		timers:         make(map[*conn]*time.Timer),
	}
	sess.adm.max = req.CmdSN + sess.depth - 1
	sess.bufBudget = int64(sess.depth) * int64(max(sess.params.MaxBurstLength, sess.params.FirstBurstLength))
	if sess.discovery {
		sess.depth = 1
		sess.adm.max = req.CmdSN
	}
	if st.target != nil {
		sess.device = st.target.deviceFor(st.initiatorName)
		tpgt := c.tpgt
		sess.nexus = scsi.Nexus{
			InitiatorPort:  fmt.Sprintf("%s,i,0x%012x", st.initiatorName, req.ISID[:]),
			TargetName:     st.target.Name,
			TargetPort:     fmt.Sprintf("%s,t,0x%04x", st.target.Name, tpgt),
			RelativePortID: tpgt,
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, loginFail(loginUnavailable, "server shutting down")
	}
	if req.TSIH != 0 {
		s.mu.Unlock()
		old := s.sessionFor(req.TSIH, st, c.tpgt)
		if old == nil {
			return nil, loginFail(loginNoSession, "no session with TSIH %d for this initiator port and target", req.TSIH)
		}
		return old, old.join(c)
	}
	var stale []*session
	for _, o := range s.sessions {
		// Reinstatement is of the same I_T nexus: initiator port
		// (name and ISID) and target port (name and portal group), RFC
		// 7143 §4.4.3. A multipath initiator may use one ISID through
		// several portal groups; those sessions stand side by side.
		if o.isid == sess.isid && o.initiatorName == sess.initiatorName && o.targetName() == sess.targetName() && o.tpgt == sess.tpgt && !o.discovery && !sess.discovery {
			stale = append(stale, o)
		}
	}
	for {
		s.nextTSIH++
		if s.nextTSIH == 0 {
			continue
		}
		if _, taken := s.sessions[s.nextTSIH]; !taken {
			break
		}
	}
	sess.tsih = s.nextTSIH
	s.sessions[sess.tsih] = sess
	s.mu.Unlock()
	for _, o := range stale {
		o.close(fmt.Errorf("reinstated by a new login with the same ISID"))
		// Wait for the old nexus to be gone, but not past this
		// connection's end: a command of the old session hung in its
		// device must not keep Server.Close waiting for this login.
		lost := make(chan struct{})
		o.loseNexusAsync(lost)
		select {
		case <-lost:
		case <-c.done:
			s.mu.Lock()
			if s.sessions[sess.tsih] == sess {
				delete(s.sessions, sess.tsih)
			}
			s.mu.Unlock()
			return nil, net.ErrClosed
		}
	}
	return sess, nil
}

// sessionFor returns the session with handle tsih when it belongs to the
// initiator port and target of the login st and to portal group tpgt (the
// connections of a session share one), or nil.
func (s *Server) sessionFor(tsih uint16, st *loginState, tpgt uint16) *session {
	s.mu.Lock()
	sess := s.sessions[tsih]
	s.mu.Unlock()
	if sess == nil || sess.isid != st.first.ISID || sess.initiatorName != st.initiatorName || sess.tpgt != tpgt ||
		sess.targetName() != st.targetName || sess.discovery != (st.sessionType == "Discovery") {
		return nil
	}
	return sess
}

func (sess *session) targetName() string {
	if sess.target == nil {
		return ""
	}
	return sess.target.Name
}

// reserveBuffer takes n bytes of the session's buffer budget, reporting
// whether they were free. A request larger than the whole budget takes all
// of it, so one command of any size the server allows can still run alone.
func (sess *session) reserveBuffer(n int64) (int64, bool) {
	n = min(n, sess.bufBudget)
	for {
		used := sess.bufUsed.Load()
		if used+n > sess.bufBudget {
			return 0, false
		}
		if sess.bufUsed.CompareAndSwap(used, used+n) {
			return n, true
		}
	}
}

// releaseBuffer gives back bytes reserveBuffer took.
func (sess *session) releaseBuffer(n int64) { sess.bufUsed.Add(-n) }

// join adds c to the session (a login with the session's TSIH, RFC 7143
// §4.3.2): a connection with the same CID is replaced (connection
// reinstatement, §6.3.4), whose tasks end without a response at
// ErrorRecoveryLevel 0; otherwise the session must have room under its
// negotiated MaxConnections.
func (sess *session) join(c *conn) error {
	sess.mu.Lock()
	if sess.closed || sess.ending {
		sess.mu.Unlock()
		return loginFail(loginNoSession, "session %d is ending", sess.tsih)
	}
	old := sess.conns[c.cid]
	if old == nil && uint32(len(sess.conns)) >= sess.params.MaxConnections {
		sess.mu.Unlock()
		return loginFail(loginTooManyConnections, "session %d has its maximum of %d connections", sess.tsih, sess.params.MaxConnections)
	}
	sess.conns[c.cid] = c
	delete(sess.idle, c.cid)
	sess.mu.Unlock()
	if old != nil {
		old.close(errReinstated)
		if sess.recovers() {
			sess.connFailed(old)
		} else {
			sess.endConnTasks(old)
		}
	}
	return nil
}

// errReinstated ends a connection replaced by a login with its CID.
var errReinstated = errors.New("connection reinstated by a new login with its CID")

// connClosed is called when one of the session's connections ends. A
// connection that logged out (reason "close the connection") or was
// replaced leaves the session, which ends with its last connection. A
// connection that failed ends the session: at ErrorRecoveryLevel 0 a
// connection failure is recovered by session recovery only (RFC 7143
// §7.1.5); at level 2 with a DefaultTime2Retain its tasks wait for TASK
// REASSIGN instead (see connFailed), and without one they end while the
// session goes on on its other connections.
func (sess *session) connClosed(c *conn) {
	sess.mu.Lock()
	mine := sess.conns[c.cid] == c
	if mine {
		delete(sess.conns, c.cid)
		sess.lastConn.Store(c)
	}
	left := len(sess.conns)
	loggedOut := c.loggedOut.Load()
	if mine && ((loggedOut && left == 0) || (!loggedOut && !sess.recovers() && (sess.params.ErrorRecoveryLevel < 2 || left == 0))) {
		sess.ending = true // the session ends below
	}
	sess.mu.Unlock()
	if !mine {
		return // replaced: join took care of its tasks
	}
	switch {
	case loggedOut:
		sess.endConnTasks(c)
		if left == 0 {
			sess.close(c.closeErr)
		}
	case sess.recovers():
		// Failed, or removed for recovery: its tasks wait for TASK
		// REASSIGN, and the session for a connection, until Time2Retain.
		sess.connFailed(c)
	case sess.params.ErrorRecoveryLevel >= 2 && left > 0:
		// Connection recovery with DefaultTime2Retain 0: nothing is
		// kept, and the session goes on on its other connections.
		sess.endConnTasks(c)
		sess.dropUnacked(c)
	default:
		sess.close(c.closeErr)
	}
}

// endConnTasks ends the tasks with allegiance to c, a connection that left
// the session: they cannot send their data or status any more.
func (sess *session) endConnTasks(c *conn) {
	sess.mu.Lock()
	var tasks []*task
	for _, t := range sess.tasks {
		// A task moving away by TASK REASSIGN goes on elsewhere.
		if t.conn() == c && !t.moving.Load() {
			tasks = append(tasks, t)
		}
	}
	for _, t := range sess.queuedTasksLocked() {
		if t.conn() == c {
			tasks = append(tasks, t)
		}
	}
	sess.mu.Unlock()
	for _, t := range tasks {
		t.abort(true)
	}
}

// connList returns the session's connections.
func (sess *session) connList() []*conn {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	out := make([]*conn, 0, len(sess.conns))
	for _, c := range sess.conns {
		out = append(out, c)
	}
	return out
}

// close ends the session: its connection is closed, its tasks aborted, the
// SCSI layer told that the nexus is gone, and the TSIH released.
func (sess *session) close(reason error) {
	sess.mu.Lock()
	if sess.closed {
		sess.mu.Unlock()
		return
	}
	sess.closed = true
	conns := make([]*conn, 0, len(sess.conns))
	for _, c := range sess.conns {
		conns = append(conns, c)
	}
	tasks := make([]*task, 0, len(sess.tasks))
	for _, t := range sess.tasks {
		tasks = append(tasks, t)
	}
	tasks = append(tasks, sess.queuedTasksLocked()...)
	sess.mu.Unlock()
	sess.stopTimers()
	sess.dropUnacked(nil)
	for _, c := range conns {
		c.close(reason)
	}
	for _, t := range tasks {
		t.abort(false)
	}
	sess.srv.mu.Lock()
	if sess.srv.sessions[sess.tsih] == sess {
		delete(sess.srv.sessions, sess.tsih)
	}
	sess.srv.mu.Unlock()
	sess.srv.sessionEnding()
	sess.observeEnd(reason)
	if len(tasks) == 0 {
		sess.loseNexus()
		sess.srv.sessionEnded()
		return
	}
	done := make(chan struct{})
	sess.loseNexusAsync(done)
	go func() { <-done; sess.srv.sessionEnded() }()
}

// loseNexusAsync runs loseNexus on its own goroutine; a panic in the SCSI
// layer's nexus-loss handling is logged and ends that goroutine only.
func (sess *session) loseNexusAsync(done chan<- struct{}) {
	go func() {
		if done != nil {
			defer close(done)
		}
		defer func() {
			if v := recover(); v != nil {
				sess.srv.log.Error("panic while ending an I_T nexus", "initiator", sess.initiatorName, "panic", v, "stack", string(debug.Stack()))
			}
		}()
		sess.loseNexus()
	}()
}

// loseNexus tells the SCSI layer, once, that the session's I_T nexus ended,
// after its tasks have finished. A caller that comes second waits until it
// is done, so a login reusing the nexus never races with it.
func (sess *session) loseNexus() {
	sess.nexusGone.Do(func() {
		if sess.target == nil {
			return
		}
		sess.waitTasks()
		sess.device.Transport().NexusLost(sess.nexus)
	})
}

// waitTasks waits until every task of the session has finished.
func (sess *session) waitTasks() { sess.waitTasksOf(nil) }

// waitTasksOf waits until every task with allegiance to c (to any
// connection when nil) has finished.
func (sess *session) waitTasksOf(c *conn) {
	sess.mu.Lock()
	tasks := make([]*task, 0, len(sess.tasks))
	for _, t := range sess.tasks {
		if c == nil || t.conn() == c {
			tasks = append(tasks, t)
		}
	}
	sess.mu.Unlock()
	for _, t := range tasks {
		<-t.finished()
	}
}

func (sess *session) info() SessionInfo {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	info := SessionInfo{
		TSIH:          sess.tsih,
		ISID:          sess.isid,
		InitiatorName: sess.initiatorName,
		TargetName:    sess.targetName(),
		Discovery:     sess.discovery,
		Params:        sess.params,
	}
	first := -1
	for cid, c := range sess.conns {
		if c.closed() {
			continue
		}
		info.Connections++
		if first < 0 || int(cid) < first {
			first = int(cid)
			info.InitiatorAddr = c.nc.RemoteAddr().String()
		}
	}
	info.InitiatorAlias, info.TargetAlias, info.Stats = sess.initiatorAlias, sess.targetAlias(), sess.statsLocked()
	return info
}
