package iscsi_test

import (
	"net"
	"time"

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

// undisturbed checks, at the end of a hostile test, that the healthy
// session stop ends worked throughout, and that once the server is closed
// no goroutine started since snap is left.
func undisturbed(t *testing.T, h *harness, stop func() (int, error), snap leakcheck.Snapshot) {
	t.Helper()
	rounds, err := stop()
	require.NoError(t, err, "the healthy session was disturbed")
	require.Positive(t, rounds)
	h.srv.Close()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) still running:\n%s", len(left), leakcheck.Format(left))
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

	undisturbed(t, h, stop, snap)
}

// TestERL1HostileSNACKs: SNACKs for runs never sent or already
// acknowledged, runs that overflow 32 bits, an R-Data SNACK for a command
// without data, an R2T SNACK beyond the R2Ts sent and a DataACK for
// nothing each get a Reject (protocol error, RFC 7143 §11.16) and nothing
// else; the connection goes on.
func TestERL1HostileSNACKs(t *testing.T) {
	_, c := erl1Raw(t)
	data := randomData(t, 64<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))
	itt, dataIns, status := rawRead(t, c, len(data))
	require.Len(t, dataIns, 8)
	statSN := status.StatSN()
	tur := rawCommand(t, c, c.NextITT(), statSN, make([]byte, 6), 0)

	// A write waiting for the data of its one R2T.
	witt := c.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: witt, CmdSN: c.NextCmdSN(), ExpStatSN: statSN,
		ExpectedDataTransferLength: 8192, CDB: rw16(0x8a, 0, 16)}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	r2tPDU, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpR2T, r2tPDU.Opcode())

	for _, tc := range []struct {
		name             string
		typ              uint8
		itt, ttt, beg, n uint32
	}{
		{"status never sent", pdu.SNACKStatus, pdu.ReservedTag, pdu.ReservedTag, tur.StatSN() + 100, 1},
		{"status run past the last sent", pdu.SNACKStatus, pdu.ReservedTag, pdu.ReservedTag, statSN, 100},
		{"status run of 2^32-1", pdu.SNACKStatus, pdu.ReservedTag, pdu.ReservedTag, statSN, 0xffffffff},
		{"status acknowledged, all from there", pdu.SNACKStatus, pdu.ReservedTag, pdu.ReservedTag, statSN - 1, 0},
		{"status far back, all from there", pdu.SNACKStatus, pdu.ReservedTag, pdu.ReservedTag, statSN - 0x80000000, 0},
		{"Data-In never sent", pdu.SNACKDataR2T, itt, pdu.ReservedTag, 8, 1},
		{"Data-In run past the end", pdu.SNACKDataR2T, itt, pdu.ReservedTag, 6, 3},
		{"Data-In run of 2^32-1", pdu.SNACKDataR2T, itt, pdu.ReservedTag, 1, 0xffffffff},
		{"BegRun 2^32-1, all from there", pdu.SNACKDataR2T, itt, pdu.ReservedTag, 0xffffffff, 0},
		{"BegRun 2^32-1, run wrapping to 0", pdu.SNACKDataR2T, itt, pdu.ReservedTag, 0xffffffff, 2},
		{"Data-In of a task never seen", pdu.SNACKDataR2T, 0x7777, pdu.ReservedTag, 0, 0},
		{"R-Data SNACK for a command without data", pdu.SNACKRDataACK, tur.ITT(), 0x99, 0, 0},
		{"R-Data SNACK with a BegRun", pdu.SNACKRDataACK, itt, 0x99, 1, 0},
		{"R-Data SNACK with SNACK Tag 0", pdu.SNACKRDataACK, itt, 0, 0, 0},
		{"R2T never sent", pdu.SNACKDataR2T, witt, pdu.ReservedTag, 1, 1},
		{"R2T run of 2^32-1", pdu.SNACKDataR2T, witt, pdu.ReservedTag, 0, 0xffffffff},
		{"DataACK for no Data-In", pdu.SNACKDataACK, pdu.ReservedTag, 0x4242, 8, 0},
	} {
		snack(t, c, tc.typ, tc.itt, tc.ttt, tc.beg, tc.n, statSN)
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err, tc.name)
		require.Equal(t, pdu.OpReject, got.Opcode(), tc.name)
		require.Equal(t, byte(pdu.RejectProtocolError), got.Header[2], tc.name)
	}

	// The write finishes, and what was sent can still be asked for.
	var r2t pdu.R2T
	require.NoError(t, r2t.Decode(r2tPDU))
	(&pdu.DataOut{Final: true, ITT: witt, TTT: r2t.TTT, ExpStatSN: statSN, Data: data[:8192]}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
	// BegRun 0 RunLength 0: every unacknowledged numbered response (the
	// Rejects consumed StatSNs too).
	snack(t, c, pdu.SNACKStatus, 0, pdu.ReservedTag, 0, 0, statSN)
	for sn := statSN; sn != got.StatSN()+1; sn++ {
		again, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		require.Equal(t, sn, again.StatSN())
		switch sn {
		case statSN, tur.StatSN(), got.StatSN():
			require.Equal(t, pdu.OpSCSIResponse, again.Opcode())
		default:
			require.Equal(t, pdu.OpReject, again.Opcode())
		}
	}
	snack(t, c, pdu.SNACKDataR2T, itt, pdu.ReservedTag, 7, 0, statSN)
	again, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	// As sent, but for ExpCmdSN and MaxCmdSN, which are current.
	require.Equal(t, dataIns[7].Header[:28], again.Header[:28])
	require.Equal(t, dataIns[7].Header[36:], again.Header[36:])
	require.Equal(t, dataIns[7].Data, again.Data)
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	require.NoError(t, c.Err())
}

// TestERL1SNACKFloodIsHeldUpByTCP: an initiator that sends Data SNACKs
// for a whole read over and over without reading what comes back does not
// fill the target's memory: the target writes each answer before it
// reads the next SNACK, so TCP holds the initiator up, and the rest of
// the server goes on.
func TestERL1SNACKFloodIsHeldUpByTCP(t *testing.T) {
	snap := leakcheck.Take()
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	stop := healthy(t, h, 2)
	isid := [6]byte{0x80, 0, 0, 0, 0xe1, 2}
	c, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, ISID: isid,
		Keys: []negotiate.Pair{erl1, {Key: "MaxRecvDataSegmentLength", Value: "8192"}}})
	require.NoError(t, err)
	defer c.Close()
	// A small receive buffer: what the target sends fills it soon.
	require.NoError(t, c.NetConn().(*net.TCPConn).SetReadBuffer(16<<10))
	require.NoError(t, c.Login(ctxT(t)))
	data := randomData(t, 64<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))
	itt, _, status := rawRead(t, c, len(data))
	// Reads of the whole LUN, left unread: the initiator stops taking
	// PDUs off its socket, so a worker sits in a write the initiator does
	// not take, and more queues up behind it.
	release := c.HoldReads()
	defer release()
	var p pdu.PDU
	for range 3 {
		(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: c.NextITT(), CmdSN: c.NextCmdSN(), ExpStatSN: status.StatSN(),
			ExpectedDataTransferLength: lunBlocks * blockSize, CDB: rw16(0x88, 0, lunBlocks)}).Encode(&p)
		require.NoError(t, c.SendPDU(&p))
	}
	const flood = 20000
	(&pdu.SNACKRequest{Type: pdu.SNACKDataR2T, ITT: itt, TTT: pdu.ReservedTag, ExpStatSN: status.StatSN()}).Encode(&p)
	one := c.Encode(&p)
	go func() {
		for range flood {
			if c.WriteRaw(one) != nil {
				return
			}
		}
	}()
	pdusIn := func() uint64 {
		for _, s := range h.srv.Sessions() {
			if s.ISID == isid && len(s.Stats.Connections) == 1 {
				return s.Stats.Connections[0].PDUsIn
			}
		}
		return 0
	}
	base := pdusIn()
	require.Never(t, func() bool { return pdusIn() > base+flood/2 }, 2*time.Second, 20*time.Millisecond,
		"the target reads no more SNACKs than it can answer")
	c.Close()
	undisturbed(t, h, stop, snap)
}

// TestERL1DataOutThatAlwaysFailsEndsTheCommand: write data whose digest
// fails every time it is sent again is asked for a bounded number of times
// (16 plus one per 8 KiB); then the write ends with CHECK CONDITION and
// the connection stays up.
func TestERL1DataOutThatAlwaysFailsEndsTheCommand(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	c := h.login(t, initiator.Options{DataDigest: true, Keys: []negotiate.Pair{erl1, {Key: "ImmediateData", Value: "No"}},
		CorruptDataOut: func(uint32, int) bool { return true }})
	data := randomData(t, 64<<10)
	resp, err := c.Do(ctxT(t), &initiator.Request{CDB: rw16(0x8a, 0, uint32(len(data)/blockSize)), DataOut: data, Attr: 1})
	require.NoError(t, err)
	require.Equal(t, uint8(2), resp.Status, "CHECK CONDITION")
	require.Equal(t, 16+len(data)/8192+1, resp.DataDigestRejects)
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	require.NoError(t, c.Err())
}
