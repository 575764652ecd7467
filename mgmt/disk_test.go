package mgmt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDiskExtentNeedsABlockDevice: a DISK extent made or pointed
// elsewhere must name an existing block device; the refusal names the
// disk field and says what the path is.
func TestDiskExtentNeedsABlockDevice(t *testing.T) {
	m, _ := newManager(t, nil)
	dir := t.TempDir()
	file := filepath.Join(dir, "plain.img")
	require.NoError(t, os.WriteFile(file, make([]byte, 4096), 0o600))
	disk := func(name, path string) Extent {
		e := NewExtent()
		e.Name, e.Type, e.Disk = name, ExtentDisk, path
		return e
	}
	for _, tc := range []struct{ disk, want string }{
		{"/dev/iscsikit-no-such-disk", "/dev/iscsikit-no-such-disk does not exist"},
		{"zvol/tank/missing", "/dev/zvol/tank/missing does not exist"},
		{file, "is not a block device (a regular file)"},
		{dir, "is not a block device (a directory)"},
		{"/dev/null", "is not a block device (a character device)"},
	} {
		_, err := m.CreateExtent(ctx, disk("d0", tc.disk))
		var me *Error
		require.ErrorAs(t, err, &me, tc.disk)
		require.Equal(t, "disk", me.Field)
		require.Equal(t, KindInvalid, me.Kind)
		require.ErrorContains(t, err, tc.want)
	}
	require.Empty(t, m.Config(false).Extents)

	if fi, err := os.Stat("/dev/loop0"); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Skip("no /dev/loop0 block device to accept")
	}
	e, err := m.CreateExtent(ctx, disk("d0", "loop0"))
	require.NoError(t, err, "a block device is accepted")
	// An edit elsewhere is checked again only when the disk changes.
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Disk = file; return nil })
	require.ErrorContains(t, err, "not a block device")
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Comment = "kept"; return nil })
	require.NoError(t, err)
}

func TestParseZvol(t *testing.T) {
	for _, tc := range []struct {
		disk, pool, name string
		ok               bool
	}{
		{"zvol/tank/vol1", "tank", "vol1", true},
		{"zvol/tank/sub/vol1", "", "", false},
		{"zvol/tank/", "", "", false},
		{"zvol//vol1", "", "", false},
		{"/dev/zvol/tank/vol1", "", "", false},
		{"sdb", "", "", false},
	} {
		pool, name, ok := ParseZvol(tc.disk)
		require.Equal(t, tc.ok, ok, tc.disk)
		if ok {
			require.Equal(t, [2]string{tc.pool, tc.name}, [2]string{pool, name})
		}
	}
}

// TestVolumeKeepsItsNameWhenItsExtentIsRenamed: a directory pool's
// volume is named by its file, so renaming its extent (as a FreeNAS
// extent over zvol/POOL/NAME does) keeps the volume listed, found and
// destroyed by that name.
func TestVolumeKeepsItsNameWhenItsExtentIsRenamed(t *testing.T) {
	m, _ := newManager(t, nil)
	dir := t.TempDir()
	require.NoError(t, m.Update(ctx, func(c *Config) error {
		c.Pools = append(c.Pools, Pool{ID: 1, Name: "tank", Type: PoolFS, Path: dir})
		return nil
	}))
	_, err := m.CreateVolume(ctx, "tank", "vol1", 1<<20)
	require.NoError(t, err)
	e, err := m.Config(false).VolumeExtent("tank", "vol1")
	require.NoError(t, err)
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Name = "target-1"; return nil })
	require.NoError(t, err)
	vols, err := m.Volumes("tank")
	require.NoError(t, err)
	require.Equal(t, "vol1", vols[0].Name)
	_, err = m.CopyVolumeSize(ctx, "tank", "vol1", "vol2", 2<<20)
	require.NoError(t, err)
	require.NoError(t, m.DestroyVolume(ctx, "tank", "vol1"))
	require.NoFileExists(t, filepath.Join(dir, "vol1.img"))
	_, err = m.CopyVolumeSize(ctx, "tank", "vol2", "vol3", 1<<20)
	require.ErrorContains(t, err, "smaller than volume vol2")
}
