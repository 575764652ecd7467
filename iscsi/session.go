package iscsi

import (
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// session is an iSCSI session: one I_T nexus with its CmdSN window, its
// negotiated parameters and its tasks. Sessions here have one connection.
type session struct {
	srv            *Server
	tsih           uint16
	isid           [6]byte
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
	stats     sessionCounters // stats.go

	mu       sync.Mutex
	conn     *conn
	expCmdSN uint32
	maxCmdSN uint32
	inflight uint32
	// early holds commands that arrived ahead of ExpCmdSN inside the
	// window, keyed by CmdSN, until the gap is filled.
	early map[uint32]*task
	tasks map[uint32]*task // by ITT
	// barrier is closed when the most recent ORDERED task completes.
	barrier chan struct{}
	closed  bool
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
		initiatorName:  st.initiatorName,
		initiatorAlias: st.initiatorAlias,
		target:         st.target,
		discovery:      st.sessionType == "Discovery",
		params:         st.neg.Params(),
		depth:          uint32(st.target.queueDepth(s.opt.QueueDepth)),
		conn:           c,
		expCmdSN:       req.CmdSN,
		early:          make(map[uint32]*task),
		tasks:          make(map[uint32]*task),
	}
	sess.maxCmdSN = req.CmdSN + sess.depth - 1
	sess.bufBudget = int64(sess.depth) * int64(max(sess.params.MaxBurstLength, sess.params.FirstBurstLength))
	if sess.discovery {
		sess.depth = 1
		sess.maxCmdSN = req.CmdSN
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
		old := s.sessions[req.TSIH]
		s.mu.Unlock()
		if old == nil {
			return nil, loginFail(loginNoSession, "no session with TSIH %d", req.TSIH)
		}
		return nil, loginFail(loginTooManyConnections, "session %d allows one connection", req.TSIH)
	}
	var stale []*session
	for _, o := range s.sessions {
		if o.isid == sess.isid && o.initiatorName == sess.initiatorName && o.targetName() == sess.targetName() && !o.discovery && !sess.discovery {
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

// window returns ExpCmdSN and MaxCmdSN for a PDU about to be sent.
func (sess *session) window() (uint32, uint32) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	return sess.expCmdSN, sess.maxCmdSN
}

// growWindow raises MaxCmdSN as far as the free queue slots allow; it never
// lowers it. Called with mu held.
func (sess *session) growWindow() {
	free := int64(sess.depth) - int64(sess.inflight)
	if free < 1 {
		return
	}
	want := sess.expCmdSN + uint32(free) - 1
	if snGreater(want, sess.maxCmdSN) {
		sess.maxCmdSN = want
	}
}

// snGreater compares serial numbers per RFC 1982 (32-bit).
func snGreater(a, b uint32) bool { return a != b && int32(a-b) > 0 }

// snInWindow reports whether exp <= sn <= max in serial arithmetic.
func snInWindow(sn, exp, max uint32) bool {
	return !snGreater(exp, sn) && !snGreater(sn, max)
}

// connClosed is called when the session's connection ends: at
// ErrorRecoveryLevel 0 that ends the session.
func (sess *session) connClosed(c *conn) {
	sess.close(c.closeErr)
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
	c := sess.conn
	tasks := make([]*task, 0, len(sess.tasks))
	for _, t := range sess.tasks {
		tasks = append(tasks, t)
	}
	for _, t := range sess.early {
		tasks = append(tasks, t)
	}
	sess.mu.Unlock()
	if c != nil {
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
	sess.observeEnd(reason)
	if len(tasks) == 0 {
		sess.loseNexus()
	} else {
		sess.loseNexusAsync(nil)
	}
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
		sess.device.NexusLost(sess.nexus)
	})
}

// waitTasks waits until every task of the session has finished.
func (sess *session) waitTasks() {
	sess.mu.Lock()
	tasks := make([]*task, 0, len(sess.tasks))
	for _, t := range sess.tasks {
		tasks = append(tasks, t)
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
	if sess.conn != nil && !sess.conn.closed() {
		info.Connections = 1
		info.InitiatorAddr = sess.conn.nc.RemoteAddr().String()
	}
	info.InitiatorAlias, info.TargetAlias, info.Stats = sess.initiatorAlias, sess.targetAlias(), sess.statsLocked()
	return info
}
