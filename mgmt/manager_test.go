package mgmt

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

var ctx = context.Background()

// memoryOpen backs every extent with memory, so tests need no files.
func memoryOpen(e Extent) (backend.Device, error) {
	size := e.Filesize
	if size == 0 {
		size = 16 << 20
	}
	return backend.NewMemory(size), nil
}

// openerFunc is an Opener of FILE or DISK extents that opens them its
// own way.
type openerFunc func(e Extent) (backend.Device, error)

func (openerFunc) Check(e Extent) error                    { return FileOpener{}.Check(e) }
func (openerFunc) Storage(e Extent) string                 { return FileOpener{}.Storage(e) }
func (f openerFunc) Open(e Extent) (backend.Device, error) { return f(e) }

// memoryOpeners back FILE and DISK extents with memory.
func memoryOpeners() map[string]Opener {
	return map[string]Opener{ExtentFile: openerFunc(memoryOpen), ExtentDisk: openerFunc(memoryOpen)}
}

func newManager(t *testing.T, srv *iscsi.Server) (*Manager, *MemoryStore) {
	t.Helper()
	store := &MemoryStore{}
	m, err := New(ctx, Options{Store: store, Server: srv, Openers: memoryOpeners()})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m, store
}

func TestCRUDEveryObject(t *testing.T) {
	m, store := newManager(t, nil)

	p, err := m.CreatePortal(ctx, Portal{Comment: "main", DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "0.0.0.0", Port: 3260}}})
	require.NoError(t, err)
	require.Equal(t, 1, p.ID)
	require.Equal(t, 1, p.Tag, "tag defaults to the id")
	ig, err := m.CreateInitiator(ctx, Initiator{Comment: "esx", Initiators: []string{"iqn.1998-01.com.vmware:esx1"}})
	require.NoError(t, err)
	a, err := m.CreateAuth(ctx, Auth{Tag: 1, User: "u", Secret: "abcdefghijkl"})
	require.NoError(t, err)
	require.Empty(t, a.Secret, "secrets are not handed back")
	tg := NewTarget()
	tg.Name, tg.Groups = "target0", []TargetGroup{{Portal: p.ID, Initiator: &ig.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "lun0", "/srv/lun0.img", 1<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	te, err := m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 0})
	require.NoError(t, err)

	// Updates keep ids and are validated.
	p, err = m.UpdatePortal(ctx, p.ID, func(p *Portal) error { p.Comment = "renamed"; p.ID = 99; return nil })
	require.NoError(t, err)
	require.Equal(t, 1, p.ID)
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Blocksize = 3; return nil })
	require.ErrorIs(t, err, ErrInvalid)
	_, err = m.UpdateTarget(ctx, 42, func(*Target) error { return nil })
	require.ErrorIs(t, err, ErrNotFound)
	_, err = m.UpdateInitiator(ctx, ig.ID, func(i *Initiator) error { i.AuthNetwork = []string{"10.0.0.0/8"}; return nil })
	require.NoError(t, err)
	_, err = m.UpdateAuth(ctx, a.ID, func(a *Auth) error { a.Secret = "newsecret1234"; return nil })
	require.NoError(t, err)
	_, err = m.UpdateTargetExtent(ctx, te.ID, func(te *TargetExtent) error { te.LunID = 5; return nil })
	require.NoError(t, err)
	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.Basename = "iqn.2005-10.org.freenas.ctl"; return nil })
	require.NoError(t, err)

	// Queries filter by JSON field, page, and hide secrets unless asked.
	got, err := m.Targets(Query{Filters: map[string]any{"name": "target0"}})
	require.NoError(t, err)
	require.Len(t, got, 1)
	got, err = m.Targets(Query{Filters: map[string]any{"name": "nope"}})
	require.NoError(t, err)
	require.Empty(t, got)
	_, err = m.Targets(Query{Filters: map[string]any{"colour": "red"}})
	require.ErrorIs(t, err, ErrInvalid)
	auths, err := m.Auths(Query{})
	require.NoError(t, err)
	require.Empty(t, auths[0].Secret)
	auths, err = m.Auths(Query{Secrets: true})
	require.NoError(t, err)
	require.Equal(t, "newsecret1234", auths[0].Secret)
	maps, err := m.TargetExtents(Query{Filters: map[string]any{"lunid": 5}})
	require.NoError(t, err)
	require.Len(t, maps, 1)
	for i := 0; i < 4; i++ {
		_, err := m.CreateInitiator(ctx, Initiator{Comment: "g" + strconv.Itoa(i)})
		require.NoError(t, err)
	}
	page, err := m.Initiators(Query{Offset: 1, Limit: 2})
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, []int{page[0].ID, page[1].ID})

	// Deleting what is in use needs force, which drops the references.
	require.ErrorIs(t, m.DeletePortal(ctx, p.ID, false), ErrInUse)
	require.ErrorIs(t, m.DeleteInitiator(ctx, ig.ID, false), ErrInUse)
	require.ErrorIs(t, m.DeleteExtent(ctx, e.ID, false, false), ErrInUse)
	require.ErrorIs(t, m.DeleteTarget(ctx, tg.ID, false), ErrInUse)
	require.NoError(t, m.DeleteTargetExtent(ctx, te.ID))
	require.NoError(t, m.DeleteExtent(ctx, e.ID, false, false))
	require.NoError(t, m.DeleteInitiator(ctx, ig.ID, true))
	tgs, _ := m.Targets(Query{})
	require.Empty(t, tgs[0].Groups, "force removed the group instead of opening it to everyone")
	require.NoError(t, m.DeletePortal(ctx, p.ID, false))
	require.NoError(t, m.DeleteAuth(ctx, a.ID, false))
	require.NoError(t, m.DeleteTarget(ctx, tg.ID, false))
	require.ErrorIs(t, m.DeleteTarget(ctx, tg.ID, false), ErrNotFound)

	// Every change reached the store.
	saved, err := store.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, m.Config(true), saved)
	require.Equal(t, "iqn.2005-10.org.freenas.ctl", saved.Global.Basename)
}

func TestDeleteAuthInUse(t *testing.T) {
	m, _ := newManager(t, nil)
	a, err := m.CreateAuth(ctx, Auth{Tag: 3, User: "u", Secret: "abcdefghijkl"})
	require.NoError(t, err)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthCHAP, DiscoveryAuthGroup: intp(3), Listen: []Listen{{IP: "127.0.0.1", Port: 3260}}})
	require.NoError(t, err)
	require.ErrorIs(t, m.DeleteAuth(ctx, a.ID, false), ErrInUse)
	// A second credential in the group makes the first one free to go.
	b, err := m.CreateAuth(ctx, Auth{Tag: 3, User: "v", Secret: "abcdefghijkl"})
	require.NoError(t, err)
	require.NoError(t, m.DeleteAuth(ctx, a.ID, false))
	// Forcing the last one out of a group a CHAP portal uses would leave
	// discovery without credentials: refused, never silently opened.
	err = m.DeleteAuth(ctx, b.ID, true)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "CHAP needs an auth group")
	_, err = m.UpdatePortal(ctx, p.ID, func(p *Portal) error { p.DiscoveryAuthMethod, p.DiscoveryAuthGroup = AuthNone, nil; return nil })
	require.NoError(t, err)
	require.NoError(t, m.DeleteAuth(ctx, b.ID, false))
	ps, _ := m.Portals(Query{})
	require.Nil(t, ps[0].DiscoveryAuthGroup)
	require.Equal(t, p.ID, ps[0].ID)
}

func TestValidateNameAndChoices(t *testing.T) {
	m, _ := newManager(t, nil)
	require.NoError(t, m.ValidateName("target0"))
	err := m.ValidateName("Target 0")
	require.ErrorIs(t, err, ErrInvalid)
	ips, err := m.ListenIPChoices()
	require.NoError(t, err)
	require.Contains(t, ips, "0.0.0.0")
	require.Contains(t, ips, "127.0.0.1")
	_, err = m.DiskChoices()
	require.NoError(t, err)
}

func TestFileStoreRoundTripAndMode(t *testing.T) {
	dir := t.TempDir()
	s := FileStore{Dir: dir}
	_, err := s.Load(ctx)
	require.ErrorIs(t, err, os.ErrNotExist)
	cfg := validConfig()
	require.NoError(t, s.Save(ctx, cfg))
	fi, err := os.Stat(s.Path())
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the file holds CHAP secrets")
	got, err := s.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, cfg, got)
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".config-*"))
	require.Empty(t, leftovers)
}

func TestDecodeConfigErrors(t *testing.T) {
	_, err := DecodeConfig([]byte("{\n  \"version\": 1,\n  \"portals\": [\n}"))
	require.ErrorContains(t, err, "line 4")
	_, err = DecodeConfig([]byte(`{"version": 1, "extents": [{"id": 1, "nmae": "typo"}]}`))
	require.ErrorContains(t, err, `unknown field "nmae"`)
	_, err = DecodeConfig([]byte(`{"global": {}}`))
	require.ErrorContains(t, err, "version: missing")
	_, err = DecodeConfig([]byte(`{"version": 9}`))
	require.ErrorIs(t, err, ErrUnsupported)

	// Omitted fields take the create-call defaults.
	cfg, err := DecodeConfig([]byte(`{"version": 1, "extents": [{"id": 1, "name": "lun0", "type": "FILE", "path": "/srv/a.img", "filesize": 1048576}],
		"targets": [{"id": 1, "name": "t", "groups": [{"portal": 1}]}], "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": 3260}]}]}`))
	require.NoError(t, err)
	require.Equal(t, 512, cfg.Extents[0].Blocksize)
	require.True(t, cfg.Extents[0].Enabled && cfg.Extents[0].WriteCache && cfg.Extents[0].Online && cfg.Extents[0].Thin)
	require.Equal(t, StateReady, cfg.Targets[0].State)
	require.Equal(t, AuthNone, cfg.Targets[0].Groups[0].AuthMethod)
	require.Equal(t, AuthNone, cfg.Portals[0].DiscoveryAuthMethod)
}

// TestCrashBetweenWriteAndRename kills a process that is saving a new
// configuration right after writing the temporary file: the old one must
// load intact.
func TestCrashBetweenWriteAndRename(t *testing.T) {
	if dir := os.Getenv("MGMT_CRASH_DIR"); dir != "" {
		s := FileStore{Dir: dir, beforeRename: func() { os.Exit(3) }}
		next := validConfig()
		next.Global.Basename = "iqn.2026-11.com.example.new"
		s.Save(ctx, next)
		os.Exit(0) // not reached
	}
	dir := t.TempDir()
	old := validConfig()
	require.NoError(t, FileStore{Dir: dir}.Save(ctx, old))

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenWriteAndRename$")
	cmd.Env = append(os.Environ(), "MGMT_CRASH_DIR="+dir)
	err := cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, 3, ee.ExitCode(), "the child died where it should")

	got, err := FileStore{Dir: dir}.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, old, got, "the old configuration survives the crash")
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".config-*"))
	require.NotEmpty(t, leftovers, "the new one had been written but not renamed")
}

func TestRefusedChangeLeavesEverythingAsItWas(t *testing.T) {
	m, store := newManager(t, nil)
	before := m.Config(true)
	_, err := m.CreateTargetExtent(ctx, TargetExtent{Target: 1, Extent: 1})
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, before, m.Config(true))
	saved, err := store.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, before, saved)
}

// liveServer is an iscsi.Server on a loopback listener managed by m.
func liveServer(t *testing.T) (*iscsi.Server, string, int) {
	t.Helper()
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return srv, "127.0.0.1:" + strconv.Itoa(port), port
}

// TestLiveApplyDoesNotDisturbOtherLUNs changes the configuration in every
// way while an initiator writes to and reads back another target's LUN;
// that initiator must see no error.
func TestLiveApplyDoesNotDisturbOtherLUNs(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	busy := NewTarget()
	busy.Name, busy.Groups = "busy", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	busy, err = m.CreateTarget(ctx, busy)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "busy0", "/srv/busy0.img", 8<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: busy.ID, Extent: e.ID, LunID: 0})
	require.NoError(t, err)

	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":busy"})
	require.NoError(t, err)
	defer c.Close()
	_ = c.TestUnitReady(ctx, 0)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ioErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rand.Read(buf)
			lba := uint64(i%100) * 128
			if err := c.WriteBlocks(ctx, 0, lba, buf, 512, false); err != nil {
				ioErr = err
				return
			}
			got, err := c.ReadBlocks(ctx, 0, lba, 128, 512)
			if err != nil || !bytes.Equal(got, buf) {
				ioErr = err
				if err == nil {
					ioErr = errMismatch
				}
				return
			}
		}
	}()

	// Meanwhile: a second portal, targets and LUNs come and go.
	_, port2 := func() (string, int) { _, a, p := liveServer(t); return a, p }()
	p2, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port2}}})
	require.NoError(t, err)
	for i := 0; i < 5; i++ {
		other := NewTarget()
		other.Name, other.Groups = "other"+strconv.Itoa(i), []TargetGroup{{Portal: p2.ID, AuthMethod: AuthNone}}
		other, err = m.CreateTarget(ctx, other)
		require.NoError(t, err)
		x := NewExtent()
		x.Name, x.Path, x.Filesize = "x"+strconv.Itoa(i), "/srv/x"+strconv.Itoa(i)+".img", 1<<20
		x, err = m.CreateExtent(ctx, x)
		require.NoError(t, err)
		te, err := m.CreateTargetExtent(ctx, TargetExtent{Target: other.ID, Extent: x.ID, LunID: 3})
		require.NoError(t, err)
		// Log in to the new target through the new portal.
		oc, err := initiator.Dial(ctx, "127.0.0.1:"+strconv.Itoa(port2), initiator.Options{TargetName: DefaultBasename + ":" + other.Name})
		require.NoError(t, err)
		luns, err := oc.ReportLUNs(ctx)
		require.NoError(t, err)
		require.Equal(t, []uint64{scsi.EncodeLUN(3)}, luns)
		// Removing its LUN and then the target ends only that session.
		_, err = m.UpdateExtent(ctx, x.ID, func(e *Extent) error { e.RO = true; return nil })
		require.NoError(t, err)
		require.NoError(t, m.DeleteTargetExtent(ctx, te.ID))
		require.NoError(t, m.DeleteTarget(ctx, other.ID, false))
		select {
		case <-oc.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the removed target's session survived")
		}
		oc.Close()
		require.NoError(t, m.DeleteExtent(ctx, x.ID, false, false))
	}
	require.NoError(t, m.DeletePortal(ctx, p2.ID, false))
	close(stop)
	wg.Wait()
	require.NoError(t, ioErr, "the busy initiator was disturbed")
}

// TestLiveLUNChangesRaiseUnitAttention maps a second LUN into a target with
// a logged-in initiator, which learns of it through REPORTED LUNS DATA HAS
// CHANGED and then sees it in REPORT LUNS.
func TestLiveLUNChangesRaiseUnitAttention(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "t", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	for i, name := range []string{"a", "b"} {
		e := NewExtent()
		e.Name, e.Path, e.Filesize = name, "/srv/"+name+".img", 1<<20
		e, err = m.CreateExtent(ctx, e)
		require.NoError(t, err)
		if i == 0 {
			_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 0})
			require.NoError(t, err)
		}
	}
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":t"})
	require.NoError(t, err)
	defer c.Close()
	_ = c.TestUnitReady(ctx, 0)
	require.NoError(t, c.TestUnitReady(ctx, 0))

	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: 2, LunID: 7})
	require.NoError(t, err)
	var se *initiator.StatusError
	require.ErrorAs(t, c.TestUnitReady(ctx, 0), &se)
	key, asc, ascq := se.SenseKey()
	require.Equal(t, [3]byte{6, 0x3f, 0x0e}, [3]byte{key, asc, ascq})
	luns, err := c.ReportLUNs(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{scsi.EncodeLUN(0), scsi.EncodeLUN(7)}, luns)

	// An extent set offline stays a LUN, and media access says offline.
	_, err = m.UpdateExtent(ctx, 2, func(e *Extent) error { e.Online = false; return nil })
	require.NoError(t, err)
	luns, err = c.ReportLUNs(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{scsi.EncodeLUN(0), scsi.EncodeLUN(7)}, luns)
	for range 4 { // unit attentions of the reopened unit first
		if err = c.TestUnitReady(ctx, scsi.EncodeLUN(7)); !errors.As(err, &se) {
			break
		}
		if key, _, _ := se.SenseKey(); key != 6 {
			break
		}
	}
	require.ErrorAs(t, err, &se)
	key, asc, ascq = se.SenseKey()
	require.Equal(t, [3]byte{2, 0x04, 0x12}, [3]byte{key, asc, ascq})

	// Taking the target offline ends the session.
	_, err = m.UpdateTarget(ctx, tg.ID, func(t *Target) error { t.State = StateOffline; return nil })
	require.NoError(t, err)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session survived its target going offline")
	}
}

// TestInitiatorGroupsAdmit checks the access policy built from a
// target's groups: initiator names, IPv4 and IPv6 networks, and the
// portal group each group belongs to.
func TestInitiatorGroupsAdmit(t *testing.T) {
	cfg := validConfig()
	cfg.Initiators = append(cfg.Initiators, Initiator{ID: 2, AuthNetwork: []string{"fd00:1::/64"}})
	cfg.Targets[0].Groups = append(cfg.Targets[0].Groups, TargetGroup{Portal: 2, Initiator: intp(2), AuthMethod: AuthCHAP, Auth: intp(1)})
	p := policyFor(cfg, cfg.Targets[0])
	at := func(tag uint16, name, remote string) iscsi.LoginInfo {
		return iscsi.LoginInfo{InitiatorName: name, RemoteAddr: remote, PortalGroupTag: tag, TargetName: "t"}
	}
	tests := []struct {
		name string
		info iscsi.LoginInfo
		want bool
	}{
		{"name matches, network does not", at(1, "iqn.1998-01.com.vmware:esx1", "10.9.9.9:5000"), false},
		{"name and network", at(1, "iqn.1998-01.com.vmware:esx1", "192.168.1.20:5000"), true},
		{"name and single address", at(1, "iqn.1998-01.com.vmware:esx1", "10.0.0.7:5000"), true},
		{"IPv4-mapped address", at(1, "iqn.1998-01.com.vmware:esx1", "[::ffff:192.168.1.20]:5000"), true},
		{"other name", at(1, "iqn.1998-01.com.vmware:esx2", "192.168.1.20:5000"), false},
		{"portal 1 rules do not apply on portal 2", at(2, "iqn.1998-01.com.vmware:esx1", "192.168.1.20:5000"), false},
		{"IPv6 network on portal 2", at(2, "iqn.2026-11.any:x", "[fd00:1::5]:3260"), true},
		{"IPv6 outside the network", at(2, "iqn.2026-11.any:x", "[fd00:2::5]:3260"), false},
		{"unknown portal", at(3, "iqn.1998-01.com.vmware:esx1", "192.168.1.20:5000"), false},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, p.allows(tc.info), tc.name)
	}
	r := p.match(at(2, "iqn.2026-11.any:x", "[fd00:1::5]:3260"))
	require.Equal(t, iscsi.AuthCHAP, r.method)
	require.Equal(t, 1, r.authTag)
	open := policyFor(cfg, Target{Groups: []TargetGroup{{Portal: 1}}})
	require.True(t, open.allows(at(1, "iqn.2026-11.any:x", "[::1]:1")))
	require.False(t, open.allows(at(2, "iqn.2026-11.any:x", "[::1]:1")))
	none := policyFor(cfg, Target{})
	require.True(t, none.allows(at(7, "iqn.2026-11.any:x", "[::1]:1")))
}

var errMismatch = errors.New("data read back differs")

// TestLUNMaskingPerInitiator maps LUNs for single initiators (seed 003's
// exports): each sees the general LUNs plus its own, under its own
// numbers, and nobody else's.
func TestLUNMaskingPerInitiator(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "shared", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	ext := map[string]int{}
	for _, name := range []string{"common", "forA", "forB"} {
		e := NewExtent()
		e.Name, e.Path, e.Filesize = name, "/srv/"+name+".img", 1<<20
		e, err = m.CreateExtent(ctx, e)
		require.NoError(t, err)
		ext[name] = e.ID
	}
	const a, b, c = "iqn.2026-11.com.example:a", "iqn.2026-11.com.example:b", "iqn.2026-11.com.example:c"
	for _, te := range []TargetExtent{
		{Target: tg.ID, Extent: ext["common"], LunID: 0},
		{Target: tg.ID, Extent: ext["forA"], LunID: 1, Initiator: a},
		{Target: tg.ID, Extent: ext["forB"], LunID: 1, Initiator: b},
	} {
		_, err := m.CreateTargetExtent(ctx, te)
		require.NoError(t, err)
	}
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: ext["forB"], LunID: 0, Initiator: c})
	require.ErrorIs(t, err, ErrExists, "a masked LUN cannot hide under a general one")

	login := func(name string) *initiator.Conn {
		conn, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":shared", InitiatorName: name})
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		_ = conn.TestUnitReady(ctx, 0)
		return conn
	}
	ca, cb, cc := login(a), login(b), login(c)
	for conn, want := range map[*initiator.Conn][]uint64{
		ca: {scsi.EncodeLUN(0), scsi.EncodeLUN(1)},
		cb: {scsi.EncodeLUN(0), scsi.EncodeLUN(1)},
		cc: {scsi.EncodeLUN(0)},
	} {
		luns, err := conn.ReportLUNs(ctx)
		require.NoError(t, err)
		require.Equal(t, want, luns)
	}
	// A's LUN 1 and B's LUN 1 are different units.
	_ = ca.TestUnitReady(ctx, scsi.EncodeLUN(1))
	_ = cb.TestUnitReady(ctx, scsi.EncodeLUN(1))
	block := bytes.Repeat([]byte{0xa1}, 512)
	require.NoError(t, ca.WriteBlocks(ctx, scsi.EncodeLUN(1), 0, block, 512, false))
	got, err := cb.ReadBlocks(ctx, scsi.EncodeLUN(1), 0, 1, 512)
	require.NoError(t, err)
	require.Equal(t, make([]byte, 512), got, "B must not see A's LUN")
	var se *initiator.StatusError
	_, err = cc.ReadBlocks(ctx, scsi.EncodeLUN(1), 0, 1, 512)
	require.ErrorAs(t, err, &se, "C has no LUN 1")
	key, asc, _ := se.SenseKey()
	require.Equal(t, [2]byte{5, 0x25}, [2]byte{key, asc}, "LOGICAL UNIT NOT SUPPORTED")
	inq, err := cc.Command(ctx, scsi.EncodeLUN(1), []byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	require.NoError(t, err)
	require.NotEmpty(t, inq.Data)
	require.EqualValues(t, 3, inq.Data[0]>>5, "INQUIRY of a masked LUN: peripheral qualifier 3, no unit")

	// Mapping a LUN for C live shows up in C's view only.
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: ext["forA"], LunID: 5, Initiator: c})
	require.NoError(t, err)
	var se2 *initiator.StatusError
	require.ErrorAs(t, cc.TestUnitReady(ctx, 0), &se2)
	key, asc, ascq := se2.SenseKey()
	require.Equal(t, [3]byte{6, 0x3f, 0x0e}, [3]byte{key, asc, ascq}, "C is told its LUNs changed")
	cc2 := cc
	luns, err := cc2.ReportLUNs(ctx)
	require.NoError(t, err)
	require.Equal(t, []uint64{scsi.EncodeLUN(0), scsi.EncodeLUN(5)}, luns)
	got, err = cc2.ReadBlocks(ctx, scsi.EncodeLUN(5), 0, 1, 512)
	if err != nil {
		_ = cc2.TestUnitReady(ctx, scsi.EncodeLUN(5))
		got, err = cc2.ReadBlocks(ctx, scsi.EncodeLUN(5), 0, 1, 512)
	}
	require.NoError(t, err)
	require.Equal(t, block, got, "C's LUN 5 is A's extent")
}

func TestLUNMaskingPerInitiatorGroup(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	_, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "grouped", []TargetGroup{{Portal: EveryPortal, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "agvol", "/srv/agvol.img", 1<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	const a, b = "iqn.2026-11.com.example:ga", "iqn.2026-11.com.example:gb"
	ag, err := m.CreateInitiator(ctx, Initiator{Name: "ag1", Initiators: []string{a}})
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 3, InitiatorGroup: &ag.ID})
	require.NoError(t, err)

	reportLUNs := func(name string) []uint64 {
		conn, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":grouped", InitiatorName: name})
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.TestUnitReady(ctx, 0)
		luns, err := conn.ReportLUNs(ctx)
		require.NoError(t, err)
		return luns
	}
	require.Equal(t, []uint64{scsi.EncodeLUN(3)}, reportLUNs(a), "a member sees the group's LUN")
	require.Empty(t, reportLUNs(b), "an initiator outside the group does not")

	// Membership changes move the LUN with it.
	_, err = m.UpdateInitiator(ctx, ag.ID, func(i *Initiator) error { i.Initiators = []string{b}; return nil })
	require.NoError(t, err)
	require.Equal(t, []uint64{scsi.EncodeLUN(3)}, reportLUNs(b))
	require.Empty(t, reportLUNs(a))

	// The group cannot go while a LUN is masked to it, unless forced.
	require.ErrorIs(t, m.DeleteInitiator(ctx, ag.ID, false), ErrInUse)
	require.NoError(t, m.DeleteInitiator(ctx, ag.ID, true))
	require.Empty(t, m.Config(false).TargetExtents)
}

func TestPoolsAndVolumes(t *testing.T) {
	dir := t.TempDir()
	store := &MemoryStore{}
	initial := EmptyConfig()
	initial.Pools = []Pool{{ID: 1, Name: "tank", Type: PoolFS, Path: dir}}
	m, err := New(ctx, Options{Store: store, Initial: initial, AllowedDirs: []string{"/nowhere"}})
	require.NoError(t, err)
	defer m.Close()

	pools, err := m.Pools()
	require.NoError(t, err)
	require.Len(t, pools, 1)
	require.Equal(t, "tank", pools[0].Name)
	require.Positive(t, pools[0].Size)

	v, err := m.CreateVolume(ctx, "tank", "vol1", 8<<20)
	require.NoError(t, err)
	require.Equal(t, int64(8<<20), v.Size)
	require.Len(t, v.UUID, 36)
	fi, err := os.Stat(filepath.Join(dir, "vol1.img"))
	require.NoError(t, err, "the volume is allocated at once, inside the pool (allowed though outside AllowedDirs)")
	require.Equal(t, int64(8<<20), fi.Size())

	_, err = m.CreateVolume(ctx, "tank", "vol1", 1<<20)
	require.ErrorIs(t, err, ErrExists)
	_, err = m.CreateVolume(ctx, "tank", "bad name", 1<<20)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = m.CreateVolume(ctx, "nope", "v", 1<<20)
	require.ErrorIs(t, err, ErrNotFound)

	// Copy keeps contents; a recreated name gets a new UUID.
	f, err := os.OpenFile(filepath.Join(dir, "vol1.img"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("hello volume"), 4096)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	c, err := m.CopyVolume(ctx, "tank", "vol1", "vol2")
	require.NoError(t, err)
	require.NotEqual(t, v.UUID, c.UUID)
	got := make([]byte, 12)
	f2, err := os.Open(filepath.Join(dir, "vol2.img"))
	require.NoError(t, err)
	_, err = f2.ReadAt(got, 4096)
	require.NoError(t, err)
	f2.Close()
	require.Equal(t, "hello volume", string(got))

	vols, err := m.Volumes("tank")
	require.NoError(t, err)
	require.Len(t, vols, 2)
	require.NoError(t, m.DestroyVolume(ctx, "tank", "vol1"))
	_, err = os.Stat(filepath.Join(dir, "vol1.img"))
	require.ErrorIs(t, err, os.ErrNotExist, "destroying a volume destroys its data")
	again, err := m.CreateVolume(ctx, "tank", "vol1", 1<<20)
	require.NoError(t, err)
	require.NotEqual(t, v.UUID, again.UUID)
	require.ErrorIs(t, m.DestroyVolume(ctx, "tank", "ghost"), ErrNotFound)
}

// TestAccessChangeEndsSessions: narrowing an initiator group ends the
// sessions it no longer admits and leaves the others alone; CHAP set on a
// target group is required from the next login on.
func TestAccessChangeEndsSessions(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	const a, b = "iqn.2026-11.com.example:a", "iqn.2026-11.com.example:b"
	ig, err := m.CreateInitiator(ctx, Initiator{Initiators: []string{a, b}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "guarded", []TargetGroup{{Portal: p.ID, Initiator: &ig.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	name := DefaultBasename + ":guarded"
	dial := func(who string, c *initiator.CHAP) (*initiator.Conn, error) {
		return initiator.Dial(ctx, addr, initiator.Options{TargetName: name, InitiatorName: who, CHAP: c})
	}
	ca, err := dial(a, nil)
	require.NoError(t, err)
	defer ca.Close()
	cb, err := dial(b, nil)
	require.NoError(t, err)
	defer cb.Close()

	_, err = m.UpdateInitiator(ctx, ig.ID, func(g *Initiator) error { g.Initiators = []string{b}; return nil })
	require.NoError(t, err)
	select {
	case <-ca.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session of an initiator taken out of the group survived")
	}
	_, err = cb.ReportLUNs(ctx)
	require.NoError(t, err, "the other initiator's session is undisturbed")
	_, err = dial(a, nil)
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0202, le.Status())

	// CHAP on the group: the next login needs credentials of auth group 5.
	_, err = m.CreateAuth(ctx, Auth{Tag: 5, User: "b-user", Secret: "b-secret-00001"})
	require.NoError(t, err)
	_, err = m.UpdateTarget(ctx, tg.ID, func(t *Target) error {
		t.Groups[0].AuthMethod, t.Groups[0].Auth = AuthCHAP, intp(5)
		return nil
	})
	require.NoError(t, err)
	_, err = dial(b, nil)
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0201, le.Status())
	c2, err := dial(b, &initiator.CHAP{Username: "b-user", Secret: "b-secret-00001"})
	require.NoError(t, err)
	c2.Close()
}

func TestUpdateIsAtomic(t *testing.T) {
	m, store := newManager(t, nil)
	// Concurrent whole-config updates all land: none overwrites another.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, m.Update(ctx, func(c *Config) error {
				c.Initiators = append(c.Initiators, Initiator{ID: NewID(c, c.Initiators), Comment: strconv.Itoa(i)})
				return nil
			}))
		}()
	}
	wg.Wait()
	require.Len(t, m.Config(false).Initiators, 20)
	saved, err := store.Load(ctx)
	require.NoError(t, err)
	require.Len(t, saved.Initiators, 20, "every update is saved")

	// A refused update (fn's error, or a validation error) changes nothing.
	before := m.Config(true)
	boom := errors.New("boom")
	require.ErrorIs(t, m.Update(ctx, func(c *Config) error { c.Initiators = nil; return boom }), boom)
	require.ErrorIs(t, m.Update(ctx, func(c *Config) error {
		c.Initiators[0].AuthNetwork = []string{"300.0.0.0/8"}
		return nil
	}), ErrInvalid)
	require.Equal(t, before, m.Config(true))
}

// TestMaxConnectionsTakesEffect: Global.MaxConnections is what a target
// negotiates, and a session takes that many connections.
func TestMaxConnectionsTakesEffect(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	_, err := m.UpdateGlobal(ctx, func(g *Global) error { g.MaxConnections = 2; return nil })
	require.NoError(t, err)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "mc", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	_, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	s, err := initiator.DialSession(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":mc", Keys: []negotiate.Pair{{Key: "MaxConnections", Value: "16"}}})
	require.NoError(t, err)
	defer s.Close()
	require.Equal(t, "2", s.Lead().Params()["MaxConnections"])
	_, err = s.Join(ctx, addr, 1)
	require.NoError(t, err)
	_, err = s.Join(ctx, addr, 2)
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le, "a third connection is over the limit")
	require.Equal(t, 2, srv.Sessions()[0].Connections)
}
