package iscsi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"iqn.2026-11.io.iscsikit:default", true},
		{"iqn.1998-01.com.vmware:esxi-host-1", true},
		{"iqn.2026-11.io.iscsikit", true},
		{"eui.02004567A425678D", true},
		{"naa.52004567BA64678D", true},
		{"naa.62004567BA64678D0123456789ABCDEF", true},
		{"", false},
		{"iqn.26-11.io.x", false},
		{"iqn.2026-11io.x", false},
		{"iqn.2026-11.io.UPPER", false},
		{"iqn.2026-11.io.x y", false},
		{"eui.1234", false},
		{"naa.12345", false},
		{"target0", false},
		{"iqn.2026-11.io." + string(make([]byte, 220)), false},
	} {
		err := ValidateName(c.name)
		if c.ok {
			require.NoError(t, err, c.name)
		} else {
			require.Error(t, err, c.name)
		}
	}
}

func TestSerialNumberArithmetic(t *testing.T) {
	require.True(t, snGreater(2, 1))
	require.False(t, snGreater(1, 2))
	require.False(t, snGreater(5, 5))
	require.True(t, snGreater(0, 0xffffffff), "wraps around")
	require.True(t, snInWindow(10, 10, 20))
	require.True(t, snInWindow(20, 10, 20))
	require.False(t, snInWindow(21, 10, 20))
	require.False(t, snInWindow(9, 10, 20))
	require.True(t, snInWindow(1, 0xfffffff0, 5), "window across the wrap")
	require.False(t, snInWindow(6, 0xfffffff0, 5))
	// An empty window (MaxCmdSN = ExpCmdSN - 1) admits nothing.
	require.False(t, snInWindow(10, 10, 9))
}

func TestGrowWindowNeverShrinks(t *testing.T) {
	s := &session{depth: 4, adm: admission{exp: 100, max: 103}}
	s.inflight = 4
	s.growWindow()
	require.Equal(t, uint32(103), s.adm.max, "no free slot: unchanged")
	s.adm.exp = 104 // four commands arrived
	s.inflight = 1  // three completed
	s.growWindow()
	require.Equal(t, uint32(106), s.adm.max, "three free slots beyond ExpCmdSN")
	s.inflight = 4
	s.growWindow()
	require.Equal(t, uint32(106), s.adm.max, "never lowered")
}

func TestSplitList(t *testing.T) {
	require.Equal(t, []string{"CHAP", "None"}, splitList("CHAP,None"))
	require.Equal(t, []string{"None"}, splitList("None"))
	require.Equal(t, []string{""}, splitList(""))
}
