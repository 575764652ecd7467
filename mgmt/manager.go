package mgmt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/iscsikit/iscsikit/iscsi"
)

// Options configure a Manager.
type Options struct {
	// Store keeps the configuration: FileStore{Dir} for a state
	// directory; nil keeps it in memory only (a MemoryStore).
	Store Store
	// Server is the running target the configuration is applied to; nil
	// validates and persists without serving (a configuration editor).
	//
	// The Manager shares the Server with its embedder: it adds and
	// removes only its own targets, and refuses a target whose name the
	// Server already serves for someone else (ErrExists). It installs
	// its authentication with Server.SetAuthenticator: logins to its
	// targets and discovery through its portals authenticate by the
	// configuration, and every other login by the Authenticator of the
	// Server's Options (none: AuthMethod None), as before. An
	// authenticator the embedder sets later replaces the Manager's.
	Server *iscsi.Server
	// Initial is saved and applied when the store holds nothing yet.
	// Nil starts from an empty configuration with DefaultBasename; a
	// Version of 0 means ConfigVersion, and an empty Basename
	// DefaultBasename.
	Initial *Config
	// AllowedDirs confines FILE extents (and DISK extents outside /dev)
	// to these directories; empty allows any absolute path.
	AllowedDirs []string
	// Openers open extents by type (Extent.Type), and check the fields
	// of their type. FILE and DISK default to DefaultOpeners'; a product
	// adds its own types here, or replaces the defaults. Nil or missing
	// entries keep the defaults.
	Openers map[string]Opener
	// ReservationDir keeps the persistent reservations that initiators
	// register with APTPL, one file per extent, so they survive a
	// restart; empty refuses APTPL (PTPL_C 0 in REPORT CAPABILITIES). It
	// also keeps the record of a SANITIZE in progress, so that one cut
	// short by a crash or restart is reported as failed afterwards
	// (scsi.UnitConfig.SanitizeState).
	ReservationDir string
	// KeyDir keeps the data keys of encrypted extents, one file per
	// extent, readable by its owner only; empty refuses encrypted
	// extents. Back it up with the data: an extent cannot be read
	// without its key.
	KeyDir string
	// Logger receives what goes wrong while applying; nil discards it.
	Logger *slog.Logger
	// ISNSEntityID names the network entity registered with the iSNS
	// servers of Global.ISNSServers; empty means "iscsikit:" and the
	// host name.
	ISNSEntityID string
}

// Manager is the management facade: it holds the configuration,
// validates every change, persists it through the Store and applies it
// live to the Server. Its methods are safe for concurrent use; changes
// are serialized.
type Manager struct {
	opt  Options
	log  *slog.Logger
	open openers

	mu  sync.Mutex
	cfg *Config
	app *applier
}

// EmptyConfig returns a configuration with no objects and the default
// basename.
func EmptyConfig() *Config {
	return &Config{Version: ConfigVersion, Global: Global{Basename: DefaultBasename}}
}

// New loads the configuration from the store (saving opt.Initial when
// there is none), validates it and applies it to the server. A stored
// configuration that fails validation is refused with errors naming each
// object and field; nothing is applied then.
func New(ctx context.Context, opt Options) (*Manager, error) {
	if opt.Store == nil {
		opt.Store = &MemoryStore{}
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	open := newOpeners(opt.Openers)
	m := &Manager{opt: opt, log: log, open: open, app: newApplier(opt.Server, open, opt.ReservationDir, opt.KeyDir, log)}
	cfg, err := opt.Store.Load(ctx)
	fresh := errors.Is(err, fs.ErrNotExist)
	m.app.isns.entity = opt.ISNSEntityID
	switch {
	case fresh && opt.Initial != nil:
		cfg = opt.Initial.clone()
		if cfg.Version == 0 {
			cfg.Version = ConfigVersion
		}
		if cfg.Global.Basename == "" {
			cfg.Global.Basename = DefaultBasename
		}
	case fresh:
		cfg = EmptyConfig()
	case err != nil:
		return nil, err
	}
	cfg.migrate()
	cfg.normalize()
	filled := cfg.fillIdentity()
	if err := validate(cfg, opt.AllowedDirs, open); err != nil {
		return nil, err
	}
	var save Store
	if fresh || filled {
		save = opt.Store
	}
	if err := m.applyAndSave(ctx, cfg, save); err != nil {
		return nil, err
	}
	m.cfg = cfg
	return m, nil
}

// Close stops serving what the Manager applied: its targets (ending
// their sessions), portals and logical units (each drained of its
// commands in flight first, see scsi.LogicalUnit.Close). The stored
// configuration is kept. It returns the errors of closing the units'
// storage, joined. Later calls change nothing and return nil.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.app.close()
}

// PortalAddrs returns the addresses portal id listens on, as bound: a
// Listen with port 0 shows the port the system picked. Nil for a portal
// that does not listen (or without a Server).
func (m *Manager) PortalAddrs(id int) []net.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := find(m.cfg.Portals, id)
	if !ok {
		return nil
	}
	var out []net.Addr
	for addr := range wantListeners(&Config{Portals: []Portal{p}}) {
		if l := m.app.listeners[addr]; l != nil {
			out = append(out, l.l.Addr())
		}
	}
	return out
}

// Config returns a copy of the whole configuration. CHAP secrets are
// included only when secrets is true.
func (m *Manager) Config(secrets bool) *Config {
	m.mu.Lock()
	c := m.cfg.clone()
	m.mu.Unlock()
	if !secrets {
		for i := range c.Auths {
			redact(&c.Auths[i])
		}
	}
	return c
}

func redact(a *Auth) { a.Secret, a.PeerSecret = "", "" }

// Replace validates cfg as a whole and, if it passes, applies the
// difference live and saves it. On any error the running state and the
// store are as before.
func (m *Manager) Replace(ctx context.Context, cfg *Config) error {
	next := cfg.clone()
	return m.change(ctx, func(c *Config) error { *c = *next; return nil })
}

// Update runs fn on a copy of the whole configuration (secrets included)
// and, if fn succeeds, validates, applies and saves the result, all under
// the Manager's lock: a front-end that changes several objects at once
// (a share is a target, a volume and its CHAP users) neither sees nor
// overwrites another caller's change halfway. On any error the running
// state and the store are as before.
func (m *Manager) Update(ctx context.Context, fn func(c *Config) error) error {
	return m.change(ctx, fn)
}

// Reload re-reads the store and applies what changed (SIGHUP in
// iscsid). A broken configuration is refused and the old one keeps
// running.
func (m *Manager) Reload(ctx context.Context) error {
	cfg, err := m.opt.Store.Load(ctx)
	if err != nil {
		return err
	}
	cfg.migrate()
	cfg.normalize()
	filled := cfg.fillIdentity()
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg.NextIDs.atLeast(m.cfg.NextIDs) // ids given before stay given
	if err := validate(cfg, m.opt.AllowedDirs, m.open); err != nil {
		return err
	}
	// Identities generated for extents the file lacked them for are
	// saved, so the next load reports the same ones.
	var save Store
	if filled {
		save = m.opt.Store
	}
	if err := m.applyAndSave(ctx, cfg, save); err != nil {
		return err
	}
	m.cfg = cfg
	return nil
}

// applyAndSave applies cfg and, with a store, saves it: first whatever
// can fail (opening storage, listening, draining units to reopen), then
// the save, then the live changes, which cannot fail. So on any error
// the server and the store are as they were: no session was ended, no
// LUN dropped.
func (m *Manager) applyAndSave(ctx context.Context, cfg *Config, store Store) error {
	p, err := m.app.prepare(ctx, cfg)
	if err != nil {
		return err
	}
	if store != nil {
		if err := store.Save(ctx, cfg); err != nil {
			p.abort()
			return err
		}
	}
	m.app.commit(cfg, p)
	return nil
}

// change runs fn on a copy of the configuration, validates the result,
// applies it and saves it (applyAndSave): on any error the store and the
// server are as they were.
func (m *Manager) change(ctx context.Context, fn func(c *Config) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changeLocked(ctx, fn)
}

// changeLocked is change for a caller holding m.mu, which acts on the
// outcome (removes a deleted extent's file) before letting go of it.
func (m *Manager) changeLocked(ctx context.Context, fn func(c *Config) error) error {
	next := m.cfg.clone()
	if err := fn(next); err != nil {
		return err
	}
	next.Version = ConfigVersion
	next.NextIDs.atLeast(m.cfg.NextIDs) // ids given before stay given
	next.normalize()
	next.fillIdentity()
	if err := validate(next, m.opt.AllowedDirs, m.open); err != nil {
		return err
	}
	if err := checkNewDisks(m.cfg, next); err != nil {
		return err
	}
	if err := checkShrinks(m.cfg, next); err != nil {
		return err
	}
	if err := checkVolumeNames(m.cfg, next); err != nil {
		return err
	}
	if err := m.applyAndSave(ctx, next, m.opt.Store); err != nil {
		return err
	}
	m.cfg = next
	return nil
}

// ServePortals switches the portals' listeners on or off without
// changing the configuration (an iSCSI service start or stop): off
// closes every listener, so no new connection is accepted, and leaves
// logged-in sessions to finish; on listens again. Configuration changes
// while off are applied but listen only once switched back on.
func (m *Manager) ServePortals(ctx context.Context, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	was := m.app.portalsOff
	m.app.portalsOff = !on
	if err := m.applyAndSave(ctx, m.cfg, nil); err != nil {
		m.app.portalsOff = was
		return err
	}
	return nil
}

// PortalsServed reports whether the portals are switched on.
func (m *Manager) PortalsServed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.app.portalsOff
}

// Global returns the global settings.
func (m *Manager) Global() Global { return m.Config(false).Global }

// UpdateGlobal changes the global settings with fn.
func (m *Manager) UpdateGlobal(ctx context.Context, fn func(g *Global) error) (Global, error) {
	var out Global
	err := m.change(ctx, func(c *Config) error {
		if err := fn(&c.Global); err != nil {
			return err
		}
		out = c.Global
		return nil
	})
	return out, err
}

// create adds v to the list with the next free id; fix, if not nil, may
// fill defaults that depend on the id.
func create[T any, P record[T]](m *Manager, ctx context.Context, list func(*Config) *[]T, v T, fix func(*T)) (T, error) {
	err := m.change(ctx, func(c *Config) error {
		l := list(c)
		P(&v).setObjectID(NewID[T, P](c, *l))
		if fix != nil {
			fix(&v)
		}
		*l = append(*l, v)
		c.normalize() // what the caller gets back has its defaults
		c.fillIdentity()
		v = (*l)[len(*l)-1]
		return nil
	})
	return v, err
}

// update runs fn on the object with id; the id cannot change.
func update[T any, P record[T]](m *Manager, ctx context.Context, object string, list func(*Config) *[]T, id int, fn func(*T) error) (T, error) {
	var out T
	err := m.change(ctx, func(c *Config) error {
		l := *list(c)
		i := index[T, P](l, id)
		if i < 0 {
			return &Error{Kind: KindNotFound, Object: object, ID: id, Msg: "does not exist"}
		}
		if err := fn(&l[i]); err != nil {
			return err
		}
		P(&l[i]).setObjectID(id)
		c.normalize()
		c.fillIdentity()
		out = l[i]
		return nil
	})
	return out, err
}

// remove deletes the object with id. users lists what refers to it; if
// anything does, the delete is refused unless force, in which case
// detach drops the references first.
func remove[T any, P record[T]](m *Manager, ctx context.Context, object string, list func(*Config) *[]T, id int, force bool,
	users func(c *Config) []string, detach func(c *Config)) error {
	return m.change(ctx, removeFn[T, P](object, list, id, force, users, detach, nil))
}

// removeFn is the change of remove; gone, if not nil, gets the object
// deleted, as it was under the Manager's lock.
func removeFn[T any, P record[T]](object string, list func(*Config) *[]T, id int, force bool,
	users func(c *Config) []string, detach func(c *Config), gone *T) func(c *Config) error {
	return func(c *Config) error {
		l := list(c)
		i := index[T, P](*l, id)
		if i < 0 {
			return &Error{Kind: KindNotFound, Object: object, ID: id, Msg: "does not exist"}
		}
		if u := users(c); len(u) > 0 {
			if !force {
				return &Error{Kind: KindInUse, Object: object, ID: id, Msg: fmt.Sprintf("used by %v; remove those first or delete with force", u)}
			}
			detach(c)
		}
		if gone != nil {
			*gone = (*l)[i]
		}
		*l = append((*l)[:i], (*l)[i+1:]...)
		return nil
	}
}

func portalsOf(c *Config) *[]Portal             { return &c.Portals }
func initiatorsOf(c *Config) *[]Initiator       { return &c.Initiators }
func authsOf(c *Config) *[]Auth                 { return &c.Auths }
func targetsOf(c *Config) *[]Target             { return &c.Targets }
func extentsOf(c *Config) *[]Extent             { return &c.Extents }
func targetExtentsOf(c *Config) *[]TargetExtent { return &c.TargetExtents }

// groupUsers lists the targets whose groups match, and dropGroups removes
// those groups.
func groupUsers(c *Config, match func(TargetGroup) bool) []string {
	var out []string
	for _, t := range c.Targets {
		for _, g := range t.Groups {
			if match(g) {
				out = append(out, fmt.Sprintf("target %d", t.ID))
				break
			}
		}
	}
	return out
}

func dropGroups(c *Config, match func(TargetGroup) bool) {
	for i := range c.Targets {
		t := &c.Targets[i]
		kept := t.Groups[:0]
		for _, g := range t.Groups {
			if !match(g) {
				kept = append(kept, g)
			}
		}
		t.Groups = kept
	}
}

// mapUsers lists the target-extent maps that match.
func mapUsers(c *Config, match func(TargetExtent) bool) []string {
	var out []string
	for _, te := range c.TargetExtents {
		if match(te) {
			out = append(out, fmt.Sprintf("targetextent %d", te.ID))
		}
	}
	return out
}

func dropMaps(c *Config, match func(TargetExtent) bool) {
	kept := c.TargetExtents[:0]
	for _, te := range c.TargetExtents {
		if !match(te) {
			kept = append(kept, te)
		}
	}
	c.TargetExtents = kept
}

// Portals lists the portals matching q.
func (m *Manager) Portals(q Query) ([]Portal, error) { return query(m.Config(false).Portals, q) }

// CreatePortal adds a portal; a zero Tag becomes the new id.
func (m *Manager) CreatePortal(ctx context.Context, p Portal) (Portal, error) {
	return create(m, ctx, portalsOf, p, func(p *Portal) {
		if p.Tag == 0 {
			p.Tag = p.ID
		}
	})
}

// UpdatePortal changes portal id with fn.
func (m *Manager) UpdatePortal(ctx context.Context, id int, fn func(*Portal) error) (Portal, error) {
	return update(m, ctx, "portal", portalsOf, id, fn)
}

// DeletePortal deletes portal id; with force, target groups using it are
// removed too.
func (m *Manager) DeletePortal(ctx context.Context, id int, force bool) error {
	match := func(g TargetGroup) bool { return g.Portal == id }
	return remove(m, ctx, "portal", portalsOf, id, force,
		func(c *Config) []string { return groupUsers(c, match) },
		func(c *Config) { dropGroups(c, match) })
}

// Initiators lists the initiator groups matching q.
func (m *Manager) Initiators(q Query) ([]Initiator, error) {
	return query(m.Config(false).Initiators, q)
}

// CreateInitiator adds an initiator group.
func (m *Manager) CreateInitiator(ctx context.Context, i Initiator) (Initiator, error) {
	return create(m, ctx, initiatorsOf, i, nil)
}

// UpdateInitiator changes initiator group id with fn.
func (m *Manager) UpdateInitiator(ctx context.Context, id int, fn func(*Initiator) error) (Initiator, error) {
	return update(m, ctx, "initiator", initiatorsOf, id, fn)
}

// DeleteInitiator deletes initiator group id; with force, the target
// groups using it and the LUN maps masked to it are removed (their
// access goes, it is never widened).
func (m *Manager) DeleteInitiator(ctx context.Context, id int, force bool) error {
	match := func(g TargetGroup) bool { return g.Initiator != nil && *g.Initiator == id }
	masked := func(te TargetExtent) bool { return te.InitiatorGroup != nil && *te.InitiatorGroup == id }
	return remove(m, ctx, "initiator", initiatorsOf, id, force,
		func(c *Config) []string { return append(groupUsers(c, match), mapUsers(c, masked)...) },
		func(c *Config) { dropGroups(c, match); dropMaps(c, masked) })
}

// Auths lists the CHAP credentials matching q; secrets only with q.Secrets.
func (m *Manager) Auths(q Query) ([]Auth, error) {
	return query(m.Config(q.Secrets).Auths, q)
}

// CreateAuth adds a CHAP credential to the group of its tag.
func (m *Manager) CreateAuth(ctx context.Context, a Auth) (Auth, error) {
	out, err := create(m, ctx, authsOf, a, nil)
	redact(&out)
	return out, err
}

// UpdateAuth changes credential id with fn (which sees the secrets).
func (m *Manager) UpdateAuth(ctx context.Context, id int, fn func(*Auth) error) (Auth, error) {
	out, err := update(m, ctx, "auth", authsOf, id, fn)
	redact(&out)
	return out, err
}

// DeleteAuth deletes credential id. If it is the last of its group and
// the group is in use, the delete is refused unless force, which drops
// the target groups and portal references that use the group.
func (m *Manager) DeleteAuth(ctx context.Context, id int, force bool) error {
	var tag int
	last := func(c *Config) bool {
		n := 0
		for _, a := range c.Auths {
			if a.ID == id {
				tag = a.Tag
			}
		}
		for _, a := range c.Auths {
			if a.Tag == tag {
				n++
			}
		}
		return n == 1
	}
	match := func(g TargetGroup) bool { return g.Auth != nil && *g.Auth == tag }
	return remove(m, ctx, "auth", authsOf, id, force,
		func(c *Config) []string {
			if !last(c) {
				return nil
			}
			u := groupUsers(c, match)
			for _, p := range c.Portals {
				if p.DiscoveryAuthGroup != nil && *p.DiscoveryAuthGroup == tag {
					u = append(u, fmt.Sprintf("portal %d", p.ID))
				}
			}
			return u
		},
		func(c *Config) {
			dropGroups(c, match)
			for i := range c.Portals {
				if g := c.Portals[i].DiscoveryAuthGroup; g != nil && *g == tag {
					c.Portals[i].DiscoveryAuthGroup = nil
				}
			}
		})
}

// Targets lists the targets matching q.
func (m *Manager) Targets(q Query) ([]Target, error) { return query(m.Config(false).Targets, q) }

// CreateTarget adds a target.
func (m *Manager) CreateTarget(ctx context.Context, t Target) (Target, error) {
	return create(m, ctx, targetsOf, t, nil)
}

// UpdateTarget changes target id with fn.
func (m *Manager) UpdateTarget(ctx context.Context, id int, fn func(*Target) error) (Target, error) {
	return update(m, ctx, "target", targetsOf, id, fn)
}

// DeleteTarget deletes target id, ending its sessions; with force its
// LUN maps go too.
func (m *Manager) DeleteTarget(ctx context.Context, id int, force bool) error {
	match := func(te TargetExtent) bool { return te.Target == id }
	return remove(m, ctx, "target", targetsOf, id, force,
		func(c *Config) []string { return mapUsers(c, match) },
		func(c *Config) { dropMaps(c, match) })
}

// ValidateName checks the name a target called name would be served
// under, against the current basename.
func (m *Manager) ValidateName(name string) error {
	if err := checkTargetName(m.Global(), name); err != nil {
		return &Error{Kind: KindInvalid, Object: "target", Name: name, Field: "name", Msg: err.Error()}
	}
	return nil
}

// Extents lists the extents matching q.
func (m *Manager) Extents(q Query) ([]Extent, error) { return query(m.Config(false).Extents, q) }

// CreateExtent adds an extent (a FILE extent's file is created sparse when
// it is first mapped into a target).
func (m *Manager) CreateExtent(ctx context.Context, e Extent) (Extent, error) {
	return create(m, ctx, extentsOf, e, nil)
}

// UpdateExtent changes extent id with fn; a unit in use is reopened with
// the new settings (its initiators see the LUN change).
func (m *Manager) UpdateExtent(ctx context.Context, id int, fn func(*Extent) error) (Extent, error) {
	return update(m, ctx, "extent", extentsOf, id, fn)
}

// DeleteExtent deletes extent id; with force its LUN maps go too, and
// with removeFile a FILE extent's file is deleted afterwards. The extent
// is looked up, deleted and its file removed under the Manager's lock,
// so a concurrent change cannot make it act on another extent's file.
func (m *Manager) DeleteExtent(ctx context.Context, id int, removeFile, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.deleteExtentLocked(ctx, func(*Config) (int, error) { return id, nil }, removeFile, force)
	return err
}

// deleteExtentLocked deletes the extent pick chooses (in the
// configuration being changed) and, with removeFile, a FILE extent's
// file; it returns the extent deleted. The caller holds m.mu.
func (m *Manager) deleteExtentLocked(ctx context.Context, pick func(c *Config) (int, error), removeFile, force bool) (Extent, error) {
	var gone Extent
	err := m.changeLocked(ctx, func(c *Config) error {
		id, err := pick(c)
		if err != nil {
			return err
		}
		match := func(te TargetExtent) bool { return te.Extent == id }
		return removeFn[Extent](
			"extent", extentsOf, id, force,
			func(c *Config) []string { return mapUsers(c, match) },
			func(c *Config) { dropMaps(c, match) }, &gone)(c)
	})
	if err != nil {
		return Extent{}, err
	}
	if removeFile && gone.Type == ExtentFile {
		if rerr := os.Remove(gone.Path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return gone, fmt.Errorf("mgmt: extent %d deleted, but its file stays: %w", gone.ID, rerr)
		}
	}
	return gone, nil
}

// TargetExtents lists the LUN maps matching q.
func (m *Manager) TargetExtents(q Query) ([]TargetExtent, error) {
	return query(m.Config(false).TargetExtents, q)
}

// CreateTargetExtent maps an extent into a target; the target's
// initiators get REPORTED LUNS DATA HAS CHANGED.
func (m *Manager) CreateTargetExtent(ctx context.Context, te TargetExtent) (TargetExtent, error) {
	return create(m, ctx, targetExtentsOf, te, nil)
}

// UpdateTargetExtent changes LUN map id with fn.
func (m *Manager) UpdateTargetExtent(ctx context.Context, id int, fn func(*TargetExtent) error) (TargetExtent, error) {
	return update(m, ctx, "targetextent", targetExtentsOf, id, fn)
}

// DeleteTargetExtent removes LUN map id.
func (m *Manager) DeleteTargetExtent(ctx context.Context, id int) error {
	return remove(m, ctx, "targetextent", targetExtentsOf, id, false,
		func(*Config) []string { return nil }, func(*Config) {})
}
