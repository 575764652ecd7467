package iscsi_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

var erl2Keys = []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "2"}, {Key: "DefaultTime2Retain", Value: "20"}}

// TestERL2WriteSurvivesConnectionLoss kills the connection of a 16 MiB
// write in the middle of its data; the initiator removes the connection
// for recovery, waits Time2Wait and reassigns the task to the session's
// other connection, where the target asks for the missing data and the
// write completes, verified by reading it back.
func TestERL2WriteSurvivesConnectionLoss(t *testing.T) {
	const size = 16 << 20
	h := startSized(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 20}}, size)
	var (
		mu     sync.Mutex
		victim *initiator.Conn
		killed bool
	)
	opt := initiator.Options{TargetName: testTarget, Keys: append([]negotiate.Pair{{Key: "MaxConnections", Value: "2"}}, erl2Keys...),
		CorruptDataOut: func(_ uint32, off int) bool {
			mu.Lock()
			defer mu.Unlock()
			if off >= size/4 && !killed && victim != nil {
				killed = true
				victim.NetConn().Close() // the connection dies mid-write
			}
			return false
		}}
	s, err := initiator.DialSession(ctxT(t), h.addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	a := s.Lead()
	_ = a.TestUnitReady(ctxT(t), 0)
	b, err := s.Join(ctxT(t), h.addr, 1)
	require.NoError(t, err)
	require.Equal(t, "2", a.Params()["ErrorRecoveryLevel"])
	mu.Lock()
	victim = a
	mu.Unlock()

	data := randomData(t, size)
	var itt uint32
	req := &initiator.Request{CDB: rw16(0x8a, 0, size/blockSize), DataOut: data, Attr: 1, OnSent: func(i, _ uint32) { itt = i }}
	_, err = a.Do(ctxT(t), req)
	require.ErrorIs(t, err, initiator.ErrConnClosed, "the write's connection died under it")
	require.True(t, killed)

	code, err := b.LogoutCID(ctxT(t), pdu.LogoutRemoveRecovery, 0)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), code)
	time.Sleep(2 * time.Second) // DefaultTime2Wait before reassigning
	req.OnSent = nil
	resp, err := b.Reassign(ctxT(t), req, itt)
	require.NoError(t, err)
	require.Equal(t, uint8(0), resp.Status)
	require.NotZero(t, resp.R2Ts, "the missing data was asked for on the new connection")

	back, err := b.ReadBlocks(ctxT(t), 0, 0, size/blockSize, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
	require.Empty(t, b.Violations())
	require.Equal(t, []int{1}, sessionConns(h))
}

// TestERL2ReadStatusResentAfterReassign: a read that completed while its
// connection was gone is answered again, data and status, on the
// connection it is reassigned to.
func TestERL2ReadStatusResentAfterReassign(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 20}})
	s := mcsSession(t, h, 2, erl2Keys...)
	a, b := s.Conns()[0], s.Conns()[1]
	data := randomData(t, 64<<10)
	require.NoError(t, b.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))

	// A read sent by hand on a; its answer is never read, and a dies.
	itt := a.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: itt, CmdSN: a.NextCmdSN(), ExpStatSN: a.ExpStatSN(),
		ExpectedDataTransferLength: uint32(len(data)), CDB: rw16(0x88, 0, uint32(len(data)/blockSize))}).Encode(&p)
	require.NoError(t, a.SendPDU(&p))
	a.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(2 * time.Second) // DefaultTime2Wait

	resp, err := b.Reassign(ctxT(t), &initiator.Request{CDB: rw16(0x88, 0, uint32(len(data)/blockSize)), DataInLen: len(data), Attr: 1}, itt)
	require.NoError(t, err)
	require.Equal(t, uint8(0), resp.Status)
	require.Equal(t, data, resp.Data)
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
}

// TestERL2Time2RetainEndsSession: a session whose only connection failed
// waits for it to come back, then ends once Time2Wait + Time2Retain have
// passed.
func TestERL2Time2RetainEndsSession(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 2, DefaultTime2Retain: 1}})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "2"}, {Key: "DefaultTime2Retain", Value: "1"}}})
	require.Equal(t, "1", c.Params()["DefaultTime2Retain"])
	c.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 0 }, 10*time.Second, 10*time.Millisecond,
		"the session waits without connections")
	require.Eventually(t, func() bool { return len(sessionConns(h)) == 0 }, 20*time.Second, 50*time.Millisecond,
		"and ends after Time2Wait + Time2Retain")
}

// TestReassignRefusedBelowERL2: below level 2 TASK REASSIGN and logout
// for recovery are refused.
func TestReassignRefusedBelowERL2(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{erl1}})
	code, err := c.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, 0x77)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseNoReassignSupport), code)
	code, err = c.LogoutReason(ctxT(t), pdu.LogoutRemoveRecovery)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseNoRecovery), code)
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
}

// TestERL2WithoutTime2RetainKeepsSession: at level 2 with
// DefaultTime2Retain 0 a failed connection's tasks are not kept, but the
// session goes on on its other connection.
func TestERL2WithoutTime2RetainKeepsSession(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2}})
	s := mcsSession(t, h, 2, negotiate.Pair{Key: "ErrorRecoveryLevel", Value: "2"})
	a, b := s.Conns()[0], s.Conns()[1]
	require.Equal(t, "0", a.Params()["DefaultTime2Retain"])
	a.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
	code, err := b.LogoutCID(ctxT(t), pdu.LogoutRemoveRecovery, 0)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseNoRecovery), code, "nothing is kept for recovery")
}

// TestERL2ShutdownLeavesNoGoroutines: a session waiting for its failed
// connection's tasks to be reassigned, a write among them, ends with
// Shutdown and leaves nothing running.
func TestERL2ShutdownLeavesNoGoroutines(t *testing.T) {
	snap := leakcheck.Take()
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 60}})
	s := mcsSession(t, h, 2, erl2Keys...)
	a, b := s.Conns()[0], s.Conns()[1]
	// A write waiting for its data when a dies, and a read answered into
	// the void.
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: a.NextITT(), CmdSN: a.NextCmdSN(), ExpStatSN: a.ExpStatSN(),
		ExpectedDataTransferLength: 1 << 20, CDB: rw16(0x8a, 0, (1<<20)/blockSize)}).Encode(&p)
	require.NoError(t, a.SendPDU(&p))
	(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: a.NextITT(), CmdSN: a.NextCmdSN(), ExpStatSN: a.ExpStatSN(),
		ExpectedDataTransferLength: 8192, CDB: rw16(0x88, 0, 16)}).Encode(&p)
	require.NoError(t, a.SendPDU(&p))
	_, err := a.ReadPDU(ctxT(t)) // the R2T: the write is in
	require.NoError(t, err)
	a.NetConn().Close()
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
	b.NetConn().Close() // the session now waits without connections
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 0 }, 10*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.srv.Shutdown(ctx))
	require.Empty(t, h.srv.Sessions())
	s.Close()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) left after Shutdown:\n%s", len(left), leakcheck.Format(left))
	}
}
