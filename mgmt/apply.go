package mgmt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// applier keeps a running iscsi.Server in step with a Config: it owns the
// portals' listeners, the extents' logical units and the targets' LUN
// maps, and changes only what differs between two configurations.
type applier struct {
	srv  *iscsi.Server
	open openers
	log  *slog.Logger
	// prDir keeps the extents' persistent reservations and sanitize
	// records; "" refuses APTPL and forgets an interrupted sanitize.
	prDir string
	// keyDir keeps the keys of encrypted extents; "" refuses them.
	keyDir string
	// alua and isns are what ALUA and iSNS last applied.
	alua aluaApplied
	isns isnsLink

	listeners map[netip.AddrPort]*liveListener
	units     map[int]*liveUnit   // by extent id
	targets   map[int]*liveTarget // by target id
	auth      atomic.Pointer[authTable]
	// portalsOff closes every portal listener (ServePortals(false)).
	portalsOff bool
}

type liveListener struct {
	l   net.Listener
	tag uint16
}

type liveUnit struct {
	ext Extent
	lu  *scsi.LogicalUnit
}

type liveTarget struct {
	name    string
	alias   string
	groups  []uint16
	digests [2]string // header, data
	depth   int       // queue depth, 0 for the server's
	maxConn int       // connections per session (Global.MaxConnections, at least 1)
	policy  *atomic.Pointer[accessPolicy]

	// mu guards the LUN maps and views: logins pick views concurrently
	// with apply.
	mu sync.Mutex
	// general holds the LUNs every initiator sees; masked the LUNs only
	// one initiator sees, by initiator name.
	general map[uint16]*scsi.LogicalUnit
	masked  map[string]map[uint16]*scsi.LogicalUnit
	// views are the LUN sets sessions use: "" for initiators without
	// maps of their own, one per initiator that has some.
	views map[string]*lunView
}

// lunView is one initiator's view of a target's LUNs.
type lunView struct {
	dev  *scsi.Target
	luns map[uint16]*scsi.LogicalUnit
}

func newView() *lunView {
	return &lunView{dev: scsi.NewTarget(), luns: map[uint16]*scsi.LogicalUnit{}}
}

// sync attaches and detaches so the view holds exactly want (attaching
// raises REPORTED LUNS DATA HAS CHANGED).
func (v *lunView) sync(want map[uint16]*scsi.LogicalUnit, log *slog.Logger) {
	for lun, lu := range v.luns {
		if want[lun] != lu {
			v.dev.Detach(lun)
			delete(v.luns, lun)
		}
	}
	for lun, lu := range want {
		if _, ok := v.luns[lun]; ok {
			continue
		}
		if err := v.dev.Attach(lun, lu); err != nil {
			log.Error("attaching LUN failed", "lun", lun, "err", err)
			continue
		}
		v.luns[lun] = lu
	}
}

// wantFor is what initiator sees: the general LUNs and its own. Called
// with lt.mu held.
func (lt *liveTarget) wantFor(initiator string) map[uint16]*scsi.LogicalUnit {
	want := make(map[uint16]*scsi.LogicalUnit, len(lt.general))
	for lun, lu := range lt.general {
		want[lun] = lu
	}
	for lun, lu := range lt.masked[initiator] {
		want[lun] = lu
	}
	return want
}

// maxViews bounds the per-initiator views of a target; initiators beyond
// it without LUNs of their own share the general view (and learn of LUNs
// mapped for them later only at their next login).
const maxViews = 1024

// deviceFor is the iscsi.Target's DeviceFor: each initiator gets (and
// keeps) its own view, so LUNs mapped for it later reach its sessions.
func (lt *liveTarget) deviceFor(initiator string, log *slog.Logger) *scsi.Target {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if v := lt.views[initiator]; v != nil {
		return v.dev
	}
	if _, own := lt.masked[initiator]; !own && len(lt.views) > maxViews {
		return lt.views[""].dev
	}
	v := newView()
	v.sync(lt.wantFor(initiator), log)
	lt.views[initiator] = v
	return v.dev
}

// accessPolicy is who may reach a target and how they authenticate: one
// rule per group of the target (a portal group tag, an initiator group
// and an auth method). The first rule whose portal and initiator group
// admit a login decides.
type accessPolicy struct {
	rules []accessRule
}

// accessRule is one target group. Empty name and network lists admit
// everyone; anyTag matches every portal (a target without groups).
type accessRule struct {
	tag      uint16
	anyTag   bool
	names    map[string]bool
	networks []netip.Prefix
	method   iscsi.AuthMethod
	authTag  int
}

// match returns the rule admitting the login, or nil.
func (p *accessPolicy) match(info iscsi.LoginInfo) *accessRule {
	addr, err := netip.ParseAddrPort(info.RemoteAddr)
	for i := range p.rules {
		r := &p.rules[i]
		if !r.anyTag && r.tag != info.PortalGroupTag {
			continue
		}
		if len(r.names) > 0 && !r.names[info.InitiatorName] {
			continue
		}
		if len(r.networks) == 0 {
			return r
		}
		if err != nil {
			continue
		}
		for _, n := range r.networks {
			if n.Contains(addr.Addr().Unmap()) {
				return r
			}
		}
	}
	return nil
}

func (p *accessPolicy) allows(info iscsi.LoginInfo) bool { return p.match(info) != nil }

// authTable is what logins authenticate against, replaced whole on every
// apply: discovery methods by portal group tag, target policies by iSCSI
// name and the credentials of every auth group.
type authTable struct {
	discovery map[uint16]accessRule
	targets   map[string]*atomic.Pointer[accessPolicy]
	groups    map[int][]iscsi.CHAPCredential
}

// authPolicy is the iscsi.CHAPAuthenticator's policy lookup.
func (a *applier) authPolicy(info iscsi.LoginInfo) (iscsi.AuthPolicy, error) {
	t := a.auth.Load()
	if t == nil {
		return iscsi.AuthPolicy{}, fmt.Errorf("%w: no configuration applied", iscsi.ErrNotAuthorized)
	}
	var r *accessRule
	if info.Discovery() {
		d, ok := t.discovery[info.PortalGroupTag]
		if !ok {
			return iscsi.AuthPolicy{}, fmt.Errorf("%w: no portal with tag %d", iscsi.ErrNotAuthorized, info.PortalGroupTag)
		}
		r = &d
	} else {
		p := t.targets[info.TargetName]
		if p == nil {
			return iscsi.AuthPolicy{}, fmt.Errorf("%w: no target %s", iscsi.ErrNotAuthorized, info.TargetName)
		}
		if r = p.Load().match(info); r == nil {
			return iscsi.AuthPolicy{}, fmt.Errorf("%w: initiator %s from %s may not log in to %s", iscsi.ErrNotAuthorized, info.InitiatorName, info.RemoteAddr, info.TargetName)
		}
	}
	if r.method == iscsi.AuthNone {
		return iscsi.AuthPolicy{Method: iscsi.AuthNone}, nil
	}
	return iscsi.AuthPolicy{Method: r.method, Credentials: t.groups[r.authTag]}, nil
}

// sharedAuth authenticates logins to the applier's targets and portals
// by its configuration, and every other login (to a target the embedder
// added to the same Server) by the embedder's Authenticator.
type sharedAuth struct {
	a     *applier
	mine  iscsi.Authenticator
	other iscsi.Authenticator
}

// Begin picks the authenticator of the login's target or portal.
func (s *sharedAuth) Begin(info iscsi.LoginInfo) (iscsi.AuthExchange, error) {
	if s.a.owns(info) {
		return s.mine.Begin(info)
	}
	return s.other.Begin(info)
}

// owns reports whether a login is to one of the applier's targets, or a
// discovery session through one of its portals. Before any apply it owns
// everything (and refuses it).
func (a *applier) owns(info iscsi.LoginInfo) bool {
	t := a.auth.Load()
	if t == nil {
		return true
	}
	if info.Discovery() {
		_, ok := t.discovery[info.PortalGroupTag]
		return ok
	}
	return t.targets[info.TargetName] != nil
}

// authMethodOf translates a configured auth method.
func authMethodOf(m string) iscsi.AuthMethod {
	switch m {
	case AuthCHAP:
		return iscsi.AuthCHAP
	case AuthMutualCHAP:
		return iscsi.AuthMutualCHAP
	}
	return iscsi.AuthNone
}

// buildAuthTable collects cfg's discovery methods and auth groups and the
// live targets' policies.
func (a *applier) buildAuthTable(cfg *Config) *authTable {
	t := &authTable{
		discovery: map[uint16]accessRule{},
		targets:   map[string]*atomic.Pointer[accessPolicy]{},
		groups:    map[int][]iscsi.CHAPCredential{},
	}
	for _, p := range cfg.Portals {
		if p.Remote {
			continue // another gateway's discovery
		}
		r := accessRule{tag: uint16(p.Tag), method: authMethodOf(p.DiscoveryAuthMethod)}
		if p.DiscoveryAuthGroup != nil {
			r.authTag = *p.DiscoveryAuthGroup
		}
		t.discovery[uint16(p.Tag)] = r
	}
	for _, au := range cfg.Auths {
		t.groups[au.Tag] = append(t.groups[au.Tag], iscsi.CHAPCredential{
			User: au.User, Secret: au.Secret, PeerUser: au.PeerUser, PeerSecret: au.PeerSecret, Initiator: au.Initiator,
		})
	}
	for _, lt := range a.targets {
		t.targets[lt.name] = lt.policy
	}
	return t
}

func newApplier(srv *iscsi.Server, open openers, prDir, keyDir string, log *slog.Logger) *applier {
	a := &applier{
		srv: srv, open: open, prDir: prDir, keyDir: keyDir, log: log,
		listeners: map[netip.AddrPort]*liveListener{},
		units:     map[int]*liveUnit{},
		targets:   map[int]*liveTarget{},
	}
	if srv != nil {
		other := srv.Options().Authenticator
		if other == nil {
			other = iscsi.NewCHAPAuthenticator(func(iscsi.LoginInfo) (iscsi.AuthPolicy, error) {
				return iscsi.AuthPolicy{Method: iscsi.AuthNone}, nil
			})
		}
		srv.SetAuthenticator(&sharedAuth{a: a, mine: iscsi.NewCHAPAuthenticator(a.authPolicy), other: other})
	}
	return a
}

// plan is what apply prepared before changing anything live: the
// listeners and units it opened, and the units it drained for a reopen.
// Committing it cannot fail; aborting it leaves everything as it was.
type plan struct {
	newListeners map[netip.AddrPort]*liveListener
	newUnits     map[int]*liveUnit
	reopens      map[int]*reopen
}

// reopen is a live unit's change of storage or settings, drained and
// ready to swap.
type reopen struct {
	ext Extent
	dev backend.Device
	r   *scsi.Reopening
}

// abort closes what the plan opened and lets drained units serve on.
func (p *plan) abort() {
	for _, l := range p.newListeners {
		l.l.Close()
	}
	for _, u := range p.newUnits {
		u.lu.Close()
	}
	for _, r := range p.reopens {
		r.r.Abort()
		r.dev.Close()
	}
}

// prepare does everything of applying cfg that can fail, and nothing a
// client sees but a short wait: it opens new extents and the new
// storage of changed ones, listens on new addresses, checks that new
// target names are free on the server, and drains the units to reopen.
func (a *applier) prepare(ctx context.Context, cfg *Config) (_ *plan, err error) {
	p := &plan{newListeners: map[netip.AddrPort]*liveListener{}, newUnits: map[int]*liveUnit{}, reopens: map[int]*reopen{}}
	defer func() {
		if err != nil {
			p.abort()
		}
	}()
	if err := a.prepareUnits(ctx, cfg, p); err != nil {
		return nil, err
	}
	if a.srv == nil {
		return p, nil
	}
	if err := a.checkTargetNames(cfg); err != nil {
		return nil, err
	}
	for addr, tag := range a.wantListeners(cfg) {
		if cur := a.listeners[addr]; cur != nil {
			continue // the same, or a new tag: swapped in commit
		}
		l, err := net.Listen("tcp", addr.String())
		if err != nil {
			return nil, &Error{Kind: KindInvalid, Object: "portal", ID: portalOf(cfg, addr), Field: "listen", Msg: err.Error()}
		}
		p.newListeners[addr] = &liveListener{l: l, tag: tag}
	}
	return p, nil
}

// prepareUnits opens the units cfg adds and prepares the reopen of those
// it changes.
func (a *applier) prepareUnits(ctx context.Context, cfg *Config, p *plan) error {
	for _, e := range cfg.Extents {
		if !e.Enabled || !a.mapped(cfg, e.ID) {
			continue
		}
		cur := a.units[e.ID]
		noPR := a.noReservations(cfg, e)
		if cur != nil && sameUnit(cur.ext, e) && cur.lu.Config().NoReservations == noPR {
			continue
		}
		if cur != nil {
			if err := a.checkChange(cur, e); err != nil {
				return err
			}
		}
		dev, uc, err := a.openDevice(e, noPR)
		if err != nil {
			return extentError(e, err)
		}
		if cur == nil {
			lu, err := scsi.NewLogicalUnit(dev, uc)
			if err != nil {
				dev.Close()
				return extentError(e, err)
			}
			lu.SetObserver(a.srv.UnitObserver(e.Name)) // unit events reach iscsi.Options.Observer
			p.newUnits[e.ID] = &liveUnit{ext: e, lu: lu}
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, scsi.DrainTimeout)
		r, err := cur.lu.PrepareReopen(dctx, dev, uc)
		cancel()
		if err != nil {
			dev.Close()
			return extentError(e, err)
		}
		p.reopens[e.ID] = &reopen{ext: e, dev: dev, r: r}
	}
	return nil
}

// extentError names the extent an error of opening it is about.
func extentError(e Extent, err error) error {
	if me := (*Error)(nil); errors.As(err, &me) {
		return err
	}
	return &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "path", Msg: err.Error()}
}

// checkChange refuses changes a live extent cannot take: a smaller size
// (its data would be cut off under its initiators; it may only grow), and
// a change of encryption over the same storage. checkShrinks holds
// extents that are not served to the same size rule.
func (a *applier) checkChange(live *liveUnit, e Extent) error {
	cur := live.ext
	if s := a.open.storage(e); s == "" || a.open.storage(cur) != s {
		return nil
	}
	uc := live.lu.Config()
	// Only a change of the size is checked: a size accepted earlier (a
	// FILE extent serves its whole file, whatever its filesize says)
	// never blocks an edit of something else.
	if size := int64(live.lu.Blocks()) * int64(uc.BlockSize); e.Filesize != cur.Filesize && e.Filesize != 0 && e.Filesize < size {
		return &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "filesize",
			Msg: fmt.Sprintf("%d is smaller than the %d bytes the extent serves: a live extent may grow, not shrink", e.Filesize, size)}
	}
	if cur.Encrypted != e.Encrypted {
		return &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "encrypted",
			Msg: "cannot change while the extent's storage is in use: its data would read as noise; create a new extent and copy the data"}
	}
	if e.Encrypted && a.keyDir != "" && !sameFile(a.keyDir, cur, e, ".key") {
		return &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "name",
			Msg: "an encrypted extent's name names its key file: renaming it would part the data from its key"}
	}
	return nil
}

// sameFile reports whether two versions of an extent name the same state
// file in dir (both unnameable counts as the same: validation reports it).
func sameFile(dir string, a, b Extent, ext string) bool {
	pa, erra := extentFile(dir, a, ext)
	pb, errb := extentFile(dir, b, ext)
	return pa == pb && (erra == nil) == (errb == nil)
}

// checkTargetNames refuses a new target whose name the server already
// serves for someone else (the embedder's own target).
func (a *applier) checkTargetNames(cfg *Config) error {
	ours := map[string]bool{}
	for _, lt := range a.targets {
		ours[lt.name] = true
	}
	for _, t := range cfg.Targets {
		name := cfg.Global.FullName(t.Name)
		if t.State == StateReady && !ours[name] && a.srv.Target(name) != nil {
			return &Error{Kind: KindExists, Object: "target", ID: t.ID, Name: t.Name, Field: "name",
				Msg: fmt.Sprintf("the server already serves a target %s that this configuration did not add", name)}
		}
	}
	return nil
}

// mapped reports whether extent id is a LUN of some ready target.
func (a *applier) mapped(cfg *Config, id int) bool {
	for _, m := range cfg.TargetExtents {
		if m.Extent != id {
			continue
		}
		if t, ok := find(cfg.Targets, m.Target); ok && t.State == StateReady {
			return true
		}
	}
	return false
}

// commit makes the prepared plan live. Nothing in it fails but for
// races with the embedder on the same server (a target name taken, an
// address taken between closing a portal and opening it with a new
// tag), which are logged.
func (a *applier) commit(cfg *Config, p *plan) {
	a.commitUnits(cfg, p)
	want := map[int]Target{}
	for _, t := range cfg.Targets {
		if t.State == StateReady {
			want[t.ID] = t
		}
	}
	a.removeChangedTargets(cfg, want)
	a.dropUnits(cfg)
	for id, u := range p.newUnits {
		a.units[id] = u
	}
	for id, t := range want {
		lt := a.targets[id]
		if lt == nil {
			if lt = a.addTarget(cfg, t); lt == nil {
				continue
			}
			a.targets[id] = lt
		}
		lt.policy.Store(policyFor(cfg, t))
		a.syncLUNs(cfg, id, lt)
	}
	a.applyALUA(cfg)
	a.auth.Store(a.buildAuthTable(cfg))
	if a.srv != nil {
		// Sessions an initiator-group change no longer admits end now.
		a.srv.EnforceAccess()
		a.commitListeners(cfg, p)
	}
}

// commitUnits swaps the prepared reopens in: their units stay attached
// where they are, so initiators see no LUN come or go.
func (a *applier) commitUnits(cfg *Config, p *plan) {
	for id, r := range p.reopens {
		if err := r.r.Commit(); err != nil {
			a.log.Error("the reopened extent could not resume its sanitize", "extent", r.ext.Name, "err", err)
		}
		a.units[id].ext = r.ext
	}
	for id, u := range a.units {
		if e, ok := find(cfg.Extents, id); ok && p.reopens[id] == nil {
			u.ext = e
		}
	}
}

// removeChangedTargets ends the targets that go away, or whose name,
// alias, portals, digests, queue depth or connection limit change (they come back in
// commit); LUN maps and access lists change in place.
func (a *applier) removeChangedTargets(cfg *Config, want map[int]Target) {
	for id, lt := range a.targets {
		t, keep := want[id]
		if keep && cfg.Global.FullName(t.Name) == lt.name && t.Alias == lt.alias && slices.Equal(portalTags(cfg, t), lt.groups) &&
			lt.digests == [2]string{t.HeaderDigest, t.DataDigest} && lt.depth == t.QueueDepth && lt.maxConn == max(cfg.Global.MaxConnections, 1) {
			continue
		}
		a.removeTarget(id, lt)
	}
}

// dropUnits detaches and closes the units of extents that are gone,
// disabled or no longer mapped (closing drains their commands).
func (a *applier) dropUnits(cfg *Config) {
	for id, u := range a.units {
		if e, ok := find(cfg.Extents, id); ok && e.Enabled && a.mapped(cfg, id) {
			continue
		}
		for _, lt := range a.targets {
			lt.dropUnit(u.lu)
		}
		if err := u.lu.Close(); err != nil {
			a.log.Error("closing extent", "extent", u.ext.Name, "err", err)
		}
		delete(a.units, id)
	}
}

// addTarget serves target t; nil if the server refused it.
func (a *applier) addTarget(cfg *Config, t Target) *liveTarget {
	lt := &liveTarget{
		name: cfg.Global.FullName(t.Name), alias: t.Alias, groups: portalTags(cfg, t), digests: [2]string{t.HeaderDigest, t.DataDigest},
		depth: t.QueueDepth, maxConn: max(cfg.Global.MaxConnections, 1),
		policy: new(atomic.Pointer[accessPolicy]), views: map[string]*lunView{"": newView()},
	}
	lt.policy.Store(policyFor(cfg, t))
	it := &iscsi.Target{Name: lt.name, Alias: lt.alias, Device: lt.views[""].dev, PortalGroups: lt.groups,
		Allow:        func(info iscsi.LoginInfo) bool { return lt.policy.Load().allows(info) },
		DeviceFor:    func(name string) *scsi.Target { return lt.deviceFor(name, a.log) },
		HeaderDigest: digestPolicies[t.HeaderDigest], DataDigest: digestPolicies[t.DataDigest],
		QueueDepth: t.QueueDepth, MaxConnections: lt.maxConn,
	}
	if a.srv != nil {
		if err := a.srv.AddTarget(it); err != nil {
			a.log.Error("adding target failed", "target", lt.name, "err", err)
			return nil
		}
	}
	return lt
}

// commitListeners opens new portals and closes removed ones (all of them
// while the portals are switched off); sessions already logged in
// through a closed portal carry on.
func (a *applier) commitListeners(cfg *Config, p *plan) {
	a.srv.SetRemotePortals(remotePortals(cfg))
	wantL := a.wantListeners(cfg)
	for addr, cur := range a.listeners {
		if tag, ok := wantL[addr]; ok && tag == cur.tag {
			continue
		}
		cur.l.Close()
		delete(a.listeners, addr)
		if tag, ok := wantL[addr]; ok && p.newListeners[addr] == nil {
			l, err := net.Listen("tcp", addr.String())
			if err != nil {
				a.log.Error("re-listening with a new tag failed", "addr", addr, "err", err)
				continue
			}
			p.newListeners[addr] = &liveListener{l: l, tag: tag}
		}
	}
	for addr, nl := range p.newListeners {
		a.listeners[addr] = nl
		go func() {
			if err := a.srv.ServePortal(nl.l, nl.tag); err != nil && !errors.Is(err, iscsi.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				a.log.Error("portal stopped", "addr", addr, "err", err)
			}
		}()
	}
	a.syncISNS(cfg)
}

func (a *applier) removeTarget(id int, lt *liveTarget) {
	if a.srv != nil {
		if err := a.srv.RemoveTarget(lt.name); err != nil {
			a.log.Error("removing target failed", "target", lt.name, "err", err)
		}
	}
	lt.mu.Lock()
	for _, v := range lt.views {
		v.sync(nil, a.log)
	}
	lt.mu.Unlock()
	delete(a.targets, id)
}

// syncLUNs brings target id's LUN maps and every view of it up to date.
func (a *applier) syncLUNs(cfg *Config, id int, lt *liveTarget) {
	general := map[uint16]*scsi.LogicalUnit{}
	masked := map[string]map[uint16]*scsi.LogicalUnit{}
	for _, m := range cfg.TargetExtents {
		u := a.units[m.Extent]
		if m.Target != id || u == nil {
			continue
		}
		who := m.maskedTo(cfg)
		if who == nil {
			general[uint16(m.LunID)] = u.lu
			continue
		}
		for _, name := range who {
			if masked[name] == nil {
				masked[name] = map[uint16]*scsi.LogicalUnit{}
			}
			masked[name][uint16(m.LunID)] = u.lu
		}
	}
	lt.mu.Lock()
	defer lt.mu.Unlock()
	lt.general, lt.masked = general, masked
	for initiator, v := range lt.views {
		v.sync(lt.wantFor(initiator), a.log)
	}
}

// dropUnit detaches lu from every view before it is closed.
func (lt *liveTarget) dropUnit(lu *scsi.LogicalUnit) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for _, v := range lt.views {
		for lun, x := range v.luns {
			if x == lu {
				v.dev.Detach(lun)
				delete(v.luns, lun)
			}
		}
	}
	for lun, x := range lt.general {
		if x == lu {
			delete(lt.general, lun)
		}
	}
	for _, m := range lt.masked {
		for lun, x := range m {
			if x == lu {
				delete(m, lun)
			}
		}
	}
}

// close releases everything the applier opened, and returns the errors
// of closing the units.
func (a *applier) close() error {
	for id, lt := range a.targets {
		a.removeTarget(id, lt)
	}
	a.closeISNS()
	for addr, l := range a.listeners {
		l.l.Close()
		delete(a.listeners, addr)
	}
	var errs []error
	for id, u := range a.units {
		if err := u.lu.Close(); err != nil {
			errs = append(errs, fmt.Errorf("mgmt: closing extent %s: %w", u.ext.Name, err))
		}
		delete(a.units, id)
	}
	return errors.Join(errs...)
}

// sameUnit reports whether two versions of an extent make the same
// logical unit: they differ at most in fields that only describe it (the
// comment, the space warning threshold, the pool it came from, whether a
// front-end adopted it, and xen,
// which has no effect here). Such a change leaves the unit open, with its
// reservations, unit attentions and any sanitize it runs; any other
// change reopens it.
func sameUnit(a, b Extent) bool {
	for _, e := range []*Extent{&a, &b} {
		e.Comment, e.AvailThreshold, e.Pool, e.Xen, e.Adopted = "", nil, "", false, false
	}
	return reflect.DeepEqual(a, b)
}

// noReservations reports whether e's unit must offer no reservation
// commands: cfg has a remote portal, so another gateway serves the same
// storage, and e's Opener cannot give a store both gateways share
// (ReservationSharer). A reservation kept by one gateway alone would
// protect nothing from the other gateway's initiators, so the commands are
// withdrawn (INVALID COMMAND OPERATION CODE, and absent from REPORT
// SUPPORTED OPERATION CODES) rather than pretended.
func (a *applier) noReservations(cfg *Config, e Extent) bool {
	if a.open.sharer(e.Type) != nil {
		return false
	}
	for _, p := range cfg.Portals {
		if p.Remote {
			return true
		}
	}
	return false
}

// openDevice opens an extent's storage (wrapped in its encryption) and
// makes its unit's settings; noPR withdraws its reservation commands
// (noReservations).
func (a *applier) openDevice(e Extent, noPR bool) (backend.Device, scsi.UnitConfig, error) {
	uc, err := unitConfig(e)
	if err != nil {
		return nil, uc, err
	}
	dev, err := a.open.open(e)
	if err != nil {
		return nil, uc, err
	}
	if uc.ThinProvisioning {
		if _, ok := dev.(backend.Unmapper); !ok {
			uc.ThinProvisioning = false
		}
	}
	if rs := a.open.sharer(e.Type); rs != nil {
		st, err := rs.ReservationStore(e, dev)
		if err != nil {
			dev.Close()
			return nil, uc, fmt.Errorf("mgmt: extent %s: shared reservations: %w", e.Name, err)
		}
		uc.SharedReservations = st
	}
	if e.Encrypted || a.keyDir != "" {
		enc, err := a.encrypt(dev, e)
		if err != nil {
			dev.Close()
			return nil, uc, err
		}
		dev = enc
	}
	if a.prDir != "" {
		pr, err := reservationFile(a.prDir, e)
		if err != nil {
			dev.Close()
			return nil, uc, err
		}
		ss, err := sanitizeFile(a.prDir, e)
		if err != nil {
			dev.Close()
			return nil, uc, err
		}
		uc.Reservations, uc.SanitizeState = pr, ss
	}
	uc.Logger = a.log
	if uc.SharedReservations != nil {
		uc.Reservations = nil // the shared store keeps them
	}
	if noPR {
		uc.NoReservations, uc.Reservations = true, nil
	}
	return dev, uc, nil
}

// encryptionSector is the encryption unit of encrypted extents: 512
// bytes whatever the logical block size, so that changing an extent's
// block size leaves its data readable.
const encryptionSector = 512

// encrypt wraps an encrypted extent's storage in its encryption, and
// returns the storage of other extents as it is. The key is created on
// first use, but only over storage known to hold no data: a key file lost
// from under data that exists is reported, not replaced by a key that
// would read that data as noise. Storage that cannot tell what it holds
// (a block device) needs its key file put in place by hand. An extent
// that is not encrypted but has a key file is refused: its storage holds
// ciphertext that it would serve as data.
func (a *applier) encrypt(dev backend.Device, e Extent) (backend.Device, error) {
	fail := func(format string, args ...any) error {
		return &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "encrypted", Msg: fmt.Sprintf(format, args...)}
	}
	if !e.Encrypted {
		if a.keyDir == "" {
			return dev, nil
		}
		kf, err := extentFile(a.keyDir, e, ".key")
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(kf); err == nil {
			return nil, fail("the key file %s exists: the storage holds encrypted data; set encrypted, or remove the key file if the data is to go", kf)
		}
		return dev, nil
	}
	if a.keyDir == "" {
		return nil, fail("encrypted extents need a key directory (Options.KeyDir)")
	}
	kf, err := extentFile(a.keyDir, e, ".key")
	if err != nil {
		return nil, err
	}
	keys := backend.KeyFile{Path: kf}
	_, err = keys.Load()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !unwritten(dev) {
			return nil, fail("the key file %s is missing and the storage holds data or cannot tell: restore the key file (without it the data cannot be read), or, for new storage that cannot report its allocation, write %d random bytes to it (mode 0600)", keys.Path, backend.EncryptionKeySize)
		}
		key, err := backend.NewEncryptionKey()
		if err == nil {
			err = keys.Store(key)
		}
		if err != nil {
			return nil, fail("creating the key: %v", err)
		}
		a.log.Info("created the extent's encryption key; keep it with the data", "extent", e.Name, "file", keys.Path)
	case err != nil:
		return nil, fail("%v", err)
	}
	enc, err := backend.NewEncrypted(dev, keys, encryptionSector)
	if err != nil {
		return nil, fail("%v", err)
	}
	return enc, nil
}

// unwritten reports whether dev is known to hold no data: a thin device
// with nothing allocated.
func unwritten(dev backend.Device) bool {
	r, ok := dev.(backend.AllocationReporter)
	if !ok {
		return false
	}
	allocated, n, err := r.Allocation(0)
	return err == nil && !allocated && n >= dev.Size()
}

// unitConfig translates an extent into the SCSI unit's settings. Serial
// and NAA are the extent's, which the Manager generated when the extent
// was created without them (an empty one makes the unit pick its own).
func unitConfig(e Extent) (scsi.UnitConfig, error) {
	uc := scsi.UnitConfig{
		BlockSize:        uint32(e.Blocksize),
		Serial:           e.Serial,
		Vendor:           e.Vendor,
		Product:          e.Product,
		Revision:         e.Revision,
		ReadOnly:         e.RO,
		WriteCache:       e.WriteCache,
		RotationRate:     rpmValues[e.RPM],
		ThinProvisioning: e.Thin,
		Removable:        e.Removable,
		ThirdPartyCopy:   e.InsecureTPC,
		Offline:          !e.Online,
		CryptoErase:      e.Encrypted,
		SanitizeRate:     int64(e.SanitizeRateMiBps) << 20,
	}
	if e.NAA != "" {
		n, err := parseNAA(e.NAA)
		if err != nil {
			return uc, err
		}
		uc.NAA = n
	}
	if !e.HidePhysicalBlocksize && e.Blocksize < 4096 {
		uc.PhysicalBlockSize = 4096
	}
	return uc, nil
}

// wantListeners lists the addresses cfg's portals listen on, with tags;
// none while the portals are switched off.
func (a *applier) wantListeners(cfg *Config) map[netip.AddrPort]uint16 {
	if a.portalsOff {
		return nil
	}
	return wantListeners(cfg)
}

// wantListeners lists the addresses cfg's portals listen on, with tags.
func wantListeners(cfg *Config) map[netip.AddrPort]uint16 {
	out := map[netip.AddrPort]uint16{}
	for _, p := range cfg.Portals {
		if p.Remote {
			continue // another gateway listens on these
		}
		for _, l := range p.Listen {
			ip, err := netip.ParseAddr(l.IP)
			if err != nil {
				continue
			}
			out[netip.AddrPortFrom(ip.Unmap(), uint16(l.Port))] = uint16(p.Tag)
		}
	}
	return out
}

// remotePortals lists cfg's remote portals with the addresses their
// gateways listen on, for SendTargets.
func remotePortals(cfg *Config) []iscsi.RemotePortal {
	var out []iscsi.RemotePortal
	for _, p := range cfg.Portals {
		if !p.Remote || len(p.Listen) == 0 {
			continue
		}
		rp := iscsi.RemotePortal{Tag: uint16(p.Tag)}
		for _, l := range p.Listen {
			if ip, err := netip.ParseAddr(l.IP); err == nil {
				rp.Addrs = append(rp.Addrs, netip.AddrPortFrom(ip.Unmap(), uint16(l.Port)))
			}
		}
		out = append(out, rp)
	}
	return out
}

func portalOf(cfg *Config, addr netip.AddrPort) int {
	for _, p := range cfg.Portals {
		for _, l := range p.Listen {
			if l.IP == addr.Addr().String() && l.Port == int(addr.Port()) {
				return p.ID
			}
		}
	}
	return 0
}

// digestPolicies maps a target's digest settings to the login policy.
var digestPolicies = map[string]negotiate.DigestPolicy{
	DigestAuto: negotiate.DigestOptional, DigestCRC32C: negotiate.DigestRequired, DigestNone: negotiate.DigestRefused,
}

// portalTags lists the portal group tags of a target's groups, sorted;
// nil (every portal) when its group is on EveryPortal.
func portalTags(cfg *Config, t Target) []uint16 {
	var tags []uint16
	for _, g := range t.Groups {
		if g.Portal == EveryPortal {
			return nil
		}
		if p, ok := find(cfg.Portals, g.Portal); ok {
			tags = append(tags, uint16(p.Tag))
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags)
}

// policyFor builds a target's access policy from its groups: one rule
// per group, for the group's portal (every portal for EveryPortal),
// initiator group and auth method. A target with no groups admits
// everyone through every portal without authentication; a group without
// an initiator group admits everyone through its portal.
func policyFor(cfg *Config, t Target) *accessPolicy {
	p := &accessPolicy{}
	if len(t.Groups) == 0 {
		p.rules = append(p.rules, accessRule{anyTag: true})
	}
	for _, g := range t.Groups {
		r := accessRule{anyTag: g.Portal == EveryPortal, method: authMethodOf(g.AuthMethod)}
		if !r.anyTag {
			portal, ok := find(cfg.Portals, g.Portal)
			if !ok {
				continue
			}
			r.tag = uint16(portal.Tag)
		}
		if g.Auth != nil {
			r.authTag = *g.Auth
		}
		if g.Initiator != nil {
			ig, ok := find(cfg.Initiators, *g.Initiator)
			if !ok {
				continue
			}
			r.names = map[string]bool{}
			for _, n := range ig.Initiators {
				r.names[n] = true
			}
			for _, n := range ig.AuthNetwork {
				if pfx, err := parseNetwork(n); err == nil {
					r.networks = append(r.networks, pfx)
				}
			}
		}
		p.rules = append(p.rules, r)
	}
	return p
}
