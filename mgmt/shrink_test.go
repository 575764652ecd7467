package mgmt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// TestShrinkRefusedServedOrNot: a FILE extent's filesize may not go below
// its file's size whether or not the extent is served (the file is never
// cut: its data would go), and a configuration accepted earlier (a
// filesize below the file's, from a hand-written file) never blocks a
// later edit that leaves the size alone.
func TestShrinkRefusedServedOrNot(t *testing.T) {
	m, _, id := liveLUN(t, 1<<20)
	te := m.Config(false).TargetExtents[0]
	require.NoError(t, m.DeleteTargetExtent(ctx, te.ID)) // unmapped: no unit

	_, err := m.UpdateExtent(ctx, id, func(e *Extent) error { e.Filesize = 512 << 10; return nil })
	var me *Error
	require.ErrorAs(t, err, &me, "an unmapped extent shrinks no more than a mapped one")
	require.Equal(t, "filesize", me.Field)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = m.UpdateExtent(ctx, id, func(e *Extent) error { e.Filesize = 0; return nil })
	require.NoError(t, err, "0 keeps the file's size")

	// A new extent over an existing, larger file: the same rule.
	big := filepath.Join(t.TempDir(), "big.img")
	require.NoError(t, os.WriteFile(big, make([]byte, 1<<20), 0o600))
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "big", big, 512<<10
	_, err = m.CreateExtent(ctx, e)
	require.ErrorAs(t, err, &me)
	require.Equal(t, "filesize", me.Field)

	// Mapped again, a later edit that leaves the size alone goes through.
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: te.Target, Extent: id, LunID: 0})
	require.NoError(t, err)
	_, err = m.UpdateExtent(ctx, id, func(e *Extent) error { e.WriteCache = false; return nil })
	require.NoError(t, err)
}

// TestEarlierSizeNeverBlocksEdits: a served extent whose stored filesize
// is below its file's (as a configuration file may say) takes live edits
// that do not change the size.
func TestEarlierSizeNeverBlocksEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun0.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o600))
	srv, addr, port := liveServer(t)
	cfg := EmptyConfig()
	cfg.Portals = []Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}}}
	tg := NewTarget()
	tg.ID, tg.Name, tg.Groups = 1, "t", []TargetGroup{{Portal: 1, AuthMethod: AuthNone}}
	cfg.Targets = []Target{tg}
	e := NewExtent()
	e.ID, e.Name, e.Path, e.Filesize = 1, "lun0", path, 512<<10
	cfg.Extents = []Extent{e}
	cfg.TargetExtents = []TargetExtent{{ID: 1, Target: 1, Extent: 1}}
	m, err := New(ctx, Options{Server: srv, Initial: cfg})
	require.NoError(t, err)
	defer m.Close()
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":t"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }))
	blocks, _, err := c.ReadCapacity16(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<20/512), blocks, "a FILE extent serves its whole file")
	_, err = m.UpdateExtent(ctx, 1, func(e *Extent) error { e.WriteCache = false; return nil })
	require.NoError(t, err)
}
