package mgmt

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestEmbedderSharesTheServer: zero Options and zero objects mean the
// documented defaults, port 0 listens on a free port that PortalAddrs
// reports, and a target the embedder serves itself on the same Server
// keeps working with its own authentication.
func TestEmbedderSharesTheServer(t *testing.T) {
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(1<<20), scsi.UnitConfig{})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: "iqn.2026-11.test:own", Device: dev}))

	m, err := New(ctx, Options{Server: srv, Openers: memoryOpeners()}) // no Store: in memory
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	p, err := m.CreatePortal(ctx, Portal{Listen: []Listen{{IP: "127.0.0.1"}}})
	require.NoError(t, err)
	require.Equal(t, AuthNone, p.DiscoveryAuthMethod, "an empty auth method is NONE")
	addrs := m.PortalAddrs(p.ID)
	require.Len(t, addrs, 1)
	port := addrs[0].(*net.TCPAddr).Port
	require.NotZero(t, port)

	tg, err := m.CreateTarget(ctx, Target{Name: "t", Groups: []TargetGroup{{Portal: p.ID}}})
	require.NoError(t, err)
	require.Equal(t, StateReady, tg.State)
	e, err := m.CreateExtent(ctx, Extent{Name: "e", Path: "/srv/e.img", Enabled: true, Online: true})
	require.NoError(t, err)
	require.Equal(t, ExtentFile, e.Type)
	require.Equal(t, 512, e.Blocksize)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID})
	require.NoError(t, err)

	// Both targets log in through the Manager's portal.
	for _, name := range []string{DefaultBasename + ":t", "iqn.2026-11.test:own"} {
		c, err := initiator.Dial(ctx, addrs[0].String(), initiator.Options{TargetName: name})
		require.NoError(t, err, name)
		require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }), name)
		c.Close()
	}
	// A change of the configuration leaves the embedder's target alone.
	require.NoError(t, m.DeleteTarget(ctx, tg.ID, true))
	require.NotNil(t, srv.Target("iqn.2026-11.test:own"))
	require.Equal(t, addrs, m.PortalAddrs(p.ID), "the free port stays bound across applies")
}

// TestZeroInitialConfigMeansDefaults: an embedder's Initial configuration
// with no version and no basename takes the current version and
// DefaultBasename instead of being refused.
func TestZeroInitialConfigMeansDefaults(t *testing.T) {
	m, err := New(ctx, Options{Initial: &Config{}})
	require.NoError(t, err)
	defer m.Close()
	cfg := m.Config(false)
	require.Equal(t, ConfigVersion, cfg.Version)
	require.Equal(t, DefaultBasename, cfg.Global.Basename)
}
