package iscsi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

const (
	testTarget = "iqn.2026-11.io.iscsikit:test"
	blockSize  = 512
	lunBlocks  = 8192 // 4 MiB
)

// harness is a server with one target (LUN 0, a memory device) listening
// on a loopback port.
type harness struct {
	srv  *iscsi.Server
	addr string
	dev  *scsi.Target
}

func startServer(t testing.TB, opt iscsi.Options) *harness {
	t.Helper()
	srv, err := iscsi.NewServer(opt)
	require.NoError(t, err)
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(lunBlocks*blockSize), scsi.UnitConfig{
		BlockSize: blockSize, Serial: "test0", WriteCache: true,
	})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: testTarget, Alias: "test", Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		require.ErrorIs(t, <-served, iscsi.ErrServerClosed)
		lu.Close()
	})
	return &harness{srv: srv, addr: l.Addr().String(), dev: dev}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// login opens a normal session and clears the power-on unit attention.
func (h *harness) login(t testing.TB, opt initiator.Options) *initiator.Conn {
	t.Helper()
	if opt.TargetName == "" {
		opt.TargetName = testTarget
	}
	c, err := initiator.Dial(ctxT(t), h.addr, opt)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_ = c.TestUnitReady(ctxT(t), 0) // consumes POWER ON OCCURRED
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	return c
}

func randomData(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func TestDiscovery(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{})
	require.NoError(t, err)
	defer c.Close()
	for _, what := range []string{"All", testTarget} {
		targets, err := c.SendTargets(ctxT(t), what)
		require.NoError(t, err, what)
		require.Equal(t, map[string][]string{testTarget: {h.addr + ",1"}}, targets, what)
	}
	targets, err := c.SendTargets(ctxT(t), "iqn.2026-11.io.iscsikit:nope")
	require.NoError(t, err)
	require.Empty(t, targets)

	// SCSI commands have no place in a discovery session.
	_, err = c.Command(ctxT(t), 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	var rej *initiator.RejectError
	require.ErrorAs(t, err, &rej)
	require.NoError(t, c.Logout(ctxT(t)))
}

func TestLoginErrors(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	tests := []struct {
		name   string
		opt    initiator.Options
		status uint16
	}{
		{"unknown target", initiator.Options{TargetName: "iqn.2026-11.io.iscsikit:missing"}, 0x0203},
		{"bad initiator name", initiator.Options{TargetName: testTarget, InitiatorName: "not a name"}, 0x0200},
		{"unknown session type", initiator.Options{TargetName: testTarget, Keys: []negotiate.Pair{{Key: "SessionType", Value: "Bogus"}}}, 0x0209},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := initiator.Dial(ctxT(t), h.addr, tt.opt)
			if err == nil {
				c.Close()
			}
			var le *initiator.LoginError
			require.ErrorAs(t, err, &le)
			require.Equal(t, tt.status, le.Status(), le.Error())
		})
	}
}

func TestReadWrite(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	yes, no := "Yes", "No"
	variants := []struct {
		name string
		opt  initiator.Options
	}{
		{"defaults", initiator.Options{}},
		{"digests", initiator.Options{HeaderDigest: true, DataDigest: true}},
		{"no immediate data, R2T only", initiator.Options{Keys: []negotiate.Pair{{Key: "ImmediateData", Value: no}, {Key: "InitialR2T", Value: yes}}}},
		{"unsolicited data-out", initiator.Options{Keys: []negotiate.Pair{{Key: "ImmediateData", Value: no}, {Key: "InitialR2T", Value: no}, {Key: "FirstBurstLength", Value: "16384"}}}},
		{"small segments and bursts", initiator.Options{Keys: []negotiate.Pair{
			{Key: "MaxRecvDataSegmentLength", Value: "4096"}, {Key: "MaxBurstLength", Value: "8192"},
			{Key: "FirstBurstLength", Value: "4096"}, {Key: "MaxOutstandingR2T", Value: "4"}}}},
	}
	for i, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			c := h.login(t, v.opt)
			for j, blocks := range []uint32{1, 8, 129, 600} {
				lba := uint64(i*1000 + j*10)
				data := randomData(t, int(blocks)*blockSize)
				require.NoError(t, c.WriteBlocks(ctxT(t), 0, lba, data, blockSize, j%2 == 0))
				got, err := c.ReadBlocks(ctxT(t), 0, lba, blocks, blockSize)
				require.NoError(t, err)
				require.True(t, bytes.Equal(data, got), "blocks %d", blocks)
			}
			require.Empty(t, c.Violations())
			require.NoError(t, c.Logout(ctxT(t)))
		})
	}
}

func TestCapacityAndLUNs(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	blocks, bs, err := c.ReadCapacity16(ctxT(t), 0)
	require.NoError(t, err)
	require.EqualValues(t, lunBlocks, blocks)
	require.EqualValues(t, blockSize, bs)
	luns, err := c.ReportLUNs(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, []uint64{0}, luns)
}

func TestCommandWindowFollowsQueueDepth(t *testing.T) {
	h := startServer(t, iscsi.Options{QueueDepth: 16})
	c := h.login(t, initiator.Options{})
	exp, maxSN := c.Window()
	require.EqualValues(t, 15, maxSN-exp)

	// A target's own queue depth replaces the server's.
	const deep = "iqn.2026-11.io.iscsikit:deep"
	require.NoError(t, h.srv.AddTarget(&iscsi.Target{Name: deep, Device: h.dev, QueueDepth: 64}))
	c = h.login(t, initiator.Options{TargetName: deep, ISID: [6]byte{0x80, 0, 0, 0, 0x64, 1}})
	exp, maxSN = c.Window()
	require.EqualValues(t, 63, maxSN-exp)
}

func TestBeyondEndOfLUN(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	_, err := c.ReadBlocks(ctxT(t), 0, lunBlocks, 1, blockSize)
	var se *initiator.StatusError
	require.ErrorAs(t, err, &se)
	key, asc, _ := se.SenseKey()
	require.EqualValues(t, 0x05, key)
	require.EqualValues(t, 0x21, asc)
	// The session carries on.
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
}

func TestResidualsAndCollapse(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{{Key: "MaxRecvDataSegmentLength", Value: "4096"}}})
	read10 := []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0} // 16 blocks = 8 KiB

	r, err := c.Command(ctxT(t), 0, read10, nil, 16*blockSize)
	require.NoError(t, err)
	require.NoError(t, r.Check())
	require.Equal(t, 2, r.DataInPDUs, "8 KiB in 4 KiB segments")
	require.True(t, r.StatusInDataIn)

	r, err = c.Command(ctxT(t), 0, read10, nil, 10000)
	require.NoError(t, err)
	require.NoError(t, r.Check())
	require.True(t, r.Underflow)
	require.EqualValues(t, 10000-16*blockSize, r.Residual)

	r, err = c.Command(ctxT(t), 0, read10, nil, 200)
	require.NoError(t, err)
	require.NoError(t, r.Check())
	require.True(t, r.Overflow)
	require.EqualValues(t, 16*blockSize-200, r.Residual)
	require.Len(t, r.Data, 200)
}

func TestManySessions(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	const sessions = 12
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				var isid [6]byte
				isid[0], isid[5] = 0x80, byte(i+1)
				ctx := ctxT(t)
				c, err := initiator.Dial(ctx, h.addr, initiator.Options{TargetName: testTarget, ISID: isid})
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.TestUnitReady(ctx, 0)
				for round := range 5 {
					lba := uint64(i*200 + round*32)
					data := make([]byte, 32*blockSize)
					rand.Read(data)
					if err := c.WriteBlocks(ctx, 0, lba, data, blockSize, false); err != nil {
						return err
					}
					got, err := c.ReadBlocks(ctx, 0, lba, 32, blockSize)
					if err != nil {
						return err
					}
					if !bytes.Equal(got, data) {
						return fmt.Errorf("session %d: data mismatch at lba %d", i, lba)
					}
				}
				return c.Logout(ctx)
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestConcurrentCommandsOneSession(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{byte(i)}, 8*blockSize)
			if err := c.WriteBlocks(ctxT(t), 0, uint64(i*8), data, blockSize, false); err != nil {
				errs <- err
				return
			}
			got, err := c.ReadBlocks(ctxT(t), 0, uint64(i*8), 8, blockSize)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("mismatch")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

func TestTaskManagement(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	resp, err := c.TaskManagement(ctxT(t), pdu.TMFAbortTask, 0, 0x7777)
	require.NoError(t, err)
	require.EqualValues(t, pdu.TMFResponseNoTask, resp)
	for _, fn := range []uint8{pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset} {
		resp, err = c.TaskManagement(ctxT(t), fn, 0, pdu.ReservedTag)
		require.NoError(t, err)
		require.EqualValues(t, pdu.TMFResponseComplete, resp, "function %d", fn)
	}
	resp, err = c.TaskManagement(ctxT(t), pdu.TMFLogicalUnitReset, scsi.EncodeLUN(9), pdu.ReservedTag)
	require.NoError(t, err)
	require.EqualValues(t, pdu.TMFResponseNoLUN, resp)
	resp, err = c.TaskManagement(ctxT(t), pdu.TMFTaskReassign, 0, 1)
	require.NoError(t, err)
	require.EqualValues(t, pdu.TMFResponseNoReassignSupport, resp)
	// A second session of the same initiator (another ISID, as a second
	// path would use).
	other := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 2}})
	resp, err = c.TaskManagement(ctxT(t), pdu.TMFTargetWarmReset, 0, pdu.ReservedTag)
	require.NoError(t, err)
	require.EqualValues(t, pdu.TMFResponseComplete, resp)
	// A warm reset raises a unit attention for the initiator's other
	// sessions, reported once; the issuer learnt of it from the response.
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	var se *initiator.StatusError
	require.ErrorAs(t, other.TestUnitReady(ctxT(t), 0), &se)
	key, asc, ascq := se.SenseKey()
	require.Equal(t, [3]byte{0x06, 0x29, 0x02}, [3]byte{key, asc, ascq})
	require.NoError(t, other.TestUnitReady(ctxT(t), 0))
}

func TestRejectsMalformedPDUs(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})

	// An opcode no initiator may send.
	var p pdu.PDU
	p.Header[0] = 0x1f
	binary.BigEndian.PutUint32(p.Header[16:], c.NextITT())
	require.NoError(t, c.SendPDU(&p))
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, got.Opcode())
	var rej pdu.Reject
	require.NoError(t, rej.Decode(got))
	require.Equal(t, pdu.RejectNotSupported, rej.Reason)

	// Data-Out for a task that does not exist.
	d := pdu.DataOut{Final: true, ITT: 0x4242, TTT: pdu.ReservedTag, ExpStatSN: c.ExpStatSN(), Data: make([]byte, 512)}
	d.Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got, err = c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpReject, got.Opcode())

	// The session still works.
	data := randomData(t, 4096)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 7, data, blockSize, false))
	back, err := c.ReadBlocks(ctxT(t), 0, 7, 8, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
}

func TestGarbageDoesNotDisturbOthers(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	for _, junk := range [][]byte{
		bytes.Repeat([]byte{0xff}, 48),
		append([]byte{0x03, 0x87, 0, 0, 0xff, 0xff, 0xff, 0xff}, make([]byte, 40)...), // login with a huge data segment
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		nc, err := net.Dial("tcp", h.addr)
		require.NoError(t, err)
		_, _ = nc.Write(junk)
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := nc.Read(buf); err != nil {
				break // the target hangs up (after a login reject, if any)
			}
		}
		nc.Close()
	}
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
}

func TestSessionReinstatement(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	first := h.login(t, initiator.Options{})
	second := h.login(t, initiator.Options{}) // same ISID and initiator name
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old session survived reinstatement")
	}
	require.NoError(t, second.TestUnitReady(ctxT(t), 0))
	require.Len(t, h.srv.Sessions(), 1)
}

// TestSameISIDThroughTwoPortalGroups: a multipath initiator that uses
// one ISID through two portal groups has two I_T nexuses, so a login
// through the second group reinstates nothing (RFC 7143 §4.4.3); a
// second login through the same group still reinstates.
func TestSameISIDThroughTwoPortalGroups(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go h.srv.ServePortal(l, 2)
	viaOne := h.login(t, initiator.Options{})
	c, err := initiator.Dial(ctxT(t), l.Addr().String(), initiator.Options{TargetName: testTarget})
	require.NoError(t, err)
	defer c.Close()
	_ = c.TestUnitReady(ctxT(t), 0)
	require.NoError(t, viaOne.TestUnitReady(ctxT(t), 0))
	require.Len(t, h.srv.Sessions(), 2)

	again, err := initiator.Dial(ctxT(t), l.Addr().String(), initiator.Options{TargetName: testTarget})
	require.NoError(t, err)
	defer again.Close()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the session through portal group 2 survived its reinstatement")
	}
	require.NoError(t, viaOne.TestUnitReady(ctxT(t), 0))
	require.Len(t, h.srv.Sessions(), 2)
}

func TestNopTimeoutDropsDeadConnection(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: 50 * time.Millisecond, NopTimeout: 200 * time.Millisecond})
	live := h.login(t, initiator.Options{})
	dead := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 9}, ManualNOPIn: true})
	select {
	case <-dead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection that never answers NOP-In was not dropped")
	}
	require.NoError(t, live.TestUnitReady(ctxT(t), 0))
	require.Positive(t, live.PingsAnswered())
}

func TestSessionsListing(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{InitiatorName: "iqn.2026-11.io.example:host1"})
	list := h.srv.Sessions()
	require.Len(t, list, 1)
	s := list[0]
	require.Equal(t, "iqn.2026-11.io.example:host1", s.InitiatorName)
	require.Equal(t, testTarget, s.TargetName)
	require.Equal(t, 1, s.Connections)
	require.NotZero(t, s.TSIH)
	require.NoError(t, c.Logout(ctxT(t)))
	require.Eventually(t, func() bool { return len(h.srv.Sessions()) == 0 }, 5*time.Second, 10*time.Millisecond)
}

func TestShutdownLogsSessionsOut(t *testing.T) {
	srvDone := make(chan error, 1)
	h := startServer(t, iscsi.Options{})
	c := h.login(t, initiator.Options{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srvDone <- h.srv.Shutdown(ctx)
	}()
	// The target asks for a logout with an Async Message; an initiator
	// that complies lets Shutdown finish without waiting for its deadline.
	p, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	require.Equal(t, pdu.OpAsyncMsg, p.Opcode())
	var m pdu.AsyncMessage
	require.NoError(t, m.Decode(p))
	require.EqualValues(t, pdu.AsyncLogoutRequest, m.AsyncEvent)
	require.NoError(t, c.Logout(ctxT(t)))
	require.NoError(t, <-srvDone)
}

func TestPortalGroups(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go h.srv.ServePortal(l2, 2)
	addr2 := l2.Addr().String()
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(1<<20), scsi.UnitConfig{})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	const only2 = "iqn.2026-11.io.iscsikit:only2"
	require.NoError(t, h.srv.AddTarget(&iscsi.Target{Name: only2, Device: dev, PortalGroups: []uint16{2}}))

	// Portal group 1 sees only the target served everywhere, with both
	// portals; group 2 sees both targets.
	d1, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{})
	require.NoError(t, err)
	defer d1.Close()
	got, err := d1.SendTargets(ctxT(t), "All")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{testTarget: {h.addr + ",1", addr2 + ",2"}}, got)
	d2, err := initiator.Dial(ctxT(t), addr2, initiator.Options{})
	require.NoError(t, err)
	defer d2.Close()
	got, err = d2.SendTargets(ctxT(t), "All")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{testTarget: {h.addr + ",1", addr2 + ",2"}, only2: {addr2 + ",2"}}, got)

	// Logging in through a portal that does not serve the target fails.
	_, err = initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: only2})
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, uint16(0x0203), le.Status())
	c, err := initiator.Dial(ctxT(t), addr2, initiator.Options{TargetName: only2})
	require.NoError(t, err)
	require.NoError(t, c.Logout(ctxT(t)))
}

// TestServerErrorsAreInspectable checks that the Server's target and
// portal calls fail with errors a caller can branch on.
func TestServerErrorsAreInspectable(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate target", h.srv.AddTarget(&iscsi.Target{Name: testTarget, Device: h.dev}), iscsi.ErrTargetExists},
		{"target without a device", h.srv.AddTarget(&iscsi.Target{Name: testTarget + "x"}), iscsi.ErrNoDevice},
		{"bad target name", h.srv.AddTarget(&iscsi.Target{Name: "iqn.bad", Device: h.dev}), iscsi.ErrInvalidName},
		{"unknown target", h.srv.RemoveTarget(testTarget + "-unknown"), iscsi.ErrTargetNotFound},
	}
	for _, tt := range tests {
		require.ErrorIs(t, tt.err, tt.want, tt.name)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	require.ErrorIs(t, h.srv.ServePortal(l, 0), iscsi.ErrReservedTag)
	// The target that was there is untouched by the failed calls.
	require.NotNil(t, h.srv.Target(testTarget))
	require.NoError(t, h.srv.RemoveTarget(testTarget))
	require.ErrorIs(t, h.srv.RemoveTarget(testTarget), iscsi.ErrTargetNotFound)
}
