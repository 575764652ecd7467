package iscsi_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// events collects what an observer receives.
type events struct {
	mu   sync.Mutex
	list []iscsi.Event
}

func (e *events) Observe(ev iscsi.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, ev)
}

// wait returns the first event of kind that matches ok, waiting for it.
func (e *events) wait(t *testing.T, kind iscsi.EventKind, ok func(iscsi.Event) bool) iscsi.Event {
	t.Helper()
	var found iscsi.Event
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, ev := range e.list {
			if ev.Kind == kind && (ok == nil || ok(ev)) {
				found = ev
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "no %s event", kind)
	return found
}

// sessionOf returns the live session of initiator name.
func sessionOf(t *testing.T, srv *iscsi.Server, name string) iscsi.SessionInfo {
	t.Helper()
	for _, s := range srv.Sessions() {
		if s.InitiatorName == name {
			return s
		}
	}
	t.Fatalf("no session of %s", name)
	return iscsi.SessionInfo{}
}

func TestSessionStats(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	const name = "iqn.2026-11.io.iscsikit:stats"
	c := h.login(t, initiator.Options{InitiatorName: name})
	ctx := ctxT(t)

	// 256 KiB of write: 64 KiB immediate (FirstBurstLength), the rest
	// solicited with R2Ts of MaxBurstLength (256 KiB) each.
	data := bytes.Repeat([]byte{0xa5}, 256<<10)
	require.NoError(t, c.WriteBlocks(ctx, 0, 0, data, blockSize, false))
	got, err := c.ReadBlocks(ctx, 0, 0, 16, blockSize)
	require.NoError(t, err)
	require.Len(t, got, 16*blockSize)
	_, err = c.ReadBlocks(ctx, 0, lunBlocks, 1, blockSize) // beyond the end
	require.Error(t, err)
	resp, err := c.TaskManagement(ctx, pdu.TMFAbortTask, 0, 0x7777)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseNoTask), resp)

	s := sessionOf(t, h.srv, name)
	st := s.Stats
	require.Equal(t, uint64(2), st.Reads)
	require.Equal(t, uint64(1), st.Writes)
	require.Equal(t, uint64(2), st.Others, "the harness's TEST UNIT READYs")
	require.Equal(t, uint64(len(data)), st.BytesIn)
	require.Equal(t, uint64(16*blockSize), st.BytesOut)
	require.Equal(t, uint64(1), st.SenseKeys[scsi.SenseIllegalRequest])
	require.Equal(t, uint64(1), st.SenseKeys[scsi.SenseUnitAttention])
	require.Equal(t, uint64(2), st.ReadLatency.Count)
	require.Equal(t, uint64(1), st.WriteLatency.Count)
	require.Equal(t, map[string]uint64{"ABORT TASK": 1}, st.TaskManagement)
	require.Zero(t, st.QueueDepth)
	require.Equal(t, 128, st.MaxQueueDepth)
	require.Equal(t, "test", s.TargetAlias)

	require.Len(t, st.Connections, 1)
	cs := st.Connections[0]
	require.Equal(t, c.NetConn().LocalAddr().String(), cs.RemoteAddr)
	require.Equal(t, uint64(1), cs.R2Ts)
	require.Zero(t, cs.DigestErrors)
	// In: 5 commands (the write's 64 KiB immediate), the Data-Outs of
	// 192 KiB, 1 TMF, none with an AHS or digests. Out: Data-In,
	// responses, the R2T and the TMF response.
	require.GreaterOrEqual(t, cs.PDUsIn, uint64(7))
	require.Equal(t, 48*cs.PDUsIn+uint64(len(data)), cs.BytesIn)
	// The writer counts a PDU once written, which the initiator may see
	// first: 2 TEST UNIT READY responses, the R2T, the write's response,
	// the read's Data-In with status, the failed read's response and the
	// TMF response.
	require.Eventually(t, func() bool {
		cs := sessionOf(t, h.srv, name).Stats.Connections[0]
		// Headers, the read's data, and the sense data of the failed read.
		return cs.PDUsOut == 7 && cs.BytesOut > 7*48+16*blockSize+18
	}, 20*time.Second, 5*time.Millisecond, "%+v", sessionOf(t, h.srv, name).Stats.Connections[0])

	// The unit counts the same commands, for this nexus.
	lu := h.dev.Unit(0).Stats()
	require.Equal(t, uint64(2), lu.Reads)
	require.Equal(t, uint64(len(data)), lu.BytesIn)
	require.Len(t, lu.Nexuses, 1)
	require.True(t, strings.HasPrefix(lu.Nexuses[0].Nexus.InitiatorPort, name+",i,0x"))
}

func TestConnectionCountsDigestErrorsAndRejects(t *testing.T) {
	// At ErrorRecoveryLevel 1, so that the connection survives the
	// digest error (at level 0 it is dropped).
	h := startServer(t, iscsi.Options{Negotiation: negotiate.Config{ErrorRecoveryLevel: 1}})
	const name = "iqn.2026-11.io.iscsikit:digests"
	c := h.login(t, initiator.Options{InitiatorName: name, HeaderDigest: true, DataDigest: true,
		Keys: []negotiate.Pair{{Key: "ErrorRecoveryLevel", Value: "1"}}})
	// A write whose immediate data has a bad digest: the command is
	// rejected and the connection goes on.
	var p pdu.PDU
	cdb := []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	(&pdu.SCSICommand{Immediate: true, Final: true, Write: true, ITT: c.NextITT(), ExpectedDataTransferLength: blockSize,
		CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(), CDB: cdb, Data: make([]byte, blockSize)}).Encode(&p)
	b := c.Encode(&p)
	b[len(b)-1] ^= 0xff
	require.NoError(t, c.WriteRaw(b))
	require.Eventually(t, func() bool { return h.srv.Stats().DigestErrors == 1 }, 20*time.Second, 5*time.Millisecond)
	cs := sessionOf(t, h.srv, name).Stats.Connections[0]
	require.Equal(t, uint64(1), cs.DigestErrors)
	require.Equal(t, uint64(1), cs.Rejects)
	// Every PDU read counts its header digest, and the write its data
	// and data digest: 2 TEST UNIT READYs and the write.
	require.Equal(t, uint64(3), cs.PDUsIn)
	require.Equal(t, uint64(3*(48+4)+blockSize+4), cs.BytesIn)
}

func TestObserverEvents(t *testing.T) {
	var ev events
	h := startServer(t, iscsi.Options{Observer: &ev})
	lu := h.dev.Unit(0)
	lu.SetObserver(h.srv.UnitObserver("extent0"))
	defer lu.SetObserver(nil)
	ctx := ctxT(t)

	// A login to a target that does not exist fails.
	_, err := initiator.Dial(ctx, h.addr, initiator.Options{InitiatorName: "iqn.2026-11.io.iscsikit:lost", TargetName: "iqn.2026-11.io.iscsikit:nowhere"})
	require.Error(t, err)
	e := ev.wait(t, iscsi.EventLoginFailed, nil)
	require.Equal(t, uint16(0x0203), e.LoginStatus)
	require.Equal(t, "iqn.2026-11.io.iscsikit:lost", e.InitiatorName)
	require.Equal(t, "iqn.2026-11.io.iscsikit:nowhere", e.TargetName)
	require.Contains(t, e.Reason, "no target")
	require.NotEmpty(t, e.InitiatorAddr)
	require.False(t, e.Time.IsZero())

	// A login, a TMF, a reservation, and a logout.
	const name = "iqn.2026-11.io.iscsikit:watched"
	c := h.login(t, initiator.Options{InitiatorName: name})
	e = ev.wait(t, iscsi.EventLogin, func(e iscsi.Event) bool { return e.InitiatorName == name })
	require.Equal(t, testTarget, e.TargetName)
	require.NotZero(t, e.TSIH)
	require.Equal(t, initiator.DefaultISID, e.ISID)
	require.Equal(t, c.NetConn().LocalAddr().String(), e.InitiatorAddr)

	resp, err := c.TaskManagement(ctx, pdu.TMFLogicalUnitReset, scsi.EncodeLUN(0), 0)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseComplete), resp)
	e = ev.wait(t, iscsi.EventTaskManagement, nil)
	require.Equal(t, "LOGICAL UNIT RESET", e.TMF)
	require.Equal(t, scsi.EncodeLUN(0), e.LUN)
	require.Equal(t, name, e.InitiatorName)

	_, err = c.Command(ctx, scsi.EncodeLUN(0), []byte{0x16, 0, 0, 0, 0, 0}, nil, 0) // RESERVE(6)
	require.NoError(t, err)
	e = ev.wait(t, iscsi.EventUnit, nil)
	require.Equal(t, scsi.UnitReservationChanged, e.Unit.Kind)
	require.Equal(t, "RESERVE", e.Unit.Action)
	require.Equal(t, "extent0", e.UnitName)
	require.Equal(t, name, e.InitiatorName)
	require.Equal(t, testTarget, e.TargetName)

	require.NoError(t, c.Logout(ctx))
	e = ev.wait(t, iscsi.EventLogout, nil)
	require.Equal(t, name, e.InitiatorName)
	e = ev.wait(t, iscsi.EventSessionEnded, func(e iscsi.Event) bool { return e.InitiatorName == name })
	require.Equal(t, "logged out", e.Reason)

	// A session whose connection drops.
	const name2 = "iqn.2026-11.io.iscsikit:dropped"
	c2 := h.login(t, initiator.Options{InitiatorName: name2})
	c2.NetConn().Close()
	e = ev.wait(t, iscsi.EventConnectionEnded, func(e iscsi.Event) bool { return e.InitiatorName == name2 })
	require.Equal(t, "closed by the initiator", e.Reason)
	e = ev.wait(t, iscsi.EventSessionEnded, func(e iscsi.Event) bool { return e.InitiatorName == name2 })
	require.Equal(t, "closed by the initiator", e.Reason)

	// A unit attention: a LOGICAL UNIT RESET from one session reaches
	// the other.
	const a, b = "iqn.2026-11.io.iscsikit:a", "iqn.2026-11.io.iscsikit:b"
	ca := h.login(t, initiator.Options{InitiatorName: a})
	h.login(t, initiator.Options{InitiatorName: b})
	_, err = ca.TaskManagement(ctx, pdu.TMFLogicalUnitReset, scsi.EncodeLUN(0), 0)
	require.NoError(t, err)
	e = ev.wait(t, iscsi.EventUnit, func(e iscsi.Event) bool {
		return e.Unit.Kind == scsi.UnitAttentionRaised && e.InitiatorName == b
	})
	require.Equal(t, byte(0x29), e.Unit.Sense.ASC)
	require.Equal(t, byte(0x03), e.Unit.Sense.ASCQ)

	// Removing the target ends its sessions, with the cause.
	require.NoError(t, h.srv.RemoveTarget(testTarget))
	e = ev.wait(t, iscsi.EventSessionEnded, func(e iscsi.Event) bool { return e.InitiatorName == a })
	require.Contains(t, e.Reason, "removed")

	st := h.srv.Stats()
	require.Equal(t, uint64(1), st.LoginsFailed)
	require.Equal(t, uint64(4), st.Logins)
	require.Zero(t, st.EventsDropped)
}

// TestSlowObserverDoesNotStallIO blocks the observer and checks that
// commands, logins and task management go on, and that events beyond the
// queue are dropped and counted.
func TestSlowObserverDoesNotStallIO(t *testing.T) {
	release := make(chan struct{})
	var delivered sync.WaitGroup
	var mu sync.Mutex
	var got []iscsi.EventKind
	obs := iscsi.ObserverFunc(func(e iscsi.Event) {
		<-release
		mu.Lock()
		got = append(got, e.Kind)
		mu.Unlock()
		delivered.Done()
	})
	const queue = 4
	h := startServer(t, iscsi.Options{Observer: obs, ObserverQueue: queue})
	ctx := ctxT(t)
	c := h.login(t, initiator.Options{}) // login: the first event, taken by the observer, which blocks
	for i := 0; i < 20; i++ {
		_, err := c.TaskManagement(ctx, pdu.TMFAbortTask, 0, 0x1000+uint32(i))
		require.NoError(t, err)
		_, err = c.ReadBlocks(ctx, 0, uint64(i), 1, blockSize)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return h.srv.Stats().EventsDropped > 0 }, 20*time.Second, 5*time.Millisecond)
	dropped := h.srv.Stats().EventsDropped
	// 21 events: one being delivered, queue waiting, the rest dropped.
	require.Equal(t, uint64(21-1-queue), dropped)
	delivered.Add(1 + queue)
	close(release)
	delivered.Wait()
	mu.Lock()
	require.Equal(t, iscsi.EventLogin, got[0])
	for _, k := range got[1:] {
		require.Equal(t, iscsi.EventTaskManagement, k)
	}
	mu.Unlock()
	// The observer is called again for later events: expect the logout
	// events now that it is free (WaitGroup counts them).
	delivered.Add(2)
	require.NoError(t, c.Logout(ctx))
	delivered.Wait()
}

func TestObserverPanicIsContained(t *testing.T) {
	var logs syncbuf.Buffer
	calls := make(chan iscsi.EventKind, 16)
	obs := iscsi.ObserverFunc(func(e iscsi.Event) {
		calls <- e.Kind
		if e.Kind == iscsi.EventLogin {
			panic("observer bug")
		}
	})
	h := startServer(t, iscsi.Options{Observer: obs, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c := h.login(t, initiator.Options{})
	require.Equal(t, iscsi.EventLogin, <-calls)
	require.NoError(t, c.Logout(ctxT(t)))
	require.Equal(t, iscsi.EventLogout, <-calls)
	require.Contains(t, logs.String(), "panic in observer")
}

// TestLoginFloodLogs floods the server with failed logins from one
// address and checks that the log stays short, and that the session that
// follows still logs its login.
func TestLoginFloodLogs(t *testing.T) {
	var logs syncbuf.Buffer
	h := startServer(t, iscsi.Options{
		Logger:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		LogSessions: true,
	})
	const flood, workers = 1000, 8
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flood; i += workers {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := initiator.Dial(ctx, h.addr, initiator.Options{InitiatorName: "iqn.2026-11.io.iscsikit:flood", TargetName: "iqn.2026-11.io.iscsikit:nowhere"})
				cancel()
				if err == nil {
					t.Error("login to a missing target succeeded")
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Equal(t, uint64(flood), h.srv.Stats().LoginsFailed)
	lines := strings.Count(logs.String(), "\n")
	t.Logf("%d failed logins left %d log lines", flood, lines)
	require.Less(t, lines, 100, "log of a flood of %d failed logins:\n%s", flood, logs.String())

	c := h.login(t, initiator.Options{InitiatorName: "iqn.2026-11.io.iscsikit:after"})
	defer c.Close()
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `msg="session established"`) && strings.Contains(logs.String(), "iqn.2026-11.io.iscsikit:after")
	}, 20*time.Second, 5*time.Millisecond)
}

// TestSessionLogLevel checks that an established session is logged at
// DEBUG unless Options.LogSessions asks for INFO.
func TestSessionLogLevel(t *testing.T) {
	for _, tc := range []struct {
		logSessions bool
		level       string
	}{{false, "DEBUG"}, {true, "INFO"}} {
		var logs syncbuf.Buffer
		h := startServer(t, iscsi.Options{
			Logger:      slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			LogSessions: tc.logSessions,
		})
		c := h.login(t, initiator.Options{})
		require.Eventually(t, func() bool {
			return strings.Contains(logs.String(), "level="+tc.level+` msg="session established"`)
		}, 20*time.Second, 5*time.Millisecond, "%s", logs.String())
		c.Close()
	}
}
