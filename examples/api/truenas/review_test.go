package truenas

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

// newPoolRPC is newRPC with a directory pool "tank", whose volumes are
// the zvols of pool.dataset.*; it returns the pool's directory too.
func newPoolRPC(t *testing.T) (*rpc, *mgmt.Manager, string) {
	t.Helper()
	dir := t.TempDir()
	init := mgmt.EmptyConfig()
	init.Pools = []mgmt.Pool{{ID: 1, Name: "tank", Type: mgmt.PoolFS, Path: dir}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: init})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, nil))
	t.Cleanup(srv.Close)
	return &rpc{t: t, url: srv.URL}, m, dir
}

// TestExtentRefusesModelOnlyFields: iscsi.extent.create and .update take
// neither uuid nor pool (the middleware's schema has neither and forbids
// extra fields); they are the Manager's own, and a uuid names state files.
func TestExtentRefusesModelOnlyFields(t *testing.T) {
	c, m := newRPC(t)
	dir := t.TempDir()
	file := `"type": "FILE", "path": "` + filepath.Join(dir, "e.img") + `", "filesize": 1048576`
	c.fails(-32602, "iscsi_extent_create.uuid: Extra inputs are not permitted", "iscsi.extent.create",
		`{"name": "e", `+file+`, "uuid": "../config"}`)
	c.fails(-32602, "iscsi_extent_create.pool: Extra inputs are not permitted", "iscsi.extent.create",
		`{"name": "e", `+file+`, "pool": "tank"}`)
	c.ok(nil, "iscsi.extent.create", `{"name": "e", `+file+`}`)
	c.fails(-32602, "iscsi_extent_update.uuid: Extra inputs are not permitted", "iscsi.extent.update", `1`, `{"uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"}`)
	c.fails(-32602, "iscsi_extent_update.pool: Extra inputs are not permitted", "iscsi.extent.update", `1`, `{"pool": "tank"}`)
	e := m.Config(false).Extents[0]
	require.Empty(t, e.UUID)
	require.Empty(t, e.Pool)
}

// TestZvolExtentDeleteWithRemoveKeepsVolume: remove deletes the file of a
// FILE extent only (the middleware ignores it for DISK extents); an
// extent over a zvol gives the zvol back, data and all.
func TestZvolExtentDeleteWithRemoveKeepsVolume(t *testing.T) {
	c, _, dir := newPoolRPC(t)
	c.ok(nil, "pool.dataset.create", `{"name": "tank/v1", "type": "VOLUME", "volsize": 1048576}`)
	img := filepath.Join(dir, "v1.img")
	require.NoError(t, os.WriteFile(img, []byte("precious"), 0o600))
	var e mgmt.Extent
	c.ok(&e, "iscsi.extent.create", `{"name": "v1ext", "type": "DISK", "disk": "zvol/tank/v1"}`)
	var ok bool
	c.ok(&ok, "iscsi.extent.delete", `1`, `{"remove": true}`)
	b, err := os.ReadFile(img)
	require.NoError(t, err, "the zvol's data must stay")
	require.Equal(t, "precious", string(b[:8]))
	var n int
	c.ok(&n, "iscsi.extent.query", `[]`, `{"count": true}`)
	require.Zero(t, n)
	var ds []map[string]any
	c.ok(&ds, "pool.dataset.query")
	require.Len(t, ds, 1)
	// And the zvol can be exported again.
	c.ok(&e, "iscsi.extent.create", `{"name": "again", "type": "DISK", "disk": "zvol/tank/v1"}`)
}

// TestBareZvolIsNoExtent: a zvol no extent was made on is not an extent:
// iscsi.extent.update and .delete (remove or not) do not find it, and its
// data stays.
func TestBareZvolIsNoExtent(t *testing.T) {
	c, _, dir := newPoolRPC(t)
	c.ok(nil, "pool.dataset.create", `{"name": "tank/v2", "type": "VOLUME", "volsize": 1048576}`)
	img := filepath.Join(dir, "v2.img")
	c.fails(-32001, "ENOENT", "iscsi.extent.delete", `1`, `{"remove": true}`)
	c.fails(-32001, "ENOENT", "iscsi.extent.update", `1`, `{"comment": "x"}`)
	_, err := os.Stat(img)
	require.NoError(t, err)
	var ds []map[string]any
	c.ok(&ds, "pool.dataset.query")
	require.Len(t, ds, 1)
	var n int
	c.ok(&n, "iscsi.extent.query", `[]`, `{"count": true}`)
	require.Zero(t, n)
}

// TestZvolExtentNamedLikeItsZvol: an extent made on a zvol is that zvol's
// extent even when it bears the zvol's own name: it is listed, the zvol
// is busy, and a second extent on it is refused.
func TestZvolExtentNamedLikeItsZvol(t *testing.T) {
	c, m, _ := newPoolRPC(t)
	c.ok(nil, "pool.dataset.create", `{"name": "tank/v1", "type": "VOLUME", "volsize": 1048576}`)
	var e mgmt.Extent
	c.ok(&e, "iscsi.extent.create", `{"name": "v1", "type": "DISK", "disk": "zvol/tank/v1"}`)
	require.Equal(t, "zvol/tank/v1", e.Disk)
	require.True(t, m.Config(false).Extents[0].Adopted)
	var n int
	c.ok(&n, "iscsi.extent.query", `[]`, `{"count": true}`)
	require.Equal(t, 1, n)
	c.fails(-32001, "EBUSY", "pool.dataset.delete", `"tank/v1"`)
	c.fails(-32602, "EEXIST", "iscsi.extent.create", `{"name": "other", "type": "DISK", "disk": "zvol/tank/v1"}`)
	var ok bool
	c.ok(&ok, "iscsi.extent.delete", `1`)
	c.ok(&n, "iscsi.extent.query", `[]`, `{"count": true}`)
	require.Zero(t, n)
	require.False(t, m.Config(false).Extents[0].Adopted)
}

// TestDatasetNamesDoNotCollide: "/" is "--" in a volume's name, so a name
// part that starts or ends with '-' ("tank/a-/b" and "tank/a/-b" would
// both be a---b) is refused; '-' inside a part is fine.
func TestDatasetNamesDoNotCollide(t *testing.T) {
	c, _, _ := newPoolRPC(t)
	for _, name := range []string{"tank/a-/b", "tank/a/-b", "tank/-", "tank/x/y-"} {
		c.fails(-32602, "[EINVAL] pool_dataset_create.name", "pool.dataset.create", `{"name": "`+name+`", "type": "VOLUME", "volsize": 1048576}`)
	}
	c.ok(nil, "pool.dataset.create", `{"name": "tank/a-b/c", "type": "VOLUME", "volsize": 1048576}`)
	var ds []map[string]any
	c.ok(&ds, "pool.dataset.query")
	require.Len(t, ds, 1)
	require.Equal(t, "tank/a-b/c", ds[0]["name"])
}
