package iscsi_test

import (
	"bytes"
	"context"
	"errors"
	"net"
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

// startSized is startServer with a LUN of the given size in bytes.
func startSized(t testing.TB, opt iscsi.Options, size int64) *harness {
	t.Helper()
	srv, err := iscsi.NewServer(opt)
	require.NoError(t, err)
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(size), scsi.UnitConfig{BlockSize: blockSize, Serial: "mcs0", WriteCache: true})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: testTarget, Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		require.ErrorIs(t, <-served, iscsi.ErrServerClosed)
		lu.Close()
	})
	return &harness{srv: srv, addr: l.Addr().String(), dev: dev}
}

// mcsSession opens a session proposing MaxConnections=n and joins
// connections until it has n, CIDs 0..n-1.
func mcsSession(t *testing.T, h *harness, n int, keys ...negotiate.Pair) *initiator.Session {
	t.Helper()
	opt := initiator.Options{TargetName: testTarget, Keys: append([]negotiate.Pair{{Key: "MaxConnections", Value: "8"}}, keys...)}
	s, err := initiator.DialSession(ctxT(t), h.addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_ = s.Lead().TestUnitReady(ctxT(t), 0) // consumes POWER ON OCCURRED
	for cid := 1; cid < n; cid++ {
		_, err := s.Join(ctxT(t), h.addr, uint16(cid))
		require.NoError(t, err, "joining CID %d", cid)
	}
	return s
}

func sessionConns(h *harness) []int {
	var out []int
	for _, si := range h.srv.Sessions() {
		if !si.Discovery {
			out = append(out, si.Connections)
		}
	}
	return out
}

// TestMCSStripedWriteReadBack writes 64 MiB striped over the four
// connections of one session, several commands in flight on each, and
// reads it back striped the other way round.
func TestMCSStripedWriteReadBack(t *testing.T) {
	const (
		total = 64 << 20
		chunk = 1 << 20
		conns = 4
	)
	h := startSized(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: conns}}, total)
	s := mcsSession(t, h, conns)
	require.Equal(t, []int{conns}, sessionConns(h))
	require.Equal(t, "4", s.Lead().Params()["MaxConnections"], "negotiated down to the target's limit")

	data := randomData(t, total)
	stripe := func(shift int, op func(c *initiator.Conn, off int) error) {
		cs := s.Conns()
		var wg sync.WaitGroup
		errs := make(chan error, total/chunk)
		for k := range cs {
			for lane := 0; lane < 2; lane++ { // two commands in flight per connection
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := cs[(k+shift)%len(cs)]
					for i := k*2 + lane; i < total/chunk; i += len(cs) * 2 {
						if err := op(c, i*chunk); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	stripe(0, func(c *initiator.Conn, off int) error {
		return c.WriteBlocks(ctxT(t), 0, uint64(off/blockSize), data[off:off+chunk], blockSize, false)
	})
	stripe(1, func(c *initiator.Conn, off int) error {
		got, err := c.ReadBlocks(ctxT(t), 0, uint64(off/blockSize), chunk/blockSize, blockSize)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data[off:off+chunk]) {
			return errors.New("read back differs at offset " + string(rune('0'+off/chunk%10)))
		}
		return nil
	})
	for i, c := range s.Conns() {
		require.Empty(t, c.Violations(), "connection %d", i)
	}
}

// TestMCSConnectionLifecycle: the negotiated MaxConnections bounds the
// session; a login with a CID in use replaces that connection; a logout
// closing one connection leaves the session, the last one ends it.
func TestMCSConnectionLifecycle(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 3}})
	s := mcsSession(t, h, 3)
	require.Equal(t, []int{3}, sessionConns(h))

	_, err := s.Join(ctxT(t), h.addr, 7)
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, [2]uint8{2, 6}, [2]uint8{le.Class, le.Detail}, "too many connections")

	// Connection reinstatement: CID 2 logs in again.
	old := s.Conns()[2]
	c2, err := s.Join(ctxT(t), h.addr, 2)
	require.NoError(t, err)
	select {
	case <-old.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the reinstated connection was not closed")
	}
	require.NoError(t, c2.TestUnitReady(ctxT(t), 0))
	require.Equal(t, []int{3}, sessionConns(h))

	// Logout of one connection (reason 1) leaves the session.
	resp, err := s.Conns()[1].LogoutReason(ctxT(t), pdu.LogoutCloseConnection)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), resp)
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 2 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, c2.TestUnitReady(ctxT(t), 0))
	require.NoError(t, s.Lead().TestUnitReady(ctxT(t), 0))

	// A connection closes another by its CID.
	resp, err = c2.LogoutCID(ctxT(t), pdu.LogoutCloseConnection, 0)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), resp)
	select {
	case <-s.Lead().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection logged out by CID was not closed")
	}
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, c2.TestUnitReady(ctxT(t), 0))

	// The last connection's logout ends the session.
	resp, err = c2.LogoutReason(ctxT(t), pdu.LogoutCloseConnection)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), resp)
	require.Eventually(t, func() bool { return len(sessionConns(h)) == 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestMCSOneConnectionByDefault: without a configured limit the target
// negotiates MaxConnections=1 and refuses a second connection.
func TestMCSOneConnectionByDefault(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	s := mcsSession(t, h, 1)
	require.Equal(t, "1", s.Lead().Params()["MaxConnections"])
	_, err := s.Join(ctxT(t), h.addr, 1)
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, [2]uint8{2, 6}, [2]uint8{le.Class, le.Detail})
	// A TSIH the target never gave is "session does not exist".
	_, err = initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, TSIH: s.TSIH() + 1, CID: 1})
	require.ErrorAs(t, err, &le)
	require.Equal(t, [2]uint8{2, 10}, [2]uint8{le.Class, le.Detail})
}

// TestMCSCmdSNOrderAcrossConnections: a command and a NOP-Out sent on one
// connection ahead of their CmdSN wait for the gap to be filled by a
// command on another connection, and are then answered on their own
// connection (the NOP-Out's turn comes in the other connection's reader
// and is handed over).
func TestMCSCmdSNOrderAcrossConnections(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2}})
	s := mcsSession(t, h, 2)
	a, b := s.Conns()[0], s.Conns()[1]
	require.NoError(t, a.TestUnitReady(ctxT(t), 0))

	gap := a.NextCmdSN() // filled last, on a
	turIT, nopIT := b.NextITT(), b.NextITT()+1
	sendTUR(t, b, turIT, b.NextCmdSN())
	var p pdu.PDU
	(&pdu.NOPOut{ITT: nopIT, TTT: pdu.ReservedTag, CmdSN: b.NextCmdSN(), ExpStatSN: b.ExpStatSN(), Data: []byte("ping")}).Encode(&p)
	require.NoError(t, b.SendPDU(&p))
	quiet(t, b, "ahead of the gap")

	fill := a.NextITT()
	sendTUR(t, a, fill, gap)
	readByITT(t, a, fill)
	got := readByITT(t, b, turIT, nopIT)
	require.Equal(t, pdu.OpSCSIResponse, got[turIT].Opcode())
	require.Equal(t, pdu.OpNOPIn, got[nopIT].Opcode())
	require.Equal(t, []byte("ping"), got[nopIT].Data)

	// Data-Out belongs on its command's connection.
	var d pdu.PDU
	(&pdu.DataOut{Final: true, ITT: turIT, TTT: 5, ExpStatSN: a.ExpStatSN(), Data: make([]byte, blockSize)}).Encode(&d)
	require.NoError(t, a.SendPDU(&d))
	rj, err := a.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, rj.Opcode())
	require.NoError(t, a.TestUnitReady(ctxT(t), 0))
	require.NoError(t, b.TestUnitReady(ctxT(t), 0))
}

// TestMCSSessionLeavesNoGoroutines: a session of several connections, with
// commands in flight, ends with Shutdown and leaves nothing running.
func TestMCSSessionLeavesNoGoroutines(t *testing.T) {
	snap := leakcheck.Take()
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 4}})
	s := mcsSession(t, h, 4)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range s.Conns() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && c.WriteBlocks(ctx, 0, 0, make([]byte, 64*blockSize), blockSize, false) == nil {
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	h.srv.Shutdown(sctx)
	cancel()
	wg.Wait()
	s.Close()
	require.Empty(t, h.srv.Sessions())
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) left after Shutdown:\n%s", len(left), leakcheck.Format(left))
	}
}

// TestMCSLogoutHandedOver: a Logout closing its connection, sent ahead
// of a CmdSN gap, gets its turn when another connection fills the gap; it
// is answered on its own connection, which then closes, and the session
// goes on.
func TestMCSLogoutHandedOver(t *testing.T) {
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{MaxConnections: 2}})
	s := mcsSession(t, h, 2)
	a, b := s.Conns()[0], s.Conns()[1]
	gap := a.NextCmdSN()
	litt := b.NextITT()
	var p pdu.PDU
	(&pdu.LogoutRequest{ReasonCode: pdu.LogoutCloseConnection, ITT: litt, CID: 1, CmdSN: b.NextCmdSN(), ExpStatSN: b.ExpStatSN()}).Encode(&p)
	require.NoError(t, b.SendPDU(&p))
	quiet(t, b, "logout ahead of the gap")
	fill := a.NextITT()
	sendTUR(t, a, fill, gap)
	readByITT(t, a, fill)
	got := readByITT(t, b, litt)
	require.Equal(t, pdu.OpLogoutResp, got[litt].Opcode())
	require.Equal(t, uint8(pdu.LogoutResponseSuccess), got[litt].Header[2])
	select {
	case <-b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the logged-out connection stayed open")
	}
	require.Eventually(t, func() bool { c := sessionConns(h); return len(c) == 1 && c[0] == 1 }, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, a.TestUnitReady(ctxT(t), 0))
}
