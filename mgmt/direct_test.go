package mgmt_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/mgmt"
)

// TestOpenExtentDirect checks that an extent's direct setting reaches the
// file backend, and that such an extent still reads back what it wrote.
func TestOpenExtentDirect(t *testing.T) {
	for _, direct := range []bool{false, true} {
		e := mgmt.NewExtent()
		e.Name, e.Path, e.Filesize, e.Direct = "d", filepath.Join(t.TempDir(), "d.img"), 1<<20, direct
		dev, err := mgmt.FileOpener{}.Open(e)
		if direct && errors.Is(err, unix.EINVAL) {
			t.Skipf("O_DIRECT not supported on this filesystem: %v", err)
		}
		require.NoError(t, err)
		f, ok := dev.(*backend.File)
		require.True(t, ok)
		require.Equal(t, direct, f.Direct())
		data := make([]byte, 8192)
		for i := range data {
			data[i] = byte(i * 7)
		}
		_, err = f.WriteAt(data[100:612], 4096+100) // unaligned: bounced when direct
		require.NoError(t, err)
		back := make([]byte, 512)
		_, err = f.ReadAt(back, 4096+100)
		require.NoError(t, err)
		require.Equal(t, data[100:612], back)
		require.NoError(t, f.Close())
	}
}
