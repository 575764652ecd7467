package isns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Target is a storage node the client registers.
type Target struct {
	// Name is the target's iSCSI name; Alias its alias, if any.
	Name, Alias string
	// PortalGroups are the tags of the portal groups the target is
	// reached through; nil means every portal.
	PortalGroups []uint16
}

// Portal is a network portal the client registers.
type Portal struct {
	// Addr is the address the portal listens on. An unspecified address
	// (0.0.0.0 or ::) is registered as the address the client reaches
	// the server from.
	Addr netip.AddrPort
	// Tag is the portal's target portal group tag.
	Tag uint16
}

// Registration is what the client keeps registered: its targets and
// portals. With no targets the entity is deregistered.
type Registration struct {
	Targets []Target
	Portals []Portal
}

// Options configure a Client.
type Options struct {
	// Servers are the iSNS servers to register with, as host or
	// host:port (port 3205 by default).
	Servers []string
	// EntityID names the network entity that holds the portals and
	// nodes; required, and unique among the server's clients.
	EntityID string
	// Period is the registration period asked for; the server may set
	// another, which the client then follows. 0 means 15 minutes.
	Period time.Duration
	// DiscoveryDomain, when set, names a discovery domain the targets
	// are registered as members of (DDReg), created if missing.
	DiscoveryDomain string
	// Timeout bounds one exchange with a server; 0 means 10 seconds.
	Timeout time.Duration
	// MaxRetry caps the wait between attempts at a server that is down
	// or refusing; 0 means one minute. The wait is also kept within a
	// quarter of the registration period, so a server that comes back
	// sees the registration again within the period.
	MaxRetry time.Duration
	// Logger receives a warning when a server cannot be reached or
	// refuses a registration (at most once a minute per server) and
	// when it is reachable again; nil discards them.
	Logger *slog.Logger
}

// ServerAddress checks an iSNS server address, host or host:port, and
// returns it as host:port.
func ServerAddress(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (an IPv6 literal may
		// come bracketed).
		host, port = s, strconv.Itoa(DefaultPort)
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	if host == "" {
		return "", fmt.Errorf("isns: %q names no host", s)
	}
	for _, r := range host {
		if r <= ' ' || r == '/' || r == '[' || r == ']' || r == '@' {
			return "", fmt.Errorf("isns: %q is not a host name or address", s)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("isns: %q: port %q is not a TCP port from 1 to 65535", s, port)
	}
	return net.JoinHostPort(host, port), nil
}

// Client keeps a Registration registered with iSNS servers. Each server
// has a goroutine of its own that registers the entity, its portals, its
// storage nodes and their portal groups, follows every Update, refreshes
// the registration within the server's registration period, and
// registers everything again when the server has lost it (a restart).
// Calls never wait for a server: Update only hands the new state over.
type Client struct {
	opt     Options
	log     *slog.Logger
	servers []*server

	mu  sync.Mutex
	reg Registration

	xid   uint16
	xidMu sync.Mutex
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

// server is one iSNS server and what it holds of the registration.
// Only its goroutine touches the fields below wake, and Close once that
// goroutine has ended.
type server struct {
	addr string
	wake chan struct{}

	// held is what the server was last seen to hold, nil when unknown
	// (nothing registered yet, or an exchange failed).
	held *snapshot
	// period is the registration period the server gave.
	period time.Duration
	// failing is set while exchanges fail; lastLog is when something
	// was last logged above debug level.
	failing bool
	lastLog time.Time

	// ddID is the ID of the client's discovery domain on the server,
	// 0 until known.
	ddID uint32

	// synced counts successful synchronisations (for tests).
	syncMu sync.Mutex
	synced int
}

// NewClient checks opt and starts a goroutine per server.
func NewClient(opt Options) (*Client, error) {
	if opt.EntityID == "" {
		return nil, errors.New("isns: an entity ID is required")
	}
	if len(opt.Servers) == 0 {
		return nil, errors.New("isns: no server")
	}
	if opt.Period <= 0 {
		opt.Period = 15 * time.Minute
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.MaxRetry <= 0 {
		opt.MaxRetry = time.Minute
	}
	c := &Client{opt: opt, log: opt.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{}
	for _, s := range opt.Servers {
		addr, err := ServerAddress(s)
		if err != nil {
			return nil, err
		}
		if seen[addr] {
			continue
		}
		seen[addr] = true
		c.servers = append(c.servers, &server{addr: addr, wake: make(chan struct{}, 1), period: opt.Period})
	}
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	for _, s := range c.servers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.run(ctx, s)
		}()
	}
	return c, nil
}

// Update replaces what the client keeps registered. It returns at once;
// each server's goroutine brings the server up to date.
func (c *Client) Update(reg Registration) {
	reg.Targets = slices.Clone(reg.Targets)
	reg.Portals = slices.Clone(reg.Portals)
	c.mu.Lock()
	c.reg = reg
	c.mu.Unlock()
	for _, s := range c.servers {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Close stops the client and deregisters the entity from every server
// that holds it, within ctx.
func (c *Client) Close(ctx context.Context) error {
	c.Stop()
	return c.Deregister(ctx)
}

// Stop ends the client's goroutines, interrupting any exchange, and
// leaves the registration on the servers: it expires with its period,
// unless a new client with the same entity ID takes it over (as when the
// servers or the discovery domain change).
func (c *Client) Stop() {
	c.stop()
	c.wg.Wait()
}

// Deregister removes the entity from the servers addrs (as ServerAddress
// returns them; every server when none is given) that hold it, within
// ctx. It is for a stopped client: Stop first.
func (c *Client) Deregister(ctx context.Context, addrs ...string) error {
	c.Stop()
	var wg sync.WaitGroup
	errs := make([]error, len(c.servers))
	for i, s := range c.servers {
		if s.held == nil || len(addrs) > 0 && !slices.Contains(addrs, s.addr) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.exchange(ctx, s, func(x *exchange) error { return x.deregisterEntity(s.held.source) }); err != nil {
				errs[i] = fmt.Errorf("isns: deregistering from %s: %w", s.addr, err)
				return
			}
			s.held = nil
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Synced returns how many times the client brought server addr (as
// given to ServerAddress) up to date; tests wait on it.
func (c *Client) Synced(addr string) int {
	for _, s := range c.servers {
		if s.addr == addr {
			s.syncMu.Lock()
			defer s.syncMu.Unlock()
			return s.synced
		}
	}
	return 0
}

// run is a server's goroutine: it synchronises at once, after each
// Update, every half registration period, and after a failure with a
// backoff (an Update then waits for the next attempt).
func (c *Client) run(ctx context.Context, s *server) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	retry := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			if s.failing {
				continue // the retry timer brings the change along
			}
		case <-timer.C:
		}
		c.mu.Lock()
		reg := c.reg
		c.mu.Unlock()
		err := c.sync(ctx, s, reg)
		if ctx.Err() != nil {
			return
		}
		next := s.period / 2
		if err != nil {
			s.held = nil
			retry = min(max(2*retry, time.Second), c.opt.MaxRetry, max(s.period/4, time.Second))
			next = retry
			c.logLimited(s, slog.LevelWarn, "iSNS registration failed; retrying", "server", s.addr, "retry_in", retry, "err", err)
			s.failing = true
		} else {
			if s.failing {
				c.logLimited(s, slog.LevelInfo, "iSNS server reachable again", "server", s.addr)
			}
			s.failing, retry = false, 0
			s.syncMu.Lock()
			s.synced++
			s.syncMu.Unlock()
		}
		timer.Reset(max(next, time.Second))
	}
}

// logLimited logs at level at most once a minute per server, and at
// debug level otherwise, so a server that is down or flapping cannot
// flood the log.
func (c *Client) logLimited(s *server, level slog.Level, msg string, args ...any) {
	if !s.lastLog.IsZero() && time.Since(s.lastLog) < time.Minute {
		level = slog.LevelDebug
	} else {
		s.lastLog = time.Now()
	}
	c.log.Log(context.Background(), level, msg, args...)
}

// snapshot is a registration as sent to one server: the portals with
// their addresses resolved, the targets by name, and the message source.
type snapshot struct {
	portals []Portal
	targets []Target
	source  string
}

// resolve fixes reg's portals for a client whose address toward the
// server is local: unspecified addresses become local, duplicates go,
// and targets are sorted by name.
func resolve(reg Registration, local netip.Addr) *snapshot {
	s := &snapshot{}
	seen := map[netip.AddrPort]bool{}
	for _, p := range reg.Portals {
		a := p.Addr.Addr()
		if a.IsUnspecified() && local.IsValid() {
			a = local
		}
		p.Addr = netip.AddrPortFrom(a.Unmap(), p.Addr.Port())
		if seen[p.Addr] {
			continue
		}
		seen[p.Addr] = true
		s.portals = append(s.portals, p)
	}
	s.targets = slices.Clone(reg.Targets)
	slices.SortFunc(s.targets, func(a, b Target) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	s.targets = slices.CompactFunc(s.targets, func(a, b Target) bool { return a.Name == b.Name })
	if len(s.targets) > 0 {
		s.source = s.targets[0].Name
	}
	return s
}

// equal reports whether two snapshots register the same things.
func (s *snapshot) equal(o *snapshot) bool {
	return slices.Equal(s.portals, o.portals) && slices.EqualFunc(s.targets, o.targets, func(a, b Target) bool {
		return a.Name == b.Name && a.Alias == b.Alias && slices.Equal(a.PortalGroups, b.PortalGroups)
	})
}

// sync brings server s to reg in one connection.
func (c *Client) sync(ctx context.Context, s *server, reg Registration) error {
	return c.exchange(ctx, s, func(x *exchange) error {
		want := resolve(reg, x.local)
		if len(want.targets) == 0 {
			if s.held != nil {
				if err := x.deregisterEntity(s.held.source); err != nil {
					return err
				}
			}
			s.held = nil
			return nil
		}
		switch {
		case s.held == nil:
			if err := x.register(want, true); err != nil {
				return err
			}
		case !s.held.equal(want):
			if err := x.deregisterGone(s.held, want); err != nil {
				return err
			}
			if err := x.register(want, false); err != nil {
				return err
			}
		default:
			// Nothing changed: a query of our own entity refreshes the
			// registration period, and tells whether the server still
			// holds it.
			held, err := x.holds(want.source)
			if err != nil {
				return err
			}
			if !held {
				c.log.Info("iSNS server lost the registration; registering again", "server", s.addr)
				if err := x.register(want, true); err != nil {
					return err
				}
			}
		}
		if c.opt.DiscoveryDomain != "" && (s.held == nil || !slices.EqualFunc(s.held.targets, want.targets, func(a, b Target) bool { return a.Name == b.Name })) {
			if err := x.registerDD(s.held, want); err != nil {
				return err
			}
		}
		s.held = want
		return nil
	})
}

// exchange is one connection to a server.
type exchange struct {
	c     *Client
	s     *server
	conn  net.Conn
	local netip.Addr
}

// exchange dials s and runs fn over the connection, within the client's
// timeout.
func (c *Client) exchange(ctx context.Context, s *server, fn func(*exchange) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.opt.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	x := &exchange{c: c, s: s, conn: conn}
	if ta, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		x.local = ta.AddrPort().Addr().Unmap()
	}
	return fn(x)
}

// nextXID returns a fresh transaction ID.
func (c *Client) nextXID() uint16 {
	c.xidMu.Lock()
	defer c.xidMu.Unlock()
	c.xid++
	return c.xid
}

// call sends req and returns the response that answers it; a status
// other than success is a *StatusError.
func (x *exchange) call(req *Message) (*Message, error) {
	req.XID = x.c.nextXID()
	req.Flags |= FlagClient
	b, err := req.Append(nil)
	if err != nil {
		return nil, err
	}
	if _, err := x.conn.Write(b); err != nil {
		return nil, err
	}
	for {
		rsp, err := ReadMessage(x.conn)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("isns: %s closed the connection before answering %v", x.s.addr, req.Function)
			}
			return nil, err
		}
		if rsp.Function != req.Function.Response() || rsp.XID != req.XID {
			continue // not ours (a server message this client never asked for)
		}
		if rsp.Status != StatusSuccess {
			return rsp, &StatusError{Function: req.Function, Status: rsp.Status}
		}
		return rsp, nil
	}
}

// register sends the whole registration (DevAttrReg), replacing what the
// server holds of the entity when replace is set, and takes the
// registration period from the answer.
func (x *exchange) register(want *snapshot, replace bool) error {
	eid := x.c.opt.EntityID
	attrs := []Attr{
		String(TagISCSIName, want.source),
		String(TagEntityID, eid),
		Delimiter(),
		String(TagEntityID, eid),
		Uint32(TagEntityProtocol, EntityProtocolISCSI),
		Uint32(TagRegistrationPeriod, uint32(max(x.c.opt.Period/time.Second, 1))),
	}
	for _, p := range want.portals {
		attrs = append(attrs, Addr(TagPortalIPAddress, p.Addr.Addr()), Port(TagPortalPort, p.Addr.Port()))
	}
	for _, t := range want.targets {
		attrs = append(attrs, String(TagISCSIName, t.Name), Uint32(TagISCSINodeType, NodeTarget))
		if t.Alias != "" {
			attrs = append(attrs, String(TagISCSIAlias, t.Alias))
		}
	}
	// A portal group per target and portal: the portal's tag where the
	// target is reached through it, none (a NULL tag) where it is not.
	for _, t := range want.targets {
		for _, p := range want.portals {
			attrs = append(attrs, String(TagPGISCSIName, t.Name), Addr(TagPGPortalIPAddress, p.Addr.Addr()), Port(TagPGPortalPort, p.Addr.Port()))
			if t.PortalGroups == nil || slices.Contains(t.PortalGroups, p.Tag) {
				attrs = append(attrs, Uint32(TagPGTag, uint32(p.Tag)))
			} else {
				attrs = append(attrs, Empty(TagPGTag))
			}
		}
	}
	req := &Message{Function: DevAttrReg, Attrs: attrs}
	if replace {
		req.Flags = FlagReplace
	}
	rsp, err := x.call(req)
	if err != nil {
		return err
	}
	if a, ok := rsp.Get(TagRegistrationPeriod); ok {
		if v, err := a.AsUint32(); err == nil && v > 0 {
			x.s.period = time.Duration(v) * time.Second
		}
	}
	return nil
}

// deregisterGone deregisters the targets and portals the server holds
// that want no longer has (DevDereg).
func (x *exchange) deregisterGone(held, want *snapshot) error {
	var ops []Attr
	for _, t := range held.targets {
		if !slices.ContainsFunc(want.targets, func(w Target) bool { return w.Name == t.Name }) {
			ops = append(ops, String(TagISCSIName, t.Name))
		}
	}
	for _, p := range held.portals {
		if !slices.ContainsFunc(want.portals, func(w Portal) bool { return w.Addr == p.Addr }) {
			ops = append(ops, Addr(TagPortalIPAddress, p.Addr.Addr()), Port(TagPortalPort, p.Addr.Port()))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	_, err := x.call(&Message{Function: DevDereg, Attrs: append([]Attr{String(TagISCSIName, held.source), Delimiter()}, ops...)})
	return err
}

// deregisterEntity removes the entity and everything in it (DevDereg).
func (x *exchange) deregisterEntity(source string) error {
	_, err := x.call(&Message{Function: DevDereg, Attrs: []Attr{
		String(TagISCSIName, source), Delimiter(), String(TagEntityID, x.c.opt.EntityID),
	}})
	var se *StatusError
	if errors.As(err, &se) && se.Status == StatusNoSuchEntry {
		return nil // already gone (expired, or the server restarted)
	}
	return err
}

// holds asks the server for the entity of node source (DevAttrQry) and
// reports whether it is this client's. Any message from the entity's
// node refreshes its registration period (RFC 4171 §6.2.6).
func (x *exchange) holds(source string) (bool, error) {
	rsp, err := x.call(&Message{Function: DevAttrQry, Attrs: []Attr{
		String(TagISCSIName, source), String(TagISCSIName, source), Delimiter(), Empty(TagEntityID),
	}})
	var se *StatusError
	if errors.As(err, &se) {
		return false, nil // the server knows no such node
	}
	if err != nil {
		return false, err
	}
	for _, a := range rsp.All(TagEntityID) {
		if v, err := a.AsString(); err == nil && v == x.c.opt.EntityID {
			return true, nil
		}
	}
	return false, nil
}

// maxDDProbe bounds the discovery domain IDs registerDD tries when a
// domain of its name exists but its ID is unknown.
const maxDDProbe = 256

// registerDD makes the targets members of the client's discovery domain
// (DDReg) and takes the targets held that want lacks out of it
// (DDDereg). The domain is created by name the first time; its ID, from
// the answer, names it afterwards. A domain of that name that exists
// already (the client started again) is found by its ID: a DDReg naming
// an ID and a symbolic name succeeds only for the domain of that name
// (RFC 4171 §5.6.5.9), and open-isns answers no query for a domain a
// new node is not yet in.
func (x *exchange) registerDD(held, want *snapshot) error {
	name := x.c.opt.DiscoveryDomain
	members := make([]Attr, 0, len(want.targets))
	for _, t := range want.targets {
		members = append(members, String(TagDDMemberISCSIName, t.Name))
	}
	reg := func(id uint32) (*Message, error) {
		attrs := []Attr{String(TagISCSIName, want.source)}
		if id != 0 {
			attrs = append(attrs, Uint32(TagDDID, id))
		}
		attrs = append(attrs, Delimiter(), String(TagDDSymbolicName, name))
		return x.call(&Message{Function: DDReg, Attrs: append(attrs, members...)})
	}
	var se *StatusError
	rsp, err := reg(x.s.ddID)
	if x.s.ddID != 0 && errors.As(err, &se) && se.Status == StatusInvalidRegistration {
		// The domain is gone (a new server): create it again.
		x.s.ddID = 0
		rsp, err = reg(0)
	}
	if err == nil && x.s.ddID == 0 {
		if a, ok := rsp.Get(TagDDID); ok {
			x.s.ddID, _ = a.AsUint32()
		}
		if x.s.ddID == 0 {
			return fmt.Errorf("isns: %v named no discovery domain ID", DDReg.Response())
		}
	}
	if x.s.ddID == 0 && errors.As(err, &se) && se.Status == StatusInvalidRegistration {
		// A domain of that name exists under an ID this client does
		// not know.
		for id := uint32(1); id <= maxDDProbe; id++ {
			if _, err = reg(id); err == nil || !errors.As(err, &se) || se.Status != StatusInvalidRegistration {
				x.s.ddID = id
				break
			}
		}
	}
	if err != nil {
		return err
	}
	if held == nil {
		return nil
	}
	gone := []Attr{String(TagISCSIName, want.source), Uint32(TagDDID, x.s.ddID), Delimiter()}
	for _, t := range held.targets {
		if !slices.ContainsFunc(want.targets, func(w Target) bool { return w.Name == t.Name }) {
			gone = append(gone, String(TagDDMemberISCSIName, t.Name))
		}
	}
	if len(gone) == 3 {
		return nil
	}
	_, err = x.call(&Message{Function: DDDereg, Attrs: gone})
	return err
}
