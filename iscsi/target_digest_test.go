package iscsi_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestPerTargetDigestPolicy checks that a target's own digest policy
// replaces the server's for logins to it, and leaves other targets alone.
func TestPerTargetDigestPolicy(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(1<<20), scsi.UnitConfig{BlockSize: blockSize, Serial: "dg0"})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	const strict = "iqn.2026-11.io.iscsikit:digests"
	require.NoError(t, h.srv.AddTarget(&iscsi.Target{Name: strict, Device: dev,
		HeaderDigest: negotiate.DigestRequired, DataDigest: negotiate.DigestRefused}))

	both := []negotiate.Pair{{Key: "HeaderDigest", Value: "None,CRC32C"}, {Key: "DataDigest", Value: "CRC32C,None"}}
	for _, tc := range []struct {
		name         string
		target       string
		keys         []negotiate.Pair
		header, data bool
	}{
		{"strict target picks what it requires", strict, both, true, false},
		{"other targets answer the initiator's first choice", testTarget, both, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: tc.target, Keys: tc.keys})
			require.NoError(t, err)
			defer c.Close()
			s := c.Settings()
			require.Equal(t, tc.header, s.HeaderDigest, "header digest")
			require.Equal(t, tc.data, s.DataDigest, "data digest")
			_ = c.TestUnitReady(ctxT(t), 0)
			require.NoError(t, c.TestUnitReady(ctxT(t), 0), "commands flow with the negotiated digests")
		})
	}

	// An initiator that will not use a header digest cannot log in to the
	// strict target.
	c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: strict})
	if err == nil {
		c.Close()
	}
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, uint16(0x0200), le.Status(), le.Error())
}
