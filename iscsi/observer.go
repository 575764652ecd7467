package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	// EventLogin: a login succeeded and its session (normal or
	// discovery) entered full feature phase.
	EventLogin EventKind = iota + 1
	// EventLoginFailed: a login was refused (LoginStatus, Reason) or its
	// connection dropped before it completed (Reason, Err: a timeout, a
	// broken PDU). A client that just closes the connection is not
	// reported.
	EventLoginFailed
	// EventLogout: a session or connection logged out.
	EventLogout
	// EventConnectionEnded: a connection in full feature phase ended
	// other than by logout (Reason, Err: the peer closed it, a protocol
	// error, a NOP-In timeout, a reset...).
	EventConnectionEnded
	// EventSessionEnded: a session ended (Reason, Err), whatever the
	// cause, logout included.
	EventSessionEnded
	// EventTaskManagement: a task management function was answered
	// (TMF, TMFResponse, LUN).
	EventTaskManagement
	// EventUnit: something happened to a logical unit (Unit, UnitName),
	// reported through a hook from Server.UnitObserver.
	EventUnit
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventLogin:
		return "login"
	case EventLoginFailed:
		return "login failed"
	case EventLogout:
		return "logout"
	case EventConnectionEnded:
		return "connection ended"
	case EventSessionEnded:
		return "session ended"
	case EventTaskManagement:
		return "task management"
	case EventUnit:
		return "unit"
	}
	return "unknown"
}

// Event is something that happened on a Server, for Options.Observer.
// Fields that do not apply to a kind are zero.
type Event struct {
	Kind EventKind
	// Time is when it happened.
	Time time.Time
	// InitiatorName, InitiatorAlias and InitiatorAddr (host:port) name
	// the initiator, as far as known; TargetName the target (empty for
	// discovery sessions).
	InitiatorName, InitiatorAlias, InitiatorAddr, TargetName string
	// TSIH and ISID identify the session; Discovery is set for discovery
	// sessions.
	TSIH      uint16
	ISID      [6]byte
	Discovery bool
	// Reason says why a login failed or a session or connection ended;
	// Err is the cause, when there is one, for errors.Is.
	Reason string
	Err    error
	// LoginStatus is the status (class << 8 | detail, RFC 7143
	// §11.13.5) sent to a refused login; 0 when the login was dropped
	// without a response.
	LoginStatus uint16
	// TMF names the task management function ("ABORT TASK", ...),
	// TMFResponse is the response code sent, LUN the LUN field.
	TMF         string
	TMFResponse uint8
	LUN         uint64
	// Unit is the logical unit's event and UnitName the name given to
	// Server.UnitObserver (EventUnit).
	Unit     scsi.UnitEvent
	UnitName string
}

// Observer receives a Server's events (Options.Observer).
//
// The server never calls Observe with one of its locks held, nor from a
// goroutine that reads or writes a connection: events are queued (the
// queue holds Options.ObserverQueue events) and delivered in order, one
// at a time, by a goroutine of their own that exists while there are
// events to deliver. A slow observer therefore delays only later events;
// when the queue is full, new events are dropped and counted in
// ServerStats.EventsDropped. A panic in Observe is logged and the event
// dropped. Events may still arrive after Shutdown or Close returns.
type Observer interface {
	Observe(Event)
}

// ObserverFunc makes a function an Observer.
type ObserverFunc func(Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// defaultObserverQueue is the default of Options.ObserverQueue.
const defaultObserverQueue = 1024

// eventQueue is a bounded queue of events for the observer.
type eventQueue struct {
	mu      sync.Mutex
	ring    []Event
	head, n int
	running bool // a delivery goroutine is running
	dropped atomic.Uint64
}

// emit queues e for the observer, without blocking.
func (s *Server) emit(e Event) {
	if s.opt.Observer == nil {
		return
	}
	e.Time = time.Now()
	q := &s.events
	q.mu.Lock()
	if q.ring == nil {
		size := s.opt.ObserverQueue
		if size <= 0 {
			size = defaultObserverQueue
		}
		q.ring = make([]Event, size)
	}
	if q.n == len(q.ring) {
		q.mu.Unlock()
		q.dropped.Add(1)
		return
	}
	q.ring[(q.head+q.n)%len(q.ring)] = e
	q.n++
	start := !q.running
	q.running = true
	q.mu.Unlock()
	if start {
		go s.deliver()
	}
}

// deliver hands queued events to the observer until the queue is empty.
func (s *Server) deliver() {
	q := &s.events
	for {
		q.mu.Lock()
		if q.n == 0 {
			q.running = false
			q.mu.Unlock()
			return
		}
		e := q.ring[q.head]
		q.ring[q.head] = Event{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.mu.Unlock()
		s.observe(e)
	}
}

// observe calls the observer, containing a panic.
func (s *Server) observe(e Event) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in observer; event dropped", "event", e.Kind.String(), "panic", v, "stack", string(debug.Stack()))
		}
	}()
	s.opt.Observer.Observe(e)
}

// UnitObserver returns a hook for scsi.LogicalUnit.SetObserver that
// queues the unit's events for Options.Observer as EventUnit, with name
// (the embedder's name for the unit, such as its extent) in UnitName.
// It never blocks, so it is safe under the unit's lock. On a nil Server,
// or one without an Observer, it returns nil (no hook).
func (s *Server) UnitObserver(name string) scsi.UnitObserver {
	if s == nil || s.opt.Observer == nil {
		return nil
	}
	return func(u scsi.UnitEvent) {
		initiator, _, _ := strings.Cut(u.Nexus.InitiatorPort, ",i,")
		s.emit(Event{Kind: EventUnit, Unit: u, UnitName: name, InitiatorName: initiator, TargetName: u.Nexus.TargetName})
	}
}

// event fills an event with the session's identity and the address of
// connection c (of the session's first connection when c is nil).
func (sess *session) event(kind EventKind, c *conn) Event {
	e := Event{
		Kind:           kind,
		InitiatorName:  sess.initiatorName,
		InitiatorAlias: sess.initiatorAlias,
		TargetName:     sess.targetName(),
		TSIH:           sess.tsih,
		ISID:           sess.isid,
		Discovery:      sess.discovery,
	}
	if c == nil {
		c = sess.firstConn()
	}
	if c != nil {
		e.InitiatorAddr = c.nc.RemoteAddr().String()
	}
	return e
}

// firstConn returns the session's connection of the lowest CID, or nil.
func (sess *session) firstConn() *conn {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	var first *conn
	for _, c := range sess.conns {
		if first == nil || c.cid < first.cid {
			first = c
		}
	}
	return first
}

// loggedIn logs and reports a login that reached full feature phase. The
// log record is INFO with Options.LogSessions, DEBUG otherwise.
func (c *conn) loggedIn(sess *session) {
	c.srv.counters.logins.Add(1)
	level := slog.LevelDebug
	if c.srv.opt.LogSessions {
		level = slog.LevelInfo
	}
	c.log.Log(context.Background(), level, "session established", "target", sess.targetName(), "discovery", sess.discovery, "isid", fmt.Sprintf("%x", sess.isid[:]))
	c.srv.emit(sess.event(EventLogin, c))
}

// loginFailed counts and reports a login that failed with err (a
// *loginError when a Login Response said so). Clients that closed the
// connection are not reported.
func (c *conn) loginFailed(st *loginState, err error) {
	if err == nil || isEOF(err) || errors.Is(err, net.ErrClosed) || errors.Is(err, errDisplaced) {
		return
	}
	c.srv.counters.loginsFailed.Add(1)
	e := Event{
		Kind:           EventLoginFailed,
		InitiatorName:  st.initiatorName,
		InitiatorAlias: st.initiatorAlias,
		InitiatorAddr:  c.nc.RemoteAddr().String(),
		TargetName:     st.targetName,
		ISID:           st.first.ISID,
		Discovery:      st.sessionType == "Discovery",
		Reason:         err.Error(),
		Err:            err,
	}
	var le *loginError
	if errors.As(err, &le) {
		e.LoginStatus, e.Reason = le.status, le.msg
	}
	c.srv.emit(e)
}

// ended records why the full feature phase of the connection ended (err
// from its reader) and reports a logout or the connection's loss.
func (c *conn) ended(err error) {
	if err == nil {
		err = io.EOF
	}
	c.endErr.Store(&err)
	if errors.Is(err, pdu.ErrHeaderDigest) {
		c.digestError()
	}
	sess := c.sess()
	if sess == nil {
		return
	}
	if errors.Is(err, errLoggedOut) {
		c.srv.emit(sess.event(EventLogout, c))
		return
	}
	e := sess.event(EventConnectionEnded, c)
	e.Reason, e.Err = c.cause(err)
	c.srv.emit(e)
}

// cause returns what ended the connection: the reason it was closed
// with, if any, else err; and a description of it.
func (c *conn) cause(err error) (string, error) {
	select {
	case <-c.done:
		if c.closeErr != nil {
			err = c.closeErr
		}
	default:
	}
	return describe(err)
}

// describe returns a description of err as the end of a session or
// connection, and err.
func describe(err error) (string, error) {
	switch {
	case err == nil:
		return "closed", nil
	case errors.Is(err, errLoggedOut):
		return "logged out", err
	case isEOF(err):
		return "closed by the initiator", err
	}
	return err.Error(), err
}

// observeEnd reports the end of the session; reason is what close was
// given, or nil when the session ended with its connection.
func (sess *session) observeEnd(reason error) {
	last := sess.firstConn()
	if last == nil {
		last = sess.lastConn.Load()
	}
	e := sess.event(EventSessionEnded, last)
	if reason == nil && last != nil {
		if p := last.endErr.Load(); p != nil {
			reason = *p
		}
	}
	if reason == nil {
		e.Reason = "connection closed"
	} else {
		e.Reason, e.Err = describe(reason)
	}
	sess.srv.emit(e)
}

// tmfDone counts and reports a task management function answered with
// response.
func (c *conn) tmfDone(m *pdu.TaskMgmtRequest, response uint8) {
	sess := c.sess()
	f := m.Function
	if int(f) >= len(tmfNames) {
		f = 0
	}
	sess.stats.tmf[f].Add(1)
	e := sess.event(EventTaskManagement, c)
	e.TMF, e.TMFResponse, e.LUN = tmfName(m.Function), response, m.LUN
	c.srv.emit(e)
}

// isEOF reports whether err says the peer closed the connection.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
