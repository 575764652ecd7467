package iscsi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/iscsikit/iscsikit/internal/bufpool"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("iscsi: server closed")

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
	// MaxIOSize bounds the buffer the target allocates for one command's
	// data. Default 32 MiB; keep it at least the MaxTransferLength of
	// every logical unit served (scsi.DefaultMaxTransferLength).
	MaxIOSize int
	// Authenticator runs the security stage of login. Nil means
	// AuthMethod=None for every target and discovery session.
	Authenticator Authenticator
}

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
	if o.MaxIOSize <= 0 {
		o.MaxIOSize = scsi.DefaultMaxTransferLength
	}
}

// Server is an iSCSI target server. Its methods are safe for concurrent use.
type Server struct {
	opt Options
	log *slog.Logger

	mu        sync.Mutex
	targets   map[string]*Target
	listeners map[net.Listener]uint16 // portal group tag of each
	conns     map[*conn]struct{}
	sessions  map[uint16]*session
	nextTSIH  uint16
	closed    bool
	connWG    sync.WaitGroup

	buffers bufpool.Pool // data buffers of tasks
}

// NewServer returns a Server with the given options.
func NewServer(opt Options) (*Server, error) {
	opt.setDefaults()
	if err := opt.Negotiation.Validate(); err != nil {
		return nil, fmt.Errorf("iscsi: negotiation config: %w", err)
	}
	return &Server{
		opt:       opt,
		log:       opt.Logger,
		targets:   make(map[string]*Target),
		listeners: make(map[net.Listener]uint16),
		conns:     make(map[*conn]struct{}),
		sessions:  make(map[uint16]*session),
	}, nil
}

// Options returns the options in force, defaults filled in.
func (s *Server) Options() Options {
	o := s.opt
	o.Negotiation = o.Negotiation.Effective()
	return o
}

// AddTarget makes t available to logins and discovery.
func (s *Server) AddTarget(t *Target) error {
	if err := ValidateName(t.Name); err != nil {
		return err
	}
	if t.Device == nil {
		return fmt.Errorf("iscsi: target %s has no device", t.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.targets[t.Name]; ok {
		return fmt.Errorf("iscsi: target %s already exists", t.Name)
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
		return fmt.Errorf("iscsi: no target %s", name)
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
		return fmt.Errorf("iscsi: portal group tag 0 is reserved")
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
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting connections, ends every session with a logout
// request (Async Message) and waits, until ctx is done, for the connections
// to finish. Connections still open when ctx ends are closed.
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
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return ctx.Err()
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
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close(ErrServerClosed)
	}
	s.connWG.Wait()
	return nil
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.connWG.Done()
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
