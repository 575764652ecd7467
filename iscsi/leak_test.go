package iscsi_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestShutdownLeavesNoGoroutines shuts a busy server down: sessions with
// commands in flight (one stuck in a device that hangs), an idle session
// kept alive with NOP-Ins, a discovery session, a task management request,
// a connection stuck halfway through login and one that sent half a
// header. After Shutdown (whose deadline forces Close) and the device
// letting go, no goroutine the server started is left.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	snap := leakcheck.Take()
	hold := make(chan struct{})
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{NopInterval: 20 * time.Millisecond, NopTimeout: time.Second}, backend.NewMemory(lunBlocks*blockSize), slow)

	busy := h.loginLUNs(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0x70, 1}}, 0, 1)
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	stuck := make(chan error, 1)
	go func() {
		_, err := busy.ReadBlocks(context.Background(), scsi.EncodeLUN(1), 0, 8, blockSize)
		stuck <- err
	}()
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond)
	writer := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0x70, 2}})
	go func() {
		for writer.WriteBlocks(context.Background(), 0, 0, make([]byte, 64*blockSize), blockSize, false) == nil {
		}
	}()
	idle := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0x70, 3}})
	disc, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{})
	require.NoError(t, err)
	defer disc.Close()
	tmf := make(chan struct{})
	go func() {
		defer close(tmf)
		busy.TaskManagement(context.Background(), pdu.TMFAbortTaskSet, scsi.EncodeLUN(1), pdu.ReservedTag)
	}()
	halfLogin, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{})
	require.NoError(t, err)
	defer halfLogin.Close()
	var lp pdu.PDU
	(&pdu.LoginRequest{CSG: 0, NSG: 1, ISID: [6]byte{0x80, 0, 0, 0, 0x70, 4}, Data: []byte("InitiatorName=iqn.2026-11.io.example:half\x00SessionType=Normal\x00TargetName=" + testTarget + "\x00AuthMethod=None\x00")}).Encode(&lp)
	require.NoError(t, halfLogin.SendPDU(&lp))
	half, err := net.Dial("tcp", h.addr)
	require.NoError(t, err)
	defer half.Close()
	_, err = half.Write(make([]byte, 20))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // NOP-Ins flow, the writer writes

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = h.srv.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "these initiators ignore the logout request")
	require.Empty(t, h.srv.Sessions())
	close(hold)
	require.Error(t, <-stuck, "the held command died with its connection")
	<-tmf
	// The half-logged-in connection has no reader: read until the end.
	for {
		if _, err := halfLogin.ReadPDU(ctxT(t)); err != nil {
			require.ErrorIs(t, err, initiator.ErrConnClosed)
			break
		}
	}
	for i, c := range []*initiator.Conn{busy, writer, idle, disc, halfLogin} {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d survived Close", i)
		}
		c.Close()
	}
	half.Close()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) left after Shutdown:\n%s", len(left), leakcheck.Format(left))
	}
}

// TestShutdownHonorsItsDeadlineWithAHungDevice: a logout waits for the
// session's commands, one of which hangs in its device; Shutdown must
// still return once its context ends, and nothing is left once the device
// lets go.
func TestShutdownHonorsItsDeadlineWithAHungDevice(t *testing.T) {
	leakcheck.Check(t)
	hold := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(hold)
		}
	}()
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, slow)
	c := h.login(t, initiator.Options{})
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	go c.ReadBlocks(context.Background(), 0, 0, 8, blockSize)
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond)
	go c.Logout(context.Background())
	time.Sleep(50 * time.Millisecond) // the logout is waiting for the read

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(5 * time.Second):
		close(hold)
		released = true
		<-done
		t.Fatal("Shutdown ignored its deadline while a device hung")
	}
	close(hold)
	released = true
}

// TestShutdownHonorsItsDeadlineWhileReinstating: a login that reinstates
// a session whose command hangs in its device waits for that command;
// Shutdown must still return once its context ends.
func TestShutdownHonorsItsDeadlineWhileReinstating(t *testing.T) {
	leakcheck.Check(t)
	hold := make(chan struct{})
	released := false
	defer func() {
		if !released {
			close(hold)
		}
	}()
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, slow)
	c := h.login(t, initiator.Options{})
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	go c.ReadBlocks(context.Background(), 0, 0, 8, blockSize)
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond)
	go func() {
		again, err := initiator.Dial(context.Background(), h.addr, initiator.Options{TargetName: testTarget, Timeout: 20 * time.Second})
		if err == nil {
			again.Close()
		}
	}()
	time.Sleep(100 * time.Millisecond) // the reinstating login waits for the read

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	select {
	case err := <-done:
		// Connections still logging in are closed at once, so Shutdown
		// may well finish before its deadline.
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
		}
	case <-time.After(5 * time.Second):
		close(hold)
		released = true
		<-done
		t.Fatal("Shutdown ignored its deadline while a reinstatement waited for a hung device")
	}
	close(hold)
	released = true
}
