package iscsi_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestBufferBudgetGivesTaskSetFull checks that a session's data buffers
// are bounded by queue depth times burst length: with the budget held by
// a write waiting for its data, another command gets TASK SET FULL, and
// runs once the write has completed.
func TestBufferBudgetGivesTaskSetFull(t *testing.T) {
	const burst = 4096
	h := startServer(t, iscsi.Options{QueueDepth: 2, Negotiation: negotiate.Config{MaxBurstLength: burst, FirstBurstLength: burst}})
	c := h.login(t, initiator.Options{})

	// A write as large as the whole budget (2 x 4096), sent by hand so
	// that its data can be held back.
	const n = 2 * burst
	cdb := make([]byte, 10)
	cdb[0] = 0x2a // WRITE (10)
	binary.BigEndian.PutUint16(cdb[7:], n/blockSize)
	itt := c.NextITT()
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: n, CDB: cdb}
	var p pdu.PDU
	cmd.Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpR2T, got.Opcode())
	var r2t pdu.R2T
	require.NoError(t, r2t.Decode(got))

	tests := []struct {
		name string
		run  func() error
	}{
		{"read", func() error { _, err := c.ReadBlocks(ctxT(t), 0, 0, 1, blockSize); return err }},
		{"write", func() error { return c.WriteBlocks(ctxT(t), 0, 0, make([]byte, blockSize), blockSize, false) }},
	}
	for _, tt := range tests {
		var se *initiator.StatusError
		require.ErrorAs(t, tt.run(), &se, tt.name)
		require.Equal(t, byte(scsi.StatusTaskSetFull), se.Status, tt.name)
	}
	// Commands without data need no buffer.
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))

	// The held-back data arrives; the write completes and frees the budget.
	data := randomData(t, n)
	sent := 0
	for sent < n {
		l := int(r2t.DesiredDataTransferLength)
		d := pdu.DataOut{Final: true, ITT: itt, TTT: r2t.TTT, BufferOffset: r2t.BufferOffset, ExpStatSN: c.ExpStatSN(),
			Data: data[r2t.BufferOffset : int(r2t.BufferOffset)+l]}
		d.Encode(&p)
		require.NoError(t, c.SendPDU(&p))
		sent += l
		got, err = c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		if got.Opcode() == pdu.OpR2T {
			require.NoError(t, r2t.Decode(got))
			continue
		}
		require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
		var resp pdu.SCSIResponse
		require.NoError(t, resp.Decode(got))
		require.Equal(t, uint8(scsi.StatusGood), resp.Status)
	}
	back, err := c.ReadBlocks(ctxT(t), 0, 0, n/blockSize, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
}

// TestConcurrentCommandsKeepSequenceAndData runs many commands at once on
// one session, reads split into several Data-In PDUs each, with and
// without digests, so that responses of different tasks are batched into
// shared vectored writes: every byte must come back where it was written
// and StatSN/MaxCmdSN must stay in sequence across batches.
func TestConcurrentCommandsKeepSequenceAndData(t *testing.T) {
	for _, digests := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "digests"}[digests], func(t *testing.T) {
			h := startServer(t, iscsi.Options{QueueDepth: 32})
			c := h.login(t, initiator.Options{HeaderDigest: digests, DataDigest: digests,
				Keys: []negotiate.Pair{{Key: "MaxRecvDataSegmentLength", Value: "4096"}}})
			const workers, rounds, size = 16, 20, 16384
			errs := make(chan error, workers)
			for w := range workers {
				go func() {
					lba := uint64(w * size / blockSize)
					for r := range rounds {
						data := make([]byte, size)
						for i := range data {
							data[i] = byte(w*31 + r*7 + i)
						}
						if err := c.WriteBlocks(ctxT(t), 0, lba, data, blockSize, r%5 == 0); err != nil {
							errs <- err
							return
						}
						back, err := c.ReadBlocks(ctxT(t), 0, lba, size/blockSize, blockSize)
						if err != nil {
							errs <- err
							return
						}
						if string(back) != string(data) {
							errs <- fmt.Errorf("worker %d round %d: data read back differs", w, r)
							return
						}
					}
					errs <- nil
				}()
			}
			for range workers {
				require.NoError(t, <-errs)
			}
			require.Empty(t, c.Violations())
		})
	}
}
