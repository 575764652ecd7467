package iscsi_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Hostile initiators at ErrorRecoveryLevel 1 and 2: what the target keeps
// for recovery stays bounded, and nothing reaches other sessions.

// rawCommand sends a SCSI command by hand with ExpStatSN exp and returns
// its SCSI Response, skipping its Data-In.
func rawCommand(t *testing.T, c *initiator.Conn, itt, exp uint32, cdb []byte, readLen int) *pdu.PDU {
	t.Helper()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Read: readLen > 0, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: exp,
		ExpectedDataTransferLength: uint32(readLen), CDB: cdb}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	for {
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		switch got.Opcode() {
		case pdu.OpDataIn:
		case pdu.OpSCSIResponse:
			return got
		default:
			t.Fatalf("unexpected %v", got.Opcode())
		}
	}
}

// TestERL1StalledExpStatSNIsBounded: an initiator that never acknowledges
// the statuses it receives makes the target keep every read's data for
// Data SNACK. Those buffers keep their share of the session's buffer
// budget, so once it is spent reads get TASK SET FULL (and run again once
// the initiator acknowledges); PDUs kept beyond twice what an
// acknowledging initiator can have outstanding end the connection. A
// healthy session beside it is not disturbed, and nothing is left running.
func TestERL1StalledExpStatSNIsBounded(t *testing.T) {
	snap := leakcheck.Take()
	const depth = 4
	h := startServer(t, iscsi.Options{QueueDepth: depth, Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	stop := healthy(t, h, 1)
	c := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0xe1, 1}, Keys: []negotiate.Pair{erl1}})
	const burst = 262144 // the default MaxBurstLength: depth x burst is the budget
	stale := c.ExpStatSN()
	for i := range depth {
		st := rawCommand(t, c, c.NextITT(), stale, rw16(0x88, 0, burst/blockSize), burst)
		require.Equal(t, byte(0), st.Header[3], "read %d: GOOD", i)
	}
	st := rawCommand(t, c, c.NextITT(), stale, rw16(0x88, 0, burst/blockSize), burst)
	require.Equal(t, byte(0x28), st.Header[3], "the budget is held by unacknowledged data: TASK SET FULL")
	// Acknowledging frees it.
	st = rawCommand(t, c, c.NextITT(), c.ExpStatSN(), rw16(0x88, 0, burst/blockSize), burst)
	require.Equal(t, byte(0), st.Header[3], "GOOD once acknowledged")

	// Statuses never acknowledged: the connection ends once it keeps more
	// than 2 x depth + 64 of them.
	stale = c.ExpStatSN()
	sent := 0
	for ; sent < 200; sent++ {
		var p pdu.PDU
		(&pdu.SCSICommand{Final: true, Attr: 1, ITT: c.NextITT(), CmdSN: c.NextCmdSN(), ExpStatSN: stale, CDB: make([]byte, 6)}).Encode(&p)
		if c.SendPDU(&p) != nil {
			break
		}
		got, err := c.ReadPDU(ctxT(t))
		if err != nil {
			require.ErrorIs(t, err, initiator.ErrConnClosed)
			break
		}
		require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
	}
	require.Less(t, sent, 100, "the connection was ended")
	require.GreaterOrEqual(t, sent, 2*depth+64-2, "not before the bound")
	<-c.Done()

	rounds, err := stop()
	require.NoError(t, err, "the healthy session was disturbed")
	require.Positive(t, rounds)
	h.srv.Close()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) still running:\n%s", len(left), leakcheck.Format(left))
	}
}
