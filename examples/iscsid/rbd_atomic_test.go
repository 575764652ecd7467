//go:build ceph

package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// TestRBDWriteAtomicWithinObjects serves one image (4 MiB objects) from
// two gateways: each advertises WRITE ATOMIC up to 1 MiB, serves one
// within an object (read whole through the other gateway) and refuses one
// crossing from one object into the next, which librbd would write as two
// operations the other gateway could read between.
func TestRBDWriteAtomicWithinObjects(t *testing.T) {
	o := newRBDImage(t, 16<<20)
	o.NoCache = true
	a, b := serveRBD(t, o), serveRBD(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, cb := dialRBD(ctx, t, a), dialRBD(ctx, t, b)
	atomic := func(lba uint64, blocks uint16) []byte {
		c := cdb16(0x9c, lba, 0)
		binary.BigEndian.PutUint16(c[12:], blocks)
		return c
	}
	for _, c := range []*initiator.Conn{ca, cb} {
		resp, err := c.Command(ctx, 0, []byte{0x12, 1, 0xb0, 0, 255, 0}, nil, 255)
		require.NoError(t, err)
		require.EqualValues(t, 2048, binary.BigEndian.Uint32(resp.Data[44:48]), "MAXIMUM ATOMIC TRANSFER LENGTH: 1 MiB")
	}
	const object = 4 << 20 / 512 // blocks
	data := make([]byte, 1<<20)
	rand.Read(data)
	resp, err := ca.Command(ctx, 0, atomic(object-2048, 2048), data, 0)
	require.NoError(t, err)
	require.Zero(t, resp.Status, "WRITE ATOMIC ending at the object's end: sense %x", resp.Sense)
	resp, err = cb.Command(ctx, 0, cdb16(0x88, object-2048, 2048), nil, len(data))
	require.NoError(t, err)
	require.Equal(t, data, resp.Data, "read through the other gateway")

	resp, err = cb.Command(ctx, 0, atomic(object-8, 16), make([]byte, 16*512), 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, resp.Status)
	require.Equal(t, []byte{0x05, 0x24, 0}, []byte{resp.Sense[2] & 0x0f, resp.Sense[12], resp.Sense[13]}, "INVALID FIELD IN CDB: sense %x", resp.Sense)
	resp, err = ca.Command(ctx, 0, cdb16(0x88, object-8, 8), nil, 8*512)
	require.NoError(t, err)
	require.Equal(t, data[len(data)-8*512:], resp.Data, "nothing written")
}
