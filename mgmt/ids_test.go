package mgmt

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIDsAreNeverReused: a deleted object's id is not given to the next
// one, also after a restart (the counters are stored with the
// configuration), and a file without counters starts above its ids.
func TestIDsAreNeverReused(t *testing.T) {
	dir := t.TempDir()
	m, err := New(ctx, Options{Store: &FileStore{Dir: dir}})
	require.NoError(t, err)
	mk := func(m *Manager, name string) Extent {
		e := NewExtent()
		e.Name, e.Path, e.Filesize = name, filepath.Join(dir, name+".img"), 1<<20
		e, err := m.CreateExtent(ctx, e)
		require.NoError(t, err)
		return e
	}
	require.Equal(t, 1, mk(m, "a").ID)
	require.Equal(t, 2, mk(m, "b").ID)
	require.NoError(t, m.DeleteExtent(ctx, 2, false, false))
	require.Equal(t, 3, mk(m, "c").ID, "id 2 was deleted: it is not given again")
	require.NoError(t, m.DeleteExtent(ctx, 3, false, false))
	m.Close()

	m, err = New(ctx, Options{Store: &FileStore{Dir: dir}})
	require.NoError(t, err)
	require.Equal(t, 4, mk(m, "d").ID, "the counter survives a restart")
	// Replace with a configuration whose counters are behind keeps them.
	old := m.Config(true)
	old.NextIDs = IDCounters{}
	require.NoError(t, m.Replace(ctx, old))
	require.Equal(t, 5, mk(m, "e").ID)
	m.Close()

	// A file written before the counters existed: they start above the
	// largest id of each kind.
	dir2 := t.TempDir()
	e := NewExtent()
	e.ID, e.Name, e.Path = 7, "x", filepath.Join(dir2, "x.img")
	require.NoError(t, os.WriteFile(filepath.Join(dir2, ConfigFile),
		fmt.Appendf(nil, `{"version": 1, "global": {"basename": %q}, "extents": [{"id": 7, "name": "x", "path": %q}]}`, DefaultBasename, e.Path), 0o600))
	m, err = New(ctx, Options{Store: &FileStore{Dir: dir2}})
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, 8, m.Config(false).NextIDs.Extent)
	require.Equal(t, 1, m.Config(false).NextIDs.Portal)
}

// TestConcurrentDeleteRemovesOnlyItsFile: deletes (with removeFile) and
// creates racing each other never remove another extent's file: each
// delete acts on the extent it found under the Manager's lock.
func TestConcurrentDeleteRemovesOnlyItsFile(t *testing.T) {
	dir := t.TempDir()
	m, err := New(ctx, Options{})
	require.NoError(t, err)
	defer m.Close()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 15 {
				name := fmt.Sprintf("w%d-%d", w, i)
				path := filepath.Join(dir, name+".img")
				require.NoError(t, os.WriteFile(path, []byte(name), 0o600))
				e := NewExtent()
				e.Name, e.Path = name, path
				e, err := m.CreateExtent(ctx, e)
				require.NoError(t, err)
				// Two deleters of one id: one wins, the other finds nothing.
				var dw sync.WaitGroup
				errs := make([]error, 2)
				for k := range 2 {
					dw.Add(1)
					go func() { defer dw.Done(); errs[k] = m.DeleteExtent(ctx, e.ID, true, false) }()
				}
				dw.Wait()
				require.True(t, (errs[0] == nil) != (errs[1] == nil), "exactly one delete succeeds: %v", errs)
				_, err = os.Stat(path)
				require.ErrorIs(t, err, os.ErrNotExist)
			}
		}()
	}
	wg.Wait()
	require.Empty(t, m.Config(false).Extents)
	for _, x := range m.Config(false).Extents {
		_, err := os.Stat(x.Path)
		require.NoError(t, err, "extent %s lost its file", x.Name)
	}
}

// TestVersion1Migrates: a version 1 file told an adopted pool volume by
// its name (the extent's differed from the volume's); version 2 marks it.
func TestVersion1Migrates(t *testing.T) {
	cfg, err := DecodeConfig([]byte(`{"version": 1, "pools": [{"id": 1, "name": "tank", "type": "fs", "path": "/srv/tank"}], "extents": [
		{"id": 1, "name": "mine", "path": "/srv/tank/v1.img", "pool": "tank"},
		{"id": 2, "name": "v2", "path": "/srv/tank/v2.img", "pool": "tank"},
		{"id": 3, "name": "plain", "path": "/srv/plain.img"}]}`))
	require.NoError(t, err)
	require.Equal(t, ConfigVersion, cfg.Version)
	require.Equal(t, []bool{true, false, false}, []bool{cfg.Extents[0].Adopted, cfg.Extents[1].Adopted, cfg.Extents[2].Adopted})
	// A version 2 file says it itself: a same-named adopted volume stays so.
	cfg, err = DecodeConfig([]byte(`{"version": 2, "pools": [{"id": 1, "name": "tank", "type": "fs", "path": "/srv/tank"}], "extents": [
		{"id": 2, "name": "v2", "path": "/srv/tank/v2.img", "pool": "tank", "adopted": true}]}`))
	require.NoError(t, err)
	require.True(t, cfg.Extents[0].Adopted)
}
