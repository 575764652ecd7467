package scsi_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// vpd returns the VPD page code of a fresh unit made with cfg.
func vpd(t *testing.T, cfg scsi.UnitConfig, code byte) []byte {
	t.Helper()
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	cmd := &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: []byte{0x12, 1, code, 0, 255, 0}, DataIn: make([]byte, 255)}
	res := tgt.Execute(t.Context(), cmd)
	require.Equal(t, scsi.StatusGood, res.Status)
	return cmd.DataIn[:res.DataInLen]
}

// naaOf is the NAA designator (first designator) of VPD page 0x83.
func naaOf(page []byte) []byte {
	return page[8 : 8+int(page[7])]
}

func TestZeroConfigsGetTheirOwnIdentity(t *testing.T) {
	s1, s2 := vpd(t, scsi.UnitConfig{}, 0x80), vpd(t, scsi.UnitConfig{}, 0x80)
	require.NotEqual(t, s1, s2, "two zero configs got the same serial")
	require.Len(t, s1[4:], 16)
	n1, n2 := naaOf(vpd(t, scsi.UnitConfig{}, 0x83)), naaOf(vpd(t, scsi.UnitConfig{}, 0x83))
	require.NotEqual(t, n1, n2, "two zero configs got the same NAA")
	require.Len(t, n1, 16)
	require.Equal(t, byte(0x6), n1[0]>>4, "IEEE Registered Extended")
	require.Equal(t, []byte{0x60, 0xa6, 0xb1, 0xc0}, []byte{n1[0], n1[1], n1[2], n1[3] & 0xf0}, "the locally administered company ID")

	// The same serial no longer makes the same NAA.
	n3, n4 := naaOf(vpd(t, scsi.UnitConfig{Serial: "x"}, 0x83)), naaOf(vpd(t, scsi.UnitConfig{Serial: "x"}, 0x83))
	require.NotEqual(t, n3, n4)
}

func TestConfiguredIdentityIsReportedExactly(t *testing.T) {
	for _, naa := range [][]byte{
		{0x60, 0x01, 0x40, 0x5f, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88, 0x77, 0x66, 0x55, 0x44},
		{0x50, 0x01, 0x40, 0x5f, 0xff, 0xee, 0xdd, 0xcc},
	} {
		page := vpd(t, scsi.UnitConfig{NAA: naa, Serial: "ABC-123 x"}, 0x83)
		require.Equal(t, naa, naaOf(page))
		require.Contains(t, string(page), "ISCSIKITABC-123 x", "T10 vendor ID designator carries the serial")
		require.Equal(t, "ABC-123 x", string(vpd(t, scsi.UnitConfig{NAA: naa, Serial: "ABC-123 x"}, 0x80)[4:]))
	}
}

func TestConfigErrorsAreTyped(t *testing.T) {
	for _, tt := range []struct {
		cfg   scsi.UnitConfig
		field string
	}{
		{scsi.UnitConfig{BlockSize: 520}, "BlockSize"},
		{scsi.UnitConfig{PhysicalBlockSize: 768}, "PhysicalBlockSize"},
		{scsi.UnitConfig{Vendor: "TOOLONGVENDOR"}, "Vendor"},
		{scsi.UnitConfig{Serial: "tab\there"}, "Serial"},
		{scsi.UnitConfig{NAA: []byte{0x50, 1, 2}}, "NAA"},
		{scsi.UnitConfig{NAA: []byte{0x30, 1, 2, 3, 4, 5, 6, 7}}, "NAA"},
		{scsi.UnitConfig{NAA: make([]byte, 16)}, "NAA"},
		{scsi.UnitConfig{MaxTransferLength: 1000}, "MaxTransferLength"},
		{scsi.UnitConfig{SanitizeRate: -1}, "SanitizeRate"},
		{scsi.UnitConfig{CryptoErase: true}, "CryptoErase"},
	} {
		_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), tt.cfg)
		require.ErrorIs(t, err, scsi.ErrInvalidConfig, tt.field)
		var ce *scsi.ConfigError
		require.True(t, errors.As(err, &ce))
		require.Equal(t, tt.field, ce.Field)
	}
	_, err := scsi.NewLogicalUnit(nil, scsi.UnitConfig{})
	require.ErrorIs(t, err, scsi.ErrInvalidConfig)
	_, err = scsi.NewLogicalUnit(backend.NewMemory(100), scsi.UnitConfig{})
	require.ErrorIs(t, err, scsi.ErrInvalidConfig, "a device smaller than a block")
}
