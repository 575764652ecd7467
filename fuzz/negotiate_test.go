package fuzz

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// FuzzNegotiate feeds arbitrary login text to the parser and the target's
// negotiator: parse∘append must round trip, errors must be syntax errors,
// and every answer must itself be valid text.
func FuzzNegotiate(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.2026-11.io.example:host\x00SessionType=Normal\x00"))
	f.Add([]byte("HeaderDigest=CRC32C,None\x00DataDigest=None\x00MaxRecvDataSegmentLength=262144\x00"))
	f.Add([]byte("MaxBurstLength=0x100000\x00FirstBurstLength=65536\x00InitialR2T=No\x00ImmediateData=Yes\x00"))
	f.Add([]byte("A=b\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pairs, err := negotiate.Parse(data)
		if err != nil {
			require.ErrorIs(t, err, negotiate.ErrSyntax)
			return
		}
		again, err := negotiate.Parse(negotiate.Append(nil, pairs...))
		require.NoError(t, err)
		require.Equal(t, pairs, again)
		for _, typ := range []string{"Normal", "Discovery"} {
			n := negotiate.New(negotiate.Config{}, true)
			resp, err := n.Negotiate(pairs, typ)
			if err != nil {
				require.ErrorIs(t, err, negotiate.ErrNegotiation)
				continue
			}
			_, err = negotiate.Parse(negotiate.Append(nil, resp...))
			require.NoError(t, err)
			p := n.Params()
			require.LessOrEqual(t, p.FirstBurstLength, p.MaxBurstLength)
		}
	})
}
