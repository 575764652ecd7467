package iscsi_test

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// sendTUR sends a raw TEST UNIT READY with the given ITT and CmdSN.
func sendTUR(t *testing.T, c *initiator.Conn, itt, cmdSN uint32) {
	t.Helper()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Attr: 1, ITT: itt, CmdSN: cmdSN, ExpStatSN: c.ExpStatSN(), CDB: make([]byte, 6)}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
}

// quiet checks that the target sends nothing on c for a while: a PDU
// waiting for its CmdSN turn must not be answered.
func quiet(t *testing.T, c *initiator.Conn, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	p, err := c.ReadPDU(ctx)
	if err == nil {
		t.Fatalf("%s: the target answered %v (ITT 0x%x) before the CmdSN gap was filled", what, p.Opcode(), p.ITT())
	}
	require.ErrorIs(t, err, context.DeadlineExceeded, what)
}

// readByITT reads PDUs until one has arrived for each ITT in want.
func readByITT(t *testing.T, c *initiator.Conn, want ...uint32) map[uint32]*pdu.PDU {
	t.Helper()
	got := map[uint32]*pdu.PDU{}
	for len(got) < len(want) {
		p, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err, "waiting for answers to ITTs %x, have %d", want, len(got))
		got[p.ITT()] = p
	}
	for _, itt := range want {
		require.Contains(t, got, itt)
	}
	return got
}

// TestControlPDUsWaitTheirCmdSNTurn sends a non-immediate NOP-Out, Text
// Request or task management request into a CmdSN gap: it must wait for
// the gap to be filled, run in CmdSN order, and consume its CmdSN, so that
// later commands still run (the window used to stick at its CmdSN).
func TestControlPDUsWaitTheirCmdSNTurn(t *testing.T) {
	tests := []struct {
		name  string
		build func(c *initiator.Conn, itt, cmdSN uint32) pdu.PDU
		want  pdu.Opcode
	}{
		{"NOP-Out", func(c *initiator.Conn, itt, cmdSN uint32) pdu.PDU {
			var p pdu.PDU
			(&pdu.NOPOut{ITT: itt, TTT: pdu.ReservedTag, CmdSN: cmdSN, ExpStatSN: c.ExpStatSN(), Data: []byte("ping")}).Encode(&p)
			return p
		}, pdu.OpNOPIn},
		{"Text", func(c *initiator.Conn, itt, cmdSN uint32) pdu.PDU {
			var p pdu.PDU
			(&pdu.TextRequest{Final: true, ITT: itt, TTT: pdu.ReservedTag, CmdSN: cmdSN, ExpStatSN: c.ExpStatSN(),
				Data: negotiate.Append(nil, negotiate.Pair{Key: "SendTargets", Value: testTarget})}).Encode(&p)
			return p
		}, pdu.OpTextResp},
		{"TMF", func(c *initiator.Conn, itt, cmdSN uint32) pdu.PDU {
			var p pdu.PDU
			// ABORT TASK of a task long gone: "task does not exist".
			(&pdu.TaskMgmtRequest{Function: pdu.TMFAbortTask, ITT: itt, RTT: 0x7777, CmdSN: cmdSN,
				ExpStatSN: c.ExpStatSN(), RefCmdSN: cmdSN - 100}).Encode(&p)
			return p
		}, pdu.OpTaskMgmtResp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startServer(t, iscsi.Options{NopInterval: -1})
			c := h.login(t, initiator.Options{})
			gap, queued, ctl := c.NextCmdSN(), c.NextCmdSN(), c.NextCmdSN()
			ittGap, ittQueued, ittCtl := c.NextITT(), c.NextITT(), c.NextITT()

			sendTUR(t, c, ittQueued, queued)
			p := tt.build(c, ittCtl, ctl)
			require.NoError(t, c.SendPDU(&p))
			quiet(t, c, tt.name)

			sendTUR(t, c, ittGap, gap)
			got := readByITT(t, c, ittGap, ittQueued, ittCtl)
			require.Equal(t, pdu.OpSCSIResponse, got[ittGap].Opcode())
			require.Equal(t, pdu.OpSCSIResponse, got[ittQueued].Opcode())
			require.Equal(t, tt.want, got[ittCtl].Opcode())

			// Every CmdSN was consumed: the next command runs.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, c.TestUnitReady(ctx, 0))
			exp, _ := c.Window()
			require.Equal(t, c.CmdSN(), exp)
			require.Zero(t, c.Rejects())
		})
	}
}

// TestAbortTaskNeverReceivedConsumesRefCmdSN rejects a command (so its
// CmdSN is not consumed and commands after it queue up), then aborts it as
// an initiator does after a Reject: the answer is "function complete"
// (RFC 7143 §11.5.1) and RefCmdSN counts as received, so the queued
// command and later ones run. A late copy of the aborted command must not
// run.
func TestAbortTaskNeverReceivedConsumesRefCmdSN(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: -1})
	c := h.login(t, initiator.Options{})
	lost, queued := c.NextCmdSN(), c.NextCmdSN()
	ittLost, ittQueued, ittTMF := c.NextITT(), c.NextITT(), c.NextITT()

	// A data segment on a command without the W bit is rejected, and the
	// command's CmdSN is not consumed.
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Attr: 1, ITT: ittLost, CmdSN: lost, ExpStatSN: c.ExpStatSN(), CDB: make([]byte, 6), Data: make([]byte, 512)}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	rj, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, rj.Opcode())

	sendTUR(t, c, ittQueued, queued)
	quiet(t, c, "command behind the gap")

	(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTask, ITT: ittTMF, RTT: ittLost, CmdSN: c.CmdSN(),
		ExpStatSN: c.ExpStatSN(), RefCmdSN: lost}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got := readByITT(t, c, ittTMF, ittQueued)
	var tmf pdu.TaskMgmtResponse
	require.NoError(t, tmf.Decode(got[ittTMF]))
	require.Equal(t, uint8(pdu.TMFResponseComplete), tmf.Response)
	require.Equal(t, pdu.OpSCSIResponse, got[ittQueued].Opcode())

	// The aborted command arrives late: it is behind the window now and
	// must not run (a WRITE that would change the medium).
	cdb := make([]byte, 10)
	cdb[0] = 0x2a
	binary.BigEndian.PutUint16(cdb[7:], 1)
	(&pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: ittLost, CmdSN: lost, ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: blockSize, CDB: cdb, Data: randomData(t, blockSize)}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	quiet(t, c, "late copy of an aborted command")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.TestUnitReady(ctx, 0))
	back, err := c.ReadBlocks(ctx, 0, 0, 1, blockSize)
	require.NoError(t, err)
	require.Equal(t, make([]byte, blockSize), back, "the late command ran")
}

// TestLogoutWaitsItsCmdSNTurn sends a non-immediate Logout Request into a
// CmdSN gap: it is answered only after the gap is filled and the commands
// before it have run.
func TestLogoutWaitsItsCmdSNTurn(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: -1})
	c := h.login(t, initiator.Options{})
	gap, logout := c.NextCmdSN(), c.NextCmdSN()
	ittGap, ittLogout := c.NextITT(), c.NextITT()
	var p pdu.PDU
	(&pdu.LogoutRequest{ReasonCode: pdu.LogoutCloseSession, ITT: ittLogout, CmdSN: logout, ExpStatSN: c.ExpStatSN()}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	quiet(t, c, "Logout")
	sendTUR(t, c, ittGap, gap)
	got := readByITT(t, c, ittGap, ittLogout)
	require.Equal(t, pdu.OpSCSIResponse, got[ittGap].Opcode())
	var resp pdu.LogoutResponse
	require.NoError(t, resp.Decode(got[ittLogout]))
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), resp.Response)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the target kept the connection after a successful logout")
	}
}
