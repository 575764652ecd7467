package iscsi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// unitsHarness is a server whose target has one LUN per device given, each
// of lunBlocks 512-byte blocks, logging into logs.
type unitsHarness struct {
	harness
	logs *syncbuf.Buffer
}

// startUnits serves devs as LUNs 0, 1, ... of testTarget.
func startUnits(t *testing.T, opt iscsi.Options, devs ...backend.Device) *unitsHarness {
	t.Helper()
	return startUnitsConfig(t, opt, scsi.UnitConfig{BlockSize: blockSize, Serial: "fault", WriteCache: true}, devs...)
}

// startUnitsConfig is startUnits with every unit configured as cfg.
func startUnitsConfig(t *testing.T, opt iscsi.Options, cfg scsi.UnitConfig, devs ...backend.Device) *unitsHarness {
	t.Helper()
	logs := new(syncbuf.Buffer)
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	srv, err := iscsi.NewServer(opt)
	require.NoError(t, err)
	dev := scsi.NewTarget()
	for i, d := range devs {
		lu, err := scsi.NewLogicalUnit(d, cfg)
		require.NoError(t, err)
		require.NoError(t, dev.Attach(uint16(i), lu))
	}
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: testTarget, Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, srv.Shutdown(ctx))
		require.ErrorIs(t, <-served, iscsi.ErrServerClosed)
	})
	return &unitsHarness{harness: harness{srv: srv, addr: l.Addr().String(), dev: dev}, logs: logs}
}

// loginLUN clears the power-on unit attention of every LUN given.
func (h *unitsHarness) loginLUNs(t *testing.T, opt initiator.Options, luns ...uint64) *initiator.Conn {
	t.Helper()
	c := h.login(t, opt)
	for _, l := range luns[1:] {
		_ = c.TestUnitReady(ctxT(t), scsi.EncodeLUN(uint16(l)))
	}
	return c
}

// informationField returns the INFORMATION field of fixed or descriptor
// sense data and whether it is valid.
func informationField(t *testing.T, sense []byte) (uint64, bool) {
	t.Helper()
	require.NotEmpty(t, sense)
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		require.GreaterOrEqual(t, len(sense), 8)
		return uint64(binary.BigEndian.Uint32(sense[3:7])), sense[0]&0x80 != 0
	case 0x72, 0x73:
		for d := sense[8:]; len(d) >= 2; d = d[2+int(d[1]):] {
			if d[0] == 0 && len(d) >= 12 {
				return binary.BigEndian.Uint64(d[4:12]), d[2]&0x80 != 0
			}
			if 2+int(d[1]) > len(d) {
				break
			}
		}
		return 0, false
	}
	t.Fatalf("bad sense response code %#x", sense[0])
	return 0, false
}

func TestEIOBecomesMediumErrorWithLBA(t *testing.T) {
	leakcheck.Check(t)
	faulty := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, faulty)
	c := h.login(t, initiator.Options{})
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, randomData(t, 64*blockSize), blockSize, false))

	const badLBA = 37
	faulty.Add(backend.Fault{Op: backend.FaultRead | backend.FaultWrite, Off: badLBA * blockSize, Len: blockSize, Fail: true})
	tests := []struct {
		name  string
		fault *backend.Fault // replaces the bad block for this case
		run   func() error
		asc   byte
		lba   uint64
	}{
		{"read", nil, func() error { _, err := c.ReadBlocks(ctxT(t), 0, 32, 16, blockSize); return err }, 0x11, badLBA},
		{"write", nil, func() error { return c.WriteBlocks(ctxT(t), 0, 30, make([]byte, 16*blockSize), blockSize, false) }, 0x0c, badLBA},
		{
			// A write torn 1700 bytes in: blocks 200..202 are whole, 203
			// is the first one that did not make it.
			"torn write", &backend.Fault{Op: backend.FaultWrite, Fail: true, Torn: true, TearAt: 1700, Count: 1},
			func() error { return c.WriteBlocks(ctxT(t), 0, 200, make([]byte, 8*blockSize), blockSize, false) }, 0x0c, 203,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fault != nil {
				faulty.Clear()
				faulty.Add(*tt.fault)
			}
			var se *initiator.StatusError
			require.ErrorAs(t, tt.run(), &se)
			key, asc, _ := se.SenseKey()
			require.Equal(t, byte(scsi.SenseMediumError), key)
			require.Equal(t, tt.asc, asc)
			info, valid := informationField(t, se.Sense)
			require.True(t, valid, "the INFORMATION field names the failed LBA")
			require.Equal(t, tt.lba, info)
		})
	}
	// Blocks outside the bad one still work.
	_, err := c.ReadBlocks(ctxT(t), 0, 0, 16, blockSize)
	require.NoError(t, err)
}

func TestSlowLUNDoesNotBlockOthersOrNops(t *testing.T) {
	leakcheck.Check(t)
	hold := make(chan struct{})
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	defer release()
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, backend.NewMemory(lunBlocks*blockSize), slow)
	c := h.loginLUNs(t, initiator.Options{}, 0, 1)
	slow.Add(backend.Fault{Op: backend.FaultRead | backend.FaultWrite, Hold: hold})

	stuck := make(chan error, 1)
	go func() {
		_, err := c.ReadBlocks(ctxT(t), scsi.EncodeLUN(1), 0, 8, blockSize)
		stuck <- err
	}()
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond)

	// LUN 0, NOP-Out and another session all carry on meanwhile.
	data := randomData(t, 32*blockSize)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 100, data, blockSize, true))
	back, err := c.ReadBlocks(ctxT(t), 0, 100, 32, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
	require.NoError(t, c.Nop(ctxT(t), []byte("ping")))
	other := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 2}})
	require.NoError(t, other.TestUnitReady(ctxT(t), 0))
	select {
	case err := <-stuck:
		t.Fatalf("the held read finished early: %v", err)
	default:
	}
	release()
	require.NoError(t, <-stuck)
}

func TestAbortTaskWhileIOInFlight(t *testing.T) {
	leakcheck.Check(t)
	hold := make(chan struct{})
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, slow)
	c := h.login(t, initiator.Options{})
	before := randomData(t, 8*blockSize)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, before, blockSize, false))
	slow.Add(backend.Fault{Op: backend.FaultWrite, Hold: hold, Count: 1})

	sent := make(chan uint32, 1)
	result := make(chan error, 1)
	go func() {
		cdb := make([]byte, 16)
		cdb[0] = 0x8a
		binary.BigEndian.PutUint32(cdb[10:14], 8)
		_, err := c.Do(ctxT(t), &initiator.Request{CDB: cdb, DataOut: randomData(t, 8*blockSize), OnSent: func(itt, _ uint32) { sent <- itt }})
		result <- err
	}()
	itt := <-sent
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond, "the write reaches the device")

	// ABORT TASK waits for the write in flight; let it go a moment later.
	tmf := make(chan uint8, 1)
	go func() {
		resp, err := c.TaskManagement(ctxT(t), pdu.TMFAbortTask, 0, itt)
		require.NoError(t, err)
		tmf <- resp
	}()
	time.Sleep(50 * time.Millisecond)
	close(hold)
	require.Equal(t, uint8(pdu.TMFResponseComplete), <-tmf)
	require.ErrorIs(t, <-result, initiator.ErrTaskAborted)

	// The session is clean: no stale task, the window is open, I/O works.
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	data := randomData(t, 8*blockSize)
	require.NoError(t, c.WriteBlocks(ctxT(t), 0, 0, data, blockSize, true))
	back, err := c.ReadBlocks(ctxT(t), 0, 0, 8, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
}

// panicky is a device that panics when a read touches byte 0 of block 5.
type panicky struct{ backend.Device }

func (p panicky) ReadAt(b []byte, off int64) (int, error) {
	if off <= 5*blockSize && off+int64(len(b)) > 5*blockSize {
		panic("device bug")
	}
	return p.Device.ReadAt(b, off)
}

func TestPanicEndsOnlyItsConnection(t *testing.T) {
	leakcheck.Check(t)
	h := startUnits(t, iscsi.Options{}, panicky{backend.NewMemory(lunBlocks * blockSize)})
	bad := h.login(t, initiator.Options{})
	good := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 3}})

	_, err := bad.ReadBlocks(ctxT(t), 0, 0, 8, blockSize)
	require.ErrorIs(t, err, initiator.ErrConnClosed, "the panicking connection is closed")
	require.Contains(t, h.logs.String(), "panic")
	require.Contains(t, h.logs.String(), "goroutine ", "the stack is logged")

	data := randomData(t, 4*blockSize)
	require.NoError(t, good.WriteBlocks(ctxT(t), 0, 100, data, blockSize, false))
	back, err := good.ReadBlocks(ctxT(t), 0, 100, 4, blockSize)
	require.NoError(t, err)
	require.Equal(t, data, back)
	// And a new session logs in.
	again := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 4}})
	require.NoError(t, again.TestUnitReady(ctxT(t), 0))
}

// TestShutdownWaitsForCommandsInDevices ends a session while one of its
// commands is held in its device: Shutdown returns only once that command
// has finished and the nexus loss is reported, so an embedder may close
// its logical units right after it.
func TestShutdownWaitsForCommandsInDevices(t *testing.T) {
	hold := make(chan struct{})
	var releasedAt atomic.Bool
	slow := backend.NewFaulty(backend.NewMemory(lunBlocks * blockSize))
	h := startUnits(t, iscsi.Options{}, slow)
	c := h.loginLUNs(t, initiator.Options{}, 0)
	slow.Add(backend.Fault{Op: backend.FaultRead, Hold: hold})
	go c.ReadBlocks(ctxT(t), 0, 0, 8, blockSize)
	require.Eventually(t, func() bool { return slow.Hits() > 0 }, 5*time.Second, time.Millisecond)

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		err := h.srv.Shutdown(ctx)
		if !releasedAt.Load() {
			err = errors.New("Shutdown returned while a command was still in its device")
		}
		shut <- err
	}()
	c.Close() // the Go initiator does not answer the logout request
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned before the held command finished: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	releasedAt.Store(true)
	close(hold)
	require.NoError(t, <-shut)
}
