package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/internal/bufpool"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("iscsi: server closed")

// Errors of the Server's target and portal calls, for errors.Is.
var (
	// ErrTargetExists: AddTarget was given a name the server already has.
	ErrTargetExists = errors.New("iscsi: target already exists")
	// ErrTargetNotFound: RemoveTarget was given a name the server does
	// not have.
	ErrTargetNotFound = errors.New("iscsi: no such target")
	// ErrNoDevice: AddTarget was given a target without a Device.
	ErrNoDevice = errors.New("iscsi: target has no device")
	// ErrReservedTag: ServePortal was given portal group tag 0, which
	// RFC 7143 does not allow (tags are 1-65535).
	ErrReservedTag = errors.New("iscsi: portal group tag 0 is reserved")
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives the server's log records; nil discards them.
	Logger *slog.Logger
	// Negotiation holds the target's operational-key preferences and
	// limits; zero fields take package negotiate's defaults.
	Negotiation negotiate.Config
	// QueueDepth is the number of commands a session may have outstanding
	// (the CmdSN window). Default 128.
	QueueDepth int
	// PortalGroupTag is the target portal group tag of listeners served
	// with Serve or ListenAndServe (ServePortal names its own). Default 1.
	PortalGroupTag uint16
	// LoginTimeout bounds a whole login phase; a connection that has not
	// reached full feature phase by then is dropped. Default 15s.
	LoginTimeout time.Duration
	// NopInterval is how often an idle connection is pinged with a NOP-In;
	// NopTimeout is how long the initiator has to answer before the
	// connection is dropped. Defaults 20s and 20s; a negative NopInterval
	// turns pings off.
	NopInterval, NopTimeout time.Duration
	// MaxIOSize, when positive, caps the buffer the target allocates for
	// one command's data below what the addressed unit allows. By
	// default (0) a command may carry the MaxTransferLength of its
	// logical unit (scsi.Target.MaxTransferLength), the limit the unit
	// advertises to initiators, so the two cannot disagree. A command
	// beyond the limit fails with INVALID FIELD IN CDB.
	MaxIOSize int
	// Authenticator runs the security stage of login. Nil means
	// AuthMethod=None for every target and discovery session.
	// SetAuthenticator replaces it on a running server.
	Authenticator Authenticator
	// Limits bound what one initiator, or a crowd of clients, can make
	// the server hold; zero fields take their defaults.
	Limits Limits
	// Observer receives the server's events (see Observer for what the
	// server guarantees); nil means none. ObserverQueue bounds the events
	// waiting for it; default 1024.
	Observer      Observer
	ObserverQueue int
	// LogSessions logs every established session at INFO; by default it
	// is DEBUG, so that a crowd of logins does not flood the log.
	LogSessions bool
	// LogRepeats is how many records with the same message one source
	// address may log per minute; the rest are counted and summarised
	// when the minute ends ("N more in the last minute"). Default 10; a
	// negative value logs everything.
	LogRepeats int
}

// Limits protect the server from hostile or broken clients. Every
// refusal they cause is logged with the initiator's name (when known) and
// address. Zero fields take the defaults named; a negative value turns a
// limit off.
type Limits struct {
	// MaxConnections bounds the TCP connections open at once, logged in
	// or not. When it is reached a new connection first displaces the
	// longest-idle connection still in login; if there is none it is
	// closed at once. Default 4096.
	MaxConnections int
	// MaxPendingLogins bounds the connections still in the login phase.
	// A new connection beyond it displaces the one in login that has
	// been idle longest, so a flood of half-open or silent connections
	// cannot keep a real initiator out (the flood's connections are the
	// idle ones). Default 256.
	MaxPendingLogins int
	// MaxPendingLoginsPerSource is MaxPendingLogins for one source IP
	// address; a source beyond it displaces its own longest-idle
	// connection in login, not another source's. Default 64.
	MaxPendingLoginsPerSource int
	// MaxSessionsPerTarget bounds the sessions of one target; a login
	// beyond it fails with "out of resources" (0x0302). Default 1024.
	MaxSessionsPerTarget int
	// MaxLoginKeys bounds the key=value pairs of one login phase. Default
	// 256.
	MaxLoginKeys int
	// MaxLoginText bounds the key=value text of one login request, across
	// continued PDUs, in bytes. Default 64 KiB.
	MaxLoginText int
	// MaxLoginPDUs bounds the login requests of one login phase. Default
	// 64.
	MaxLoginPDUs int
}

func (l *Limits) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxConnections, 4096)
	def(&l.MaxPendingLogins, 256)
	def(&l.MaxPendingLoginsPerSource, 64)
	def(&l.MaxSessionsPerTarget, 1024)
	def(&l.MaxLoginKeys, 256)
	def(&l.MaxLoginText, 64<<10)
	def(&l.MaxLoginPDUs, 64)
}

// exceeds reports whether n has reached limit (a negative limit is off).
func exceeds(n, limit int) bool { return limit >= 0 && n >= limit }

// over reports whether n is beyond limit (a negative limit is off).
func over(n, limit int) bool { return limit >= 0 && n > limit }

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.QueueDepth <= 0 {
		o.QueueDepth = 128
	}
	if o.PortalGroupTag == 0 {
		o.PortalGroupTag = 1
	}
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = 15 * time.Second
	}
	if o.NopInterval == 0 {
		o.NopInterval = 20 * time.Second
	}
	if o.NopTimeout <= 0 {
		o.NopTimeout = 20 * time.Second
	}
	if o.MaxIOSize < 0 {
		o.MaxIOSize = 0
	}
	o.Limits.setDefaults()
}

// Server is an iSCSI target server. Its methods are safe for concurrent use.
type Server struct {
	opt Options
	log *slog.Logger

	mu        sync.Mutex
	targets   map[string]*Target
	listeners map[net.Listener]uint16 // portal group tag of each
	remote    []portal                // other gateways' portals, listed by SendTargets only
	conns     map[*conn]struct{}
	sessions  map[uint16]*session
	nextTSIH  uint16
	closed    bool
	connWG    sync.WaitGroup
	// ending counts sessions that have ended but whose commands have not
	// all finished, or whose nexus loss the SCSI layer has not been told
	// yet; endingIdle is closed when it drops to zero. Guarded by mu.
	ending     int
	endingIdle chan struct{}

	// pending holds the connections still in the login phase, with when
	// each last showed activity; guarded by mu.
	pending map[*conn]*pendingLogin
	// logins records how each normal session logged in, for
	// EnforceAccess; entries of ended sessions are pruned lazily.
	logins map[*session]LoginInfo
	auth   atomic.Pointer[authHolder]

	buffers bufpool.Pool // data buffers of tasks

	events   eventQueue     // for Options.Observer (observer.go)
	counters serverCounters // stats.go
}

// pendingLogin is a connection in the login phase.
type pendingLogin struct {
	source    netip.Addr
	last      time.Time // accepted, or last login PDU received
	initiator string    // InitiatorName once known, for the log
}

// displaced is a connection in login that a newer one pushes out.
type displaced struct {
	c         *conn
	initiator string
	why       string // the limit that was reached
}

// authHolder lets an interface value live in an atomic.Pointer.
type authHolder struct{ a Authenticator }

// NewServer returns a Server with the given options.
func NewServer(opt Options) (*Server, error) {
	opt.setDefaults()
	if err := opt.Negotiation.Validate(); err != nil {
		return nil, fmt.Errorf("iscsi: negotiation config: %w", err)
	}
	s := &Server{
		opt:       opt,
		log:       limitRepeats(opt.Logger, opt.LogRepeats),
		targets:   make(map[string]*Target),
		listeners: make(map[net.Listener]uint16),
		conns:     make(map[*conn]struct{}),
		sessions:  make(map[uint16]*session),
		pending:   make(map[*conn]*pendingLogin),
		logins:    make(map[*session]LoginInfo),
	}
	s.SetAuthenticator(opt.Authenticator)
	return s, nil
}

// Options returns the options in force, defaults filled in.
func (s *Server) Options() Options {
	o := s.opt
	o.Negotiation = o.Negotiation.Effective()
	return o
}

// SetAuthenticator replaces the authenticator of later logins (nil means
// AuthMethod=None for everyone). Logins already past their start keep
// the one they began with.
func (s *Server) SetAuthenticator(a Authenticator) {
	if a == nil {
		a = noAuth{}
	}
	s.auth.Store(&authHolder{a: a})
}

func (s *Server) authenticator() Authenticator { return s.auth.Load().a }

// RemotePortal is a portal group another gateway serves for the same
// targets: SendTargets lists its addresses with its tag, beside the
// server's own portals, for every target served through that tag.
type RemotePortal struct {
	Tag   uint16
	Addrs []netip.AddrPort
}

// SetRemotePortals replaces the remote portals later SendTargets answers
// list; the server never listens on them.
func (s *Server) SetRemotePortals(ps []RemotePortal) {
	var out []portal
	for _, p := range ps {
		for _, a := range p.Addrs {
			out = append(out, portal{addr: a.String(), tag: p.Tag})
		}
	}
	s.mu.Lock()
	s.remote = out
	s.mu.Unlock()
}

// AddTarget makes t available to logins and discovery.
func (s *Server) AddTarget(t *Target) error {
	if err := ValidateName(t.Name); err != nil {
		return err
	}
	if t.Device == nil {
		return fmt.Errorf("%w: %s", ErrNoDevice, t.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.targets[t.Name]; ok {
		return fmt.Errorf("%w: %s", ErrTargetExists, t.Name)
	}
	s.targets[t.Name] = t
	return nil
}

// RemoveTarget removes the named target and ends every session logged in
// to it. Other sessions are not disturbed.
func (s *Server) RemoveTarget(name string) error {
	s.mu.Lock()
	if _, ok := s.targets[name]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrTargetNotFound, name)
	}
	delete(s.targets, name)
	var victims []*session
	for _, sess := range s.sessions {
		if sess.target != nil && sess.target.Name == name {
			victims = append(victims, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range victims {
		sess.close(fmt.Errorf("target %s removed", name))
	}
	return nil
}

// Target returns the named target, or nil.
func (s *Server) Target(name string) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[name]
}

// Targets returns the names of all targets, sorted.
func (s *Server) Targets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.targets))
	for n := range s.targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ListenAndServe listens on the TCP address addr and serves it until
// Shutdown or Close.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l, a portal of the default portal group,
// until the listener fails or the server is shut down; it closes l before
// returning. It returns ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error { return s.ServePortal(l, s.opt.PortalGroupTag) }

// ServePortal is Serve for a portal of target portal group tag. Closing l
// (to retire the portal) ends ServePortal without disturbing sessions
// already logged in through it.
func (s *Server) ServePortal(l net.Listener, tag uint16) error {
	if tag == 0 {
		return ErrReservedTag
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = tag
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := newConn(s, nc, tag)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		victims, admitted := s.admitLocked(c)
		if admitted {
			s.conns[c] = struct{}{}
			s.connWG.Add(1)
		}
		s.mu.Unlock()
		for _, v := range victims {
			v.c.log.Warn("connection in login displaced by a newer one", "initiator", v.initiator, "limit", v.why)
			v.c.close(errDisplaced)
		}
		if !admitted {
			c.log.Warn("connection refused: too many connections", "limit", s.opt.Limits.MaxConnections)
			nc.Close()
			continue
		}
		go c.serve()
	}
}

// Shutdown stops accepting connections, ends every session with a logout
// request (Async Message, RFC 7143 §11.9.1) and waits for the connections to
// finish. An initiator has logoutRequestTime to log out, as the request tells
// it (Parameter3); the connections of those that do not are then dropped, as
// the RFC lets the target do. Connections still open when ctx ends are
// closed, and Shutdown returns ctx's error.
//
// When Shutdown returns nil, the server has let go of the logical units:
// every command of every session has finished (a command the initiator
// left behind is cancelled through its context) and each session's I_T
// nexus loss has been reported to its scsi.Target. Only then may the
// embedder close the scsi.Targets and logical units it added (or, with a
// mgmt.Manager, call its Close, which removes the targets and closes the
// units it opened): Shutdown itself never closes a logical unit, since the
// same unit may be served by other servers. When ctx ends first, Shutdown
// closes what is still open and returns ctx.Err(); a command hung in its
// device may then still be running, so units must drain it themselves.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.requestLogout()
	}
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	// The initiator's time to log out, plus a second for its logout to
	// travel and the session's commands to finish.
	overdue := time.NewTimer(logoutRequestTime + time.Second)
	defer overdue.Stop()
	for gone := false; !gone; {
		select {
		case <-done:
			gone = true
		case <-overdue.C:
			s.dropConns(errLogoutOverdue)
		case <-ctx.Done():
			s.Close()
			<-done
			return ctx.Err()
		}
	}
	// The connections are gone; sessions waiting for a connection to
	// come back (ErrorRecoveryLevel 2) end now, and their commands may
	// still be finishing in their devices.
	s.closeSessions(ErrServerClosed)
	s.mu.Lock()
	idle := s.endingIdle
	s.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// errLogoutOverdue ends a connection whose initiator did not log out within
// the time a logout request gave it.
var errLogoutOverdue = errors.New("iscsi: server shutting down; the initiator did not log out in time")

// dropConns closes every connection still open with err.
func (s *Server) dropConns(err error) {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(err)
	}
}

// sessionEnding records a session that ended and has yet to report its
// nexus loss; sessionEnded is called once that is done.
func (s *Server) sessionEnding() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ending == 0 {
		s.endingIdle = make(chan struct{})
	}
	s.ending++
}

func (s *Server) sessionEnded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ending--
	if s.ending == 0 {
		close(s.endingIdle)
		s.endingIdle = nil
	}
}

// Close stops the server at once: listeners and connections are closed and
// outstanding commands are aborted. It waits for connection goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	s.dropConns(ErrServerClosed)
	s.connWG.Wait()
	s.closeSessions(ErrServerClosed)
	return nil
}

// closeSessions ends the sessions still open: after the connections have
// gone, those are sessions whose tasks wait for TASK REASSIGN.
func (s *Server) closeSessions(err error) {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	s.mu.Unlock()
	for _, sess := range list {
		sess.close(err)
	}
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.pending, c)
	s.mu.Unlock()
	s.connWG.Done()
}

// errDisplaced ends a connection in login that a newer one displaced.
var errDisplaced = errors.New("displaced by a newer connection while in login")

// admitLocked applies Limits to a newly accepted connection: it registers
// c as pending login and returns the connections in login that c
// displaces, or admitted=false when c must be closed because every open
// connection is logged in. Called with s.mu held.
func (s *Server) admitLocked(c *conn) (victims []displaced, admitted bool) {
	lim := s.opt.Limits
	src := sourceAddr(c.nc.RemoteAddr())
	evict := func(sameSource bool, why string) bool {
		var oldest *conn
		var op *pendingLogin
		for pc, p := range s.pending {
			if sameSource && p.source != src {
				continue
			}
			if oldest == nil || p.last.Before(op.last) {
				oldest, op = pc, p
			}
		}
		if oldest == nil {
			return false
		}
		delete(s.pending, oldest)
		victims = append(victims, displaced{c: oldest, initiator: op.initiator, why: why})
		return true
	}
	if exceeds(len(s.conns)-len(victims), lim.MaxConnections) && !evict(false, "MaxConnections") {
		return nil, false
	}
	perSource := 0
	for _, p := range s.pending {
		if p.source == src {
			perSource++
		}
	}
	if exceeds(perSource, lim.MaxPendingLoginsPerSource) {
		evict(true, "MaxPendingLoginsPerSource")
	}
	if exceeds(len(s.pending), lim.MaxPendingLogins) {
		evict(false, "MaxPendingLogins")
	}
	s.pending[c] = &pendingLogin{source: src, last: time.Now()}
	return victims, true
}

// loginActivity marks a connection in login as active (it sent a PDU),
// so it is not the first to be displaced, and records its initiator name
// once known.
func (s *Server) loginActivity(c *conn, initiator string) {
	s.mu.Lock()
	if p := s.pending[c]; p != nil {
		p.last = time.Now()
		if initiator != "" {
			p.initiator = initiator
		}
	}
	s.mu.Unlock()
}

// loginDone takes c off the pending list as it enters full feature
// phase; false means c was displaced meanwhile and must not go on.
func (s *Server) loginDone(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pending[c]
	delete(s.pending, c)
	return ok
}

// recordLogin remembers how sess logged in, for EnforceAccess.
func (s *Server) recordLogin(sess *session, info LoginInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLoginsLocked()
	s.logins[sess] = info
}

// pruneLoginsLocked forgets the logins of sessions that have ended, once
// the record has grown past twice the live sessions.
func (s *Server) pruneLoginsLocked() {
	if len(s.logins) < 2*len(s.sessions)+16 {
		return
	}
	for sess := range s.logins {
		if s.sessions[sess.tsih] != sess {
			delete(s.logins, sess)
		}
	}
}

// EnforceAccess checks every live normal session against its target's
// current Allow, as if it logged in again through the same portal from
// the same address, and ends the sessions no longer allowed (their
// initiators get "authorization failure" when they try to log back in).
// Call it after tightening access control; it returns how many sessions
// it ended, and logs each with its initiator name and address.
func (s *Server) EnforceAccess() int {
	type victim struct {
		sess *session
		info LoginInfo
	}
	var victims []victim
	s.mu.Lock()
	for sess, info := range s.logins {
		if s.sessions[sess.tsih] != sess {
			delete(s.logins, sess)
			continue
		}
		t := s.targets[info.TargetName]
		if t == nil || t != sess.target {
			continue // RemoveTarget ends those
		}
		victims = append(victims, victim{sess, info})
	}
	s.mu.Unlock()
	n := 0
	for _, v := range victims {
		if v.sess.target.allows(v.info) {
			continue
		}
		s.log.Warn("session ended: initiator no longer allowed", "initiator", v.info.InitiatorName, "remote", v.info.RemoteAddr, "target", v.info.TargetName)
		v.sess.close(fmt.Errorf("initiator %s no longer allowed on %s", v.info.InitiatorName, v.info.TargetName))
		n++
	}
	return n
}

// targetSessions counts the sessions of the named target, leaving out
// the one a login of initiator with isid would reinstate.
func (s *Server) targetSessions(name, initiator string, isid [6]byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sess := range s.sessions {
		if sess.target != nil && sess.target.Name == name && (sess.initiatorName != initiator || sess.isid != isid) {
			n++
		}
	}
	return n
}

// sourceAddr is the IP address of a remote address (the zero Addr when it
// is not an IP address).
func sourceAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			return ip.Unmap()
		}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// SessionInfo describes a live session.
type SessionInfo struct {
	TSIH          uint16
	ISID          [6]byte
	InitiatorName string
	InitiatorAddr string
	TargetName    string
	Discovery     bool
	Connections   int
	Params        negotiate.Params
	// InitiatorAlias and TargetAlias are the aliases announced at login.
	InitiatorAlias, TargetAlias string
	// Stats are the session's counters (stats.go).
	Stats SessionStats
}

// Sessions lists the live sessions, ordered by TSIH.
func (s *Server) Sessions() []SessionInfo {
	s.mu.Lock()
	list := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		list = append(list, sess)
	}
	s.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, sess := range list {
		out = append(out, sess.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TSIH < out[j].TSIH })
	return out
}
