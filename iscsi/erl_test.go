package iscsi_test

import (
	"encoding/binary"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

func rw16(op byte, lba uint64, blocks uint32) []byte {
	cdb := make([]byte, 16)
	cdb[0] = op
	binary.BigEndian.PutUint64(cdb[2:], lba)
	binary.BigEndian.PutUint32(cdb[10:], blocks)
	return cdb
}

var erl1 = negotiate.Pair{Key: "ErrorRecoveryLevel", Value: "1"}

// TestErrorRecoveryLevelNegotiation: the target offers what it is
// configured for, never more than it implements.
func TestErrorRecoveryLevelNegotiation(t *testing.T) {
	_, err := iscsi.NewServer(iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 3}})
	require.ErrorIs(t, err, negotiate.ErrConfig)

	h0 := startServer(t, iscsi.Options{})
	c := h0.login(t, initiator.Options{Keys: []negotiate.Pair{erl1}})
	require.Equal(t, "0", c.Params()["ErrorRecoveryLevel"], "level 0 unless configured")

	h1 := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	c = h1.login(t, initiator.Options{Keys: []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "2"}}})
	require.Equal(t, "1", c.Params()["ErrorRecoveryLevel"])
	c = h1.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 9}})
	require.Equal(t, "0", c.Params()["ErrorRecoveryLevel"], "an initiator asking for 0 gets 0")

	h2 := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 2}})
	c = h2.login(t, initiator.Options{Keys: []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "2"}}})
	require.Equal(t, "2", c.Params()["ErrorRecoveryLevel"])
}

// TestERL1DataOutDigestErrorRecoveredByR2T corrupts the data digest of
// Data-Out PDUs (first, middle and last of an R2T sequence, and in the
// unsolicited burst): the target rejects each, asks for its bytes again
// with a recovery R2T, the write completes with the right data, and the
// connection stays up.
func TestERL1DataOutDigestErrorRecoveredByR2T(t *testing.T) {
	const seg = 8192
	tests := []struct {
		name    string
		keys    []negotiate.Pair
		corrupt []int // buffer offsets of the Data-Out PDUs to corrupt
	}{
		{"R2T sequence", nil, []int{65536, 65536 + 3*seg, 65536 + 262144 - seg, 1<<20 - seg}},
		{"unsolicited burst", []negotiate.Pair{{Key: "InitialR2T", Value: "No"}}, []int{seg, 65536 - seg, 65536 + seg}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1, MaxRecvDataSegmentLength: seg}})
			var mu sync.Mutex
			left := map[int]bool{}
			for _, off := range tt.corrupt {
				left[off] = true
			}
			c := h.login(t, initiator.Options{DataDigest: true, HeaderDigest: true, Keys: append([]negotiate.Pair{erl1}, tt.keys...),
				CorruptDataOut: func(_ uint32, off int) bool {
					mu.Lock()
					defer mu.Unlock()
					hit := left[off]
					delete(left, off) // once: the recovery R2T's data goes out clean
					return hit
				}})
			require.Equal(t, "1", c.Params()["ErrorRecoveryLevel"])
			data := randomData(t, 1<<20)
			resp, err := c.Do(ctxT(t), &initiator.Request{CDB: rw16(0x8a, 0, uint32(len(data)/blockSize)), DataOut: data, Attr: 1})
			require.NoError(t, err)
			require.Equal(t, uint8(0), resp.Status)
			require.Equal(t, len(tt.corrupt), resp.DataDigestRejects)
			require.Empty(t, left, "every corruption was sent")
			back, err := c.ReadBlocks(ctxT(t), 0, 0, uint32(len(data)/blockSize), blockSize)
			require.NoError(t, err)
			require.Equal(t, data, back)
			require.NoError(t, c.Err(), "no connection drop")
			require.Empty(t, c.Violations())
			require.Equal(t, int64(len(tt.corrupt)), c.Rejects())
		})
	}
}

// erl1Raw logs in at ErrorRecoveryLevel 1 with 8 KiB Data-In segments.
func erl1Raw(t *testing.T) (*harness, *initiator.Conn) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{erl1, {Key: "MaxRecvDataSegmentLength", Value: "8192"}}})
	return h, c
}

// rawRead sends READ (16) of n bytes by hand and collects its Data-In and
// status, acknowledging nothing.
func rawRead(t *testing.T, c *initiator.Conn, n int) (itt uint32, dataIns []*pdu.PDU, status *pdu.PDU) {
	t.Helper()
	itt = c.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: uint32(n), CDB: rw16(0x88, 0, uint32(n/blockSize))}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	for {
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		switch got.Opcode() {
		case pdu.OpDataIn:
			require.Zero(t, got.Header[1]&0x01, "no status in a Data-In at ErrorRecoveryLevel 1")
			dataIns = append(dataIns, got)
		case pdu.OpSCSIResponse:
			return itt, dataIns, got
		default:
			t.Fatalf("unexpected %v", got.Opcode())
		}
	}
}

func snack(t *testing.T, c *initiator.Conn, typ uint8, itt, ttt, beg, n, expStatSN uint32) {
	t.Helper()
	var p pdu.PDU
	(&pdu.SNACKRequest{Type: typ, ITT: itt, TTT: ttt, ExpStatSN: expStatSN, BegRun: beg, RunLength: n}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
}

func expectReject(t *testing.T, c *initiator.Conn, what string) {
	t.Helper()
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err, what)
	require.Equal(t, pdu.OpReject, got.Opcode(), what)
}

// TestERL1SNACK: Data SNACK, R-Data SNACK and status SNACK get back what
// was sent, until the initiator acknowledges it; R2T SNACK resends an
// outstanding R2T; DataACK releases read data.
func TestERL1SNACK(t *testing.T) {
	_, c := erl1Raw(t)
	data := randomData(t, 64<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))

	itt, dataIns, status := rawRead(t, c, len(data))
	require.Len(t, dataIns, 8)
	last := dataIns[len(dataIns)-1]
	require.NotZero(t, last.Header[1]&0x40, "the last Data-In asks for a DataACK")
	statSN := status.StatSN()

	// Data SNACK for DataSN 2..4.
	snack(t, c, pdu.SNACKDataR2T, itt, pdu.ReservedTag, 2, 3, statSN)
	for sn := 2; sn < 5; sn++ {
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		require.Equal(t, pdu.OpDataIn, got.Opcode())
		require.Equal(t, dataIns[sn].Header, got.Header, "DataSN %d resent as sent", sn)
		require.Equal(t, data[sn*8192:(sn+1)*8192], got.Data)
	}
	// R-Data SNACK: all of them, then the status again with the SNACK
	// Tag and the same StatSN (RFC 7143 §11.16.3). Its SNACK Tag must be
	// neither 0 nor 0xffffffff.
	snack(t, c, pdu.SNACKRDataACK, itt, pdu.ReservedTag, 0, 0, statSN)
	expectReject(t, c, "R-Data SNACK with the reserved tag")
	const snackTag = 0x5a5a
	snack(t, c, pdu.SNACKRDataACK, itt, snackTag, 0, 0, statSN)
	for sn := range dataIns {
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		require.Equal(t, uint32(sn), binary.BigEndian.Uint32(got.Header[36:40]))
		require.Equal(t, dataIns[sn].Data, got.Data)
	}
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
	require.Equal(t, statSN, got.StatSN())
	require.Equal(t, uint32(snackTag), binary.BigEndian.Uint32(got.Header[20:24]))
	// Status SNACK: the latest content, SNACK Tag included.
	snack(t, c, pdu.SNACKStatus, 0, pdu.ReservedTag, statSN, 1, statSN)
	got, err = c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
	require.Equal(t, statSN, got.StatSN())
	require.Equal(t, itt, got.ITT())
	require.Equal(t, uint32(snackTag), binary.BigEndian.Uint32(got.Header[20:24]))

	// A Data SNACK beyond what was sent is refused.
	snack(t, c, pdu.SNACKDataR2T, itt, pdu.ReservedTag, 7, 2, statSN)
	expectReject(t, c, "DataSN past the end")

	// Once ExpStatSN acknowledges the status, neither can come back.
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	snack(t, c, pdu.SNACKStatus, 0, pdu.ReservedTag, statSN, 1, statSN)
	expectReject(t, c, "acknowledged status")
	snack(t, c, pdu.SNACKDataR2T, itt, pdu.ReservedTag, 0, 0, statSN)
	expectReject(t, c, "acknowledged data")

	// DataACK: the initiator's Do acknowledges the data of its reads;
	// that data cannot be asked for again.
	resp, err := c.Do(ctxT(t), &initiator.Request{CDB: rw16(0x88, 0, 16), DataInLen: 16 * blockSize, Attr: 1})
	require.NoError(t, err)
	snack(t, c, pdu.SNACKDataR2T, resp.ITT, pdu.ReservedTag, 0, 0, c.ExpStatSN()-1)
	expectReject(t, c, "data acknowledged by DataACK")

	// R2T SNACK: an outstanding R2T comes again, with its tag.
	witt := c.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: witt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: 8192, CDB: rw16(0x8a, 0, 16)}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	r2tPDU, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpR2T, r2tPDU.Opcode())
	snack(t, c, pdu.SNACKDataR2T, witt, pdu.ReservedTag, 0, 0, c.ExpStatSN())
	again, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpR2T, again.Opcode())
	var r1, r2 pdu.R2T
	require.NoError(t, r1.Decode(r2tPDU))
	require.NoError(t, r2.Decode(again))
	require.Equal(t, r1.TTT, r2.TTT)
	require.Equal(t, r1.R2TSN, r2.R2TSN)
	(&pdu.DataOut{Final: true, ITT: witt, TTT: r1.TTT, ExpStatSN: c.ExpStatSN(), Data: data[:8192]}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got, err = c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpSCSIResponse, got.Opcode())
	require.NoError(t, c.Err())
}

// TestERL1ImmediateDataDigestErrorDiscardsCommand: a command whose
// immediate data fails its digest is rejected and discarded without
// taking its CmdSN; the initiator's retry (same ITT and CmdSN) runs, and
// the commands after it too.
func TestERL1ImmediateDataDigestErrorDiscardsCommand(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	c := h.login(t, initiator.Options{DataDigest: true, Keys: []negotiate.Pair{erl1}})
	data := randomData(t, 8*blockSize)
	cmd := pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: c.NextITT(), CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: uint32(len(data)), CDB: rw16(0x8a, 0, 8), Data: data}
	var p pdu.PDU
	cmd.Encode(&p)
	raw := c.Encode(&p)
	raw[len(raw)-1] ^= 0xff
	require.NoError(t, c.WriteRaw(raw))
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, got.Opcode())
	require.Equal(t, byte(pdu.RejectDataDigest), got.Header[2])

	require.NoError(t, c.SendPDU(&p)) // the retry
	got, err = c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpSCSIResponse, got.Opcode(), "reject reason 0x%x", got.Header[2])
	require.Zero(t, got.Header[3], "GOOD")
	back, err := c.ReadBlocks(ctxT(t), 0, 0, 8, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
}

// TestERL1DataInDigestErrorRecoveredBySNACK: Data-In PDUs the initiator
// takes as corrupted (first, middle, last) are asked for again with Data
// SNACK after the status, and the read returns the right data with the
// connection up.
func TestERL1DataInDigestErrorRecoveredBySNACK(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	var mu sync.Mutex
	hits := map[uint32]int{0: 2, 3: 1, 7: 1} // DataSN -> times to corrupt it
	c := h.login(t, initiator.Options{DataDigest: true, Keys: []negotiate.Pair{erl1, {Key: "MaxRecvDataSegmentLength", Value: "8192"}},
		CorruptDataIn: func(_, sn uint32) bool {
			mu.Lock()
			defer mu.Unlock()
			if hits[sn] > 0 {
				hits[sn]--
				return true
			}
			return false
		}})
	data := randomData(t, 64<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))
	resp, err := c.Do(ctxT(t), &initiator.Request{CDB: rw16(0x88, 0, uint32(len(data)/blockSize)), DataInLen: len(data), Attr: 1})
	require.NoError(t, err)
	require.Equal(t, uint8(0), resp.Status)
	require.Equal(t, data, resp.Data)
	require.Equal(t, 3, resp.DataInRecovered)
	mu.Lock()
	require.Equal(t, map[uint32]int{0: 0, 3: 0, 7: 0}, hits, "DataSN 0 was lost twice, its first SNACK's answer too")
	mu.Unlock()
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	require.Empty(t, c.Violations())
}

// TestERL1SNACKAndTagReuseRightAfterStatus sends, the moment a read's
// status arrives, a Data SNACK for its first Data-In and then a new read
// with the same initiator task tag, over and over. Both are legal at once
// (RFC 7143 §11.16.1: the SNACK precedes the status acknowledgement; a tag
// is free once its status arrived): the SNACK gets the Data-In again, the
// new read runs. The target used to leave a task registered until its
// worker finished after the status was written, so the SNACK was taken
// for an R2T SNACK of a live task and rejected (protocol error), and the
// reused tag rejected as a task in progress.
func TestERL1SNACKAndTagReuseRightAfterStatus(t *testing.T) {
	_, c := erl1Raw(t)
	data := randomData(t, 16<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))
	itt := c.NextITT()
	exp := c.ExpStatSN()
	for i := range 300 {
		var p pdu.PDU
		(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: exp,
			ExpectedDataTransferLength: uint32(len(data)), CDB: rw16(0x88, 0, uint32(len(data)/blockSize))}).Encode(&p)
		require.NoError(t, c.SendPDU(&p))
		var first *pdu.PDU
		for {
			got, err := c.ReadPDU(ctxT(t))
			require.NoError(t, err)
			if got.Opcode() == pdu.OpDataIn {
				if first == nil {
					first = got
				}
				continue
			}
			require.Equal(t, pdu.OpSCSIResponse, got.Opcode(), "round %d: reject reason 0x%x", i, got.Header[2])
			// The status is acknowledged only by the next command.
			snack(t, c, pdu.SNACKDataR2T, itt, pdu.ReservedTag, 0, 1, got.StatSN())
			exp = got.StatSN() + 1
			break
		}
		got, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		require.Equal(t, pdu.OpDataIn, got.Opcode(), "round %d: reject reason 0x%x", i, got.Header[2])
		require.Equal(t, first.Header, got.Header)
		require.Equal(t, data[:8192], got.Data)
	}
	require.NoError(t, c.Err())
}

// TestERL1StatusAcknowledgementWaitsForSNACK: while a read asks for a
// lost Data-In again, another command goes out on the connection (after
// the read's status came, before its SNACK). Its ExpStatSN must not
// acknowledge the read's status (RFC 7143 §11.16.1: the SNACK precedes
// the status acknowledgement), or the target would let the read's data
// go and refuse the SNACK; the initiator holds its ExpStatSN back, the
// target keeps the data, and both commands succeed.
func TestERL1StatusAcknowledgementWaitsForSNACK(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	var c *initiator.Conn
	var mu sync.Mutex
	hits := 0
	other := make(chan error, 1)
	c = h.login(t, initiator.Options{Keys: []negotiate.Pair{erl1, {Key: "MaxRecvDataSegmentLength", Value: "8192"}},
		CorruptDataIn: func(_, sn uint32) bool {
			mu.Lock()
			defer mu.Unlock()
			if sn != 2 {
				return false
			}
			hits++
			if hits == 2 {
				// The answer to the first SNACK is lost too: the status
				// is in, a second SNACK follows. A command sent now,
				// before it, carries the connection's ExpStatSN.
				sent := make(chan struct{})
				go func() {
					_, err := c.Do(ctxT(t), &initiator.Request{CDB: make([]byte, 6), Attr: 1, OnSent: func(uint32, uint32) { close(sent) }})
					other <- err
				}()
				<-sent
			}
			return hits <= 2
		}})
	data := randomData(t, 64<<10)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))
	resp, err := c.Do(ctxT(t), &initiator.Request{CDB: rw16(0x88, 0, uint32(len(data)/blockSize)), DataInLen: len(data), Attr: 1})
	require.NoError(t, err)
	require.Equal(t, data, resp.Data)
	require.NoError(t, <-other)
	mu.Lock()
	require.Equal(t, 3, hits)
	mu.Unlock()
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	require.Empty(t, c.Violations())
	require.Zero(t, c.Rejects())
}
