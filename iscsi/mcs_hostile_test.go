package iscsi_test

import (
	"context"
	"encoding/binary"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// Hostile initiators against multi-connection sessions and connection
// recovery: TASK REASSIGN of tasks not theirs to move, joins the session
// must refuse, and reconnects racing Time2Retain.

// sendRead sends READ (16) of n bytes on c by hand and returns its ITT.
func sendRead(t *testing.T, c *initiator.Conn, n int) uint32 {
	t.Helper()
	itt := c.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: uint32(n), CDB: rw16(0x88, 0, uint32(n/blockSize))}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	return itt
}

// readAnswer reads the Data-In of the read itt from c until its status
// and returns the data.
func readAnswer(t *testing.T, c *initiator.Conn, itt uint32, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	for {
		p, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		if p.ITT() != itt {
			continue
		}
		switch p.Opcode() {
		case pdu.OpDataIn:
			var d pdu.DataIn
			require.NoError(t, d.Decode(p))
			copy(buf[d.BufferOffset:], d.Data)
		case pdu.OpSCSIResponse:
			require.Zero(t, p.Header[3], "GOOD")
			return buf
		default:
			t.Fatalf("unexpected %v", p.Opcode())
		}
	}
}

// TestERL2HostileTaskReassign: TASK REASSIGN is answered "task does not
// exist" for a task of another session, "task still allegiant" for a task
// of a live connection or one already moved to the asking connection; the
// same task asked for on two connections at once moves to one of them
// only, which answers it once.
func TestERL2HostileTaskReassign(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 3, ErrorRecoveryLevel: 2, DefaultTime2Retain: 20}})
	s := mcsSession(t, h, 3, erl2Keys...)
	a, b, d := s.Conns()[0], s.Conns()[1], s.Conns()[2]
	data := randomData(t, 64<<10)
	require.NoError(t, b.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))

	lost := sendRead(t, a, len(data)) // answered into the void: a dies
	a.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 2 }, 10*time.Second, 10*time.Millisecond)

	other := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0xe2, 1}, Keys: erl2Keys})
	code, err := other.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, lost)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseNoTask), code, "another session's task")

	live := sendRead(t, b, len(data))
	require.Equal(t, data, readAnswer(t, b, live, len(data)))
	code, err = d.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, live)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseTaskAllegiant), code, "a task of a live connection")

	// Both b and d ask for the lost read at once.
	codes := make([]uint8, 2)
	var wg sync.WaitGroup
	for i, c := range []*initiator.Conn{b, d} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := c.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, lost)
			require.NoError(t, err)
			codes[i] = code
		}()
	}
	wg.Wait()
	got := append([]uint8(nil), codes...)
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	require.Equal(t, []uint8{pdu.TMFResponseComplete, pdu.TMFResponseTaskAllegiant}, got, "one connection gets it")
	winner, loser := b, d
	if codes[1] == pdu.TMFResponseComplete {
		winner, loser = d, b
	}
	require.Equal(t, data, readAnswer(t, winner, lost, len(data)))
	// Asked for again: still allegiant here, or gone once the initiator
	// acknowledged its status; never answered twice.
	code, err = winner.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, lost)
	require.NoError(t, err)
	require.Contains(t, []uint8{pdu.TMFResponseTaskAllegiant, pdu.TMFResponseNoTask}, code, "already moved")
	require.NoError(t, loser.TestUnitReady(ctxT(t), 0))
	require.NoError(t, winner.TestUnitReady(ctxT(t), 0))
	require.Empty(t, loser.Violations())
}

// TestMCSHostileJoins: a login with another session's TSIH but another
// initiator name or ISID is "session does not exist"; logins beyond
// MaxConnections at once are all "too many connections"; logins racing
// with one CID leave exactly one connection with it, which works; the
// session is not disturbed.
func TestMCSHostileJoins(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2}})
	snap := leakcheck.Take()
	s := mcsSession(t, h, 1)
	tsih := s.TSIH()
	for _, opt := range []initiator.Options{
		{TargetName: testTarget, TSIH: tsih, CID: 1, InitiatorName: "iqn.2026-11.io.example:intruder"},
		{TargetName: testTarget, TSIH: tsih, CID: 1, ISID: [6]byte{0x80, 0, 0, 0, 0xe2, 2}},
	} {
		_, err := initiator.Dial(ctxT(t), h.addr, opt)
		var le *initiator.LoginError
		require.ErrorAs(t, err, &le)
		require.Equal(t, [2]uint8{2, 10}, [2]uint8{le.Class, le.Detail}, "session does not exist")
	}

	// Eight logins race for CID 1: each replaces the one before.
	var mu sync.Mutex
	var joined []*initiator.Conn
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := s.Join(context.Background(), h.addr, 1)
			if err == nil {
				mu.Lock()
				joined = append(joined, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.NotEmpty(t, joined)
	var alive []*initiator.Conn
	require.Eventually(t, func() bool {
		alive = alive[:0]
		for _, c := range joined {
			select {
			case <-c.Done():
			default:
				alive = append(alive, c)
			}
		}
		return len(alive) == 1
	}, 10*time.Second, 10*time.Millisecond, "one connection with CID 1 is left")
	require.NoError(t, alive[0].TestUnitReady(ctxT(t), 0))
	require.Equal(t, []int{2}, sessionConns(h))

	// The session is full: every other login at once is refused.
	for cid := uint16(2); cid < 8; cid++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Join(context.Background(), h.addr, cid)
			var le *initiator.LoginError
			require.ErrorAs(t, err, &le)
			require.Equal(t, [2]uint8{2, 6}, [2]uint8{le.Class, le.Detail}, "too many connections")
		}()
	}
	wg.Wait()
	require.NoError(t, s.Lead().TestUnitReady(ctxT(t), 0))
	require.Equal(t, []int{2}, sessionConns(h))
	s.Close()
	require.Eventually(t, func() bool { return len(sessionConns(h)) == 0 }, 10*time.Second, 10*time.Millisecond)
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) still running:\n%s", len(left), leakcheck.Format(left))
	}
}

// TestMCSJoinDuringSessionLogout: while a logout closing the session
// waits for a command held in its device, a login joining the session is
// refused (it would be closed as the session ends); once the command is
// let go the logout completes.
func TestMCSJoinDuringSessionLogout(t *testing.T) {
	hold := make(chan struct{})
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 4}}, backend.NewMemory(lunBlocks*blockSize), slow)
	s := mcsSession(t, &h.harness, 1)
	a := s.Lead()
	_ = a.TestUnitReady(ctxT(t), scsi.EncodeLUN(1))
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	read := make(chan error, 1)
	go func() {
		_, err := a.ReadBlocks(context.Background(), scsi.EncodeLUN(1), 0, 8, blockSize)
		read <- err
	}()
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 10*time.Second, time.Millisecond)
	logout := make(chan error, 1)
	go func() { _, err := a.LogoutReason(context.Background(), pdu.LogoutCloseSession); logout <- err }()

	// Until the target takes the logout, a join may still get in.
	cid := uint16(1)
	require.Eventually(t, func() bool {
		_, err := s.Join(ctxT(t), h.addr, cid)
		if err == nil {
			cid++
			return false
		}
		var le *initiator.LoginError
		require.ErrorAs(t, err, &le)
		require.Equal(t, [2]uint8{2, 10}, [2]uint8{le.Class, le.Detail})
		return true
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1, len(sessionConns(&h.harness)), "refused while the session is still there")

	close(hold)
	require.NoError(t, <-read)
	require.NoError(t, <-logout)
	require.Eventually(t, func() bool { return len(sessionConns(&h.harness)) == 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestERL2ReconnectOutlivesTime2Retain: a session whose only connection
// failed gets a new one before Time2Wait + Time2Retain run out; the
// expiry then ends only the failed connection's task (TASK REASSIGN finds
// it no more) and the session goes on. Once that connection fails too
// and the time runs out again, the session ends and a join is refused.
func TestERL2ReconnectOutlivesTime2Retain(t *testing.T) {
	keys := []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "2"}, {Key: "DefaultTime2Retain", Value: "1"}, {Key: "MaxConnections", Value: "2"}}
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 1}})
	snap := leakcheck.Take()
	s, err := initiator.DialSession(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, Keys: keys})
	require.NoError(t, err)
	defer s.Close()
	a := s.Lead()
	_ = a.TestUnitReady(ctxT(t), 0)
	wait, err := strconv.Atoi(a.Params()["DefaultTime2Wait"])
	require.NoError(t, err)
	retain := time.Duration(wait+1) * time.Second
	lost := sendRead(t, a, 8192)
	a.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 0 }, 10*time.Second, 10*time.Millisecond)
	b, err := s.Join(ctxT(t), h.addr, 1)
	require.NoError(t, err)
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))

	time.Sleep(retain + time.Second) // the failed connection's time runs out
	code, err := b.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, lost)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseNoTask), code, "the task ended with Time2Retain")
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
	require.Equal(t, []int{1}, sessionConns(h))

	b.NetConn().Close()
	require.Eventually(t, func() bool { return len(sessionConns(h)) == 0 }, 10*time.Second+retain, 20*time.Millisecond)
	_, err = s.Join(ctxT(t), h.addr, 2)
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, [2]uint8{2, 10}, [2]uint8{le.Class, le.Detail})
	s.Close()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) still running:\n%s", len(left), leakcheck.Format(left))
	}
}

// TestERL2HeaderDigestErrorEndsOnlyItsConnection: a PDU whose header
// digest fails ends its connection even at ErrorRecoveryLevel 2 (its
// lengths cannot be trusted to find the next PDU, RFC 7143 §7.8); the
// read that connection carried is reassigned to the session's other
// connection and answered there.
func TestERL2HeaderDigestErrorEndsOnlyItsConnection(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 20}})
	opt := initiator.Options{TargetName: testTarget, HeaderDigest: true, Keys: append([]negotiate.Pair{{Key: "MaxConnections", Value: "2"}}, erl2Keys...)}
	s, err := initiator.DialSession(ctxT(t), h.addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	a := s.Lead()
	_ = a.TestUnitReady(ctxT(t), 0)
	b, err := s.Join(ctxT(t), h.addr, 1)
	require.NoError(t, err)
	require.True(t, a.Settings().HeaderDigest)
	data := randomData(t, 64<<10)
	require.NoError(t, b.WriteBlocks(ctxT(t), 0, 0, data, blockSize, false))

	// A read whose answer is not read, then a NOP-Out whose header is hit.
	itt := sendRead(t, a, len(data))
	var p pdu.PDU
	(&pdu.NOPOut{Immediate: true, ITT: a.NextITT(), TTT: pdu.ReservedTag, CmdSN: a.CmdSN(), ExpStatSN: a.ExpStatSN()}).Encode(&p)
	raw := a.Encode(&p)
	raw[20] ^= 0x01
	require.NoError(t, a.WriteRaw(raw))
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection with the bad header digest was kept")
	}
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	resp, err := b.Reassign(ctxT(t), &initiator.Request{CDB: rw16(0x88, 0, uint32(len(data)/blockSize)), DataInLen: len(data), Attr: 1}, itt)
	require.NoError(t, err)
	require.Equal(t, data, resp.Data)
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
}

// TestImmediateCommandsAndTMFsAreBounded: immediate commands skip the
// CmdSN window, and task management functions wait for the tasks they
// end; against a device that hangs, an initiator sending them without
// end finds the queue depth as the bound: beyond it an immediate command
// gets Reject "too many immediate commands" and a task management
// function "function rejected", at once. Everything finishes once the
// device lets go.
func TestImmediateCommandsAndTMFsAreBounded(t *testing.T) {
	const depth = 4
	hold := make(chan struct{})
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{QueueDepth: depth}, backend.NewMemory(lunBlocks*blockSize), slow)
	c := h.loginLUNs(t, initiator.Options{}, 0, 1)
	lun1 := scsi.EncodeLUN(1)
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	read := func() uint32 {
		itt := c.NextITT()
		cdb := rw16(0x88, 0, 1)
		var p pdu.PDU
		(&pdu.SCSICommand{Immediate: true, Final: true, Read: true, Attr: 1, LUN: lun1, ITT: itt, CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(),
			ExpectedDataTransferLength: blockSize, CDB: cdb}).Encode(&p)
		require.NoError(t, c.SendPDU(&p))
		return itt
	}
	for range depth {
		read()
	}
	require.Eventually(t, func() bool { return slow.Hits() >= depth }, 10*time.Second, time.Millisecond)
	over := read()
	p, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, p.Opcode())
	require.Equal(t, byte(pdu.RejectImmediateCommand), p.Header[2])
	require.Equal(t, over, binary.BigEndian.Uint32(p.Data[16:20]))

	tmf := func() uint32 {
		itt := c.NextITT()
		var p pdu.PDU
		(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTaskSet, LUN: lun1, ITT: itt, RTT: pdu.ReservedTag,
			CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN()}).Encode(&p)
		require.NoError(t, c.SendPDU(&p))
		return itt
	}
	var tmfs []uint32
	for range depth {
		tmfs = append(tmfs, tmf())
	}
	extra := tmf()
	p, err = c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpTaskMgmtResp, p.Opcode())
	require.Equal(t, extra, p.ITT())
	require.Equal(t, byte(pdu.TMFResponseRejected), p.Header[2])

	close(hold)
	answered := map[uint32]bool{}
	for len(answered) < len(tmfs) {
		p, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		if p.Opcode() == pdu.OpTaskMgmtResp {
			require.Equal(t, byte(pdu.TMFResponseComplete), p.Header[2])
			answered[p.ITT()] = true
		}
	}
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
}

// TestERL2FailedIdleConnectionRemovedForRecovery: a connection that fails
// with no task left starts no Time2Retain timer, yet a logout removing it
// for recovery from another connection still finds its CID.
func TestERL2FailedIdleConnectionRemovedForRecovery(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2, ErrorRecoveryLevel: 2, DefaultTime2Retain: 20}})
	s := mcsSession(t, h, 2, erl2Keys...)
	a, b := s.Conns()[0], s.Conns()[1]
	require.NoError(t, a.TestUnitReady(ctxT(t), 0))
	a.NetConn().Close()
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	code, err := b.LogoutCID(ctxT(t), pdu.LogoutRemoveRecovery, 0)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), code)
	code, err = b.LogoutCID(ctxT(t), pdu.LogoutRemoveRecovery, 5)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseCIDNotFound), code)
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
}
