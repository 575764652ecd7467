package mgmt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/scsi"
)

func TestReservationFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reservations")
	var f scsi.StateStore = reservationFile(dir, Extent{Name: "a/b"})
	require.Equal(t, filepath.Join(dir, "extent-a_b.json"), f.(StateFile).Path)
	require.Equal(t, filepath.Join(dir, "u-1.json"), reservationFile(dir, Extent{Name: "x", UUID: "u-1"}).Path)

	// Nothing stored: Load is empty and removing is a no-op, even before
	// the directory exists.
	b, err := f.Load()
	require.NoError(t, err)
	require.Nil(t, b)
	require.NoError(t, f.Save(nil))

	for _, data := range [][]byte{[]byte(`{"generation":1}`), []byte(`{"generation":2}`)} {
		require.NoError(t, f.Save(data))
		b, err = f.Load()
		require.NoError(t, err)
		require.Equal(t, data, b)
	}
	st, err := os.Stat(f.(StateFile).Path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary files left behind")

	require.NoError(t, f.Save(nil))
	b, err = f.Load()
	require.NoError(t, err)
	require.Nil(t, b)

	// An unreadable path is an error, not an empty state.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "extent-dir.json"), 0o700))
	_, err = reservationFile(dir, Extent{Name: "dir"}).Load()
	require.Error(t, err)
}

func TestUnitConfigCarriesLUNSettings(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(e *Extent)
		check func(t *testing.T, uc scsi.UnitConfig)
	}{
		{"defaults", func(e *Extent) {}, func(t *testing.T, uc scsi.UnitConfig) {
			require.True(t, uc.ThinProvisioning)
			require.True(t, uc.ThirdPartyCopy, "insecure_tpc defaults on, as in TrueNAS")
			require.False(t, uc.ReadOnly || uc.Removable || uc.Offline)
		}},
		{"read-only", func(e *Extent) { e.RO = true }, func(t *testing.T, uc scsi.UnitConfig) { require.True(t, uc.ReadOnly) }},
		{"removable", func(e *Extent) { e.Removable = true }, func(t *testing.T, uc scsi.UnitConfig) { require.True(t, uc.Removable) }},
		{"offline", func(e *Extent) { e.Online = false }, func(t *testing.T, uc scsi.UnitConfig) { require.True(t, uc.Offline) }},
		{"no third-party copy", func(e *Extent) { e.InsecureTPC = false }, func(t *testing.T, uc scsi.UnitConfig) { require.False(t, uc.ThirdPartyCopy) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := NewExtent()
			e.Name = "x"
			tc.edit(&e)
			uc, err := unitConfig(e)
			require.NoError(t, err)
			tc.check(t, uc)
		})
	}
	// Removable media and third-party copy are accepted by validation.
	cfg := EmptyConfig()
	e := NewExtent()
	e.ID, e.Name, e.Path, e.Filesize, e.Removable = 1, "x", "/srv/x.img", 1<<20, true
	cfg.Extents = append(cfg.Extents, e)
	require.NoError(t, Validate(cfg, nil))
}
