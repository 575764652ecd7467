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
	var f scsi.ReservationStore = reservationFile(dir, Extent{Name: "a/b"})
	require.Equal(t, filepath.Join(dir, "extent-a_b.json"), f.(ReservationFile).Path)
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
	st, err := os.Stat(f.(ReservationFile).Path)
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
