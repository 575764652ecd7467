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
	sf, err := reservationFile(dir, Extent{Name: "a/b"})
	require.NoError(t, err)
	var f scsi.StateStore = sf
	require.Equal(t, filepath.Join(dir, "extent-a_b.json"), f.(StateFile).Path)
	const u = "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"
	sf, err = reservationFile(dir, Extent{Name: "x", UUID: u})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, u+".json"), sf.Path)

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
	sf, err = reservationFile(dir, Extent{Name: "dir"})
	require.NoError(t, err)
	_, err = sf.Load()
	require.Error(t, err)
}

// TestExtentFileStaysInDir: whatever an extent's UUID holds (validation
// refuses anything but a canonical UUID; this is the second line), a
// state file's path never leaves its directory.
func TestExtentFileStaysInDir(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{"../config", "a/b", "..", ".", "x\x00y", "/etc/passwd"} {
		_, err := reservationFile(dir, Extent{Name: "x", UUID: u})
		require.Error(t, err, "uuid %q", u)
		_, err = sanitizeFile(dir, Extent{Name: "x", UUID: u})
		require.Error(t, err, "uuid %q", u)
		_, err = extentFile(dir, Extent{Name: "x", UUID: u}, ".key")
		require.Error(t, err, "uuid %q", u)
	}
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

// TestExtentUUIDCannotReachConfig: an extent whose UUID climbs out of the
// reservation directory ("../config" names STATE/config.json, which a
// reopen's sanitize record would remove) is refused as it is set.
func TestExtentUUIDCannotReachConfig(t *testing.T) {
	state := t.TempDir()
	ctx := t.Context()
	m, err := New(ctx, Options{Store: &FileStore{Dir: state}, ReservationDir: filepath.Join(state, "reservations")})
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "lun0", filepath.Join(state, "lun0.img"), 1<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.UpdateExtent(ctx, e.ID, func(x *Extent) error { x.UUID = "../config"; return nil })
	require.ErrorIs(t, err, ErrInvalid)
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "uuid", me.Field)
	_, err = os.Stat(filepath.Join(state, "config.json"))
	require.NoError(t, err)
}
