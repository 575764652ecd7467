package rest

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512": 512, "10MB": 10 << 20, "10mb": 10 << 20, " 2 GB ": 2 << 30, "1TB": 1 << 40, "3KB": 3 << 10, "7B": 7} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "ten", "-1", "1.5GB", "99999999999TB", "MB"} {
		_, err := ParseSize(bad)
		require.Error(t, err, bad)
	}
	require.Equal(t, "10MB", FormatSize(10<<20))
	require.Equal(t, "1TB", FormatSize(1<<40))
	require.Equal(t, "3KB", FormatSize(3<<10))
	require.Equal(t, "513", FormatSize(513))
	require.Equal(t, "0", FormatSize(0))
}
