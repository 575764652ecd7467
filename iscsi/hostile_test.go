package iscsi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/leakcheck"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// healthy runs verified writes and reads on its own session until stop is
// called, which returns the first error and how many rounds completed.
func healthy(t *testing.T, h *harness, isid byte) (stop func() (int, error)) {
	t.Helper()
	c := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0xee, isid}})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var rounds int
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		lba := uint64(4096 + 64*int(isid))
		for ctx.Err() == nil {
			data := randomData(t, 16*blockSize)
			if err := c.WriteBlocks(ctx, 0, lba, data, blockSize, false); err != nil {
				if ctx.Err() == nil {
					firstErr = err
				}
				return
			}
			back, err := c.ReadBlocks(ctx, 0, lba, 16, blockSize)
			if err != nil {
				if ctx.Err() == nil {
					firstErr = err
				}
				return
			}
			if string(back) != string(data) {
				firstErr = errors.New("healthy session read back different data")
				return
			}
			rounds++
		}
	}()
	return func() (int, error) {
		cancel()
		wg.Wait()
		return rounds, firstErr
	}
}

// outcome is what a violation led to.
type outcome int

const (
	gotReject outcome = iota + 1
	gotDropped
	gotIgnored // no answer; the session still works
)

// awaitOutcome reads what the target does after a violation on c: a
// Reject, a dropped connection, or (after quiet) nothing.
func awaitOutcome(t *testing.T, c *initiator.Conn, quiet time.Duration) (outcome, *pdu.Reject) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	for {
		p, err := c.ReadPDU(ctx)
		if err != nil {
			select {
			case <-c.Done():
				return gotDropped, nil
			default:
			}
			require.ErrorIs(t, err, context.DeadlineExceeded)
			return gotIgnored, nil
		}
		if p.Opcode() == pdu.OpReject {
			var r pdu.Reject
			require.NoError(t, r.Decode(p))
			return gotReject, &r
		}
	}
}

// dropped waits for the target to hang up on a raw connection.
func dropped(t *testing.T, nc net.Conn, within time.Duration) bool {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func encode(m interface{ Encode(*pdu.PDU) }, digests bool) []byte {
	var p pdu.PDU
	m.Encode(&p)
	var b []byte
	w := pdu.NewWriter(writerFunc(func(x []byte) (int, error) { b = append(b, x...); return len(x), nil }))
	w.SetDigests(digests, digests)
	if err := w.WritePDU(&p); err != nil {
		panic(err)
	}
	return b
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestProtocolViolations sends each violation on its own session while
// another session does verified I/O: each gets a Reject, a dropped
// connection or (where RFC 7143 says so) silence, never a hang, and the
// healthy session never notices.
func TestProtocolViolations(t *testing.T) {
	leakcheck.Check(t)
	h := startServer(t, iscsi.Options{NopInterval: -1, LoginTimeout: 2 * time.Second})
	stop := healthy(t, h, 1)

	tests := []struct {
		name    string
		opt     initiator.Options
		violate func(t *testing.T, c *initiator.Conn)
		want    []outcome // acceptable outcomes
	}{
		{
			name: "CmdSN beyond the window is ignored",
			violate: func(t *testing.T, c *initiator.Conn) {
				_, max := c.Window()
				m := pdu.SCSICommand{Final: true, ITT: c.NextITT(), CmdSN: max + 1000, ExpStatSN: c.ExpStatSN(), CDB: make([]byte, 16)}
				var p pdu.PDU
				m.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotIgnored},
		},
		{
			name: "CmdSN behind the window is ignored",
			violate: func(t *testing.T, c *initiator.Conn) {
				exp, _ := c.Window()
				m := pdu.SCSICommand{Final: true, ITT: c.NextITT(), CmdSN: exp - 5, ExpStatSN: c.ExpStatSN(), CDB: make([]byte, 16)}
				var p pdu.PDU
				m.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotIgnored},
		},
		{
			name: "Data-Out for an unknown task",
			violate: func(t *testing.T, c *initiator.Conn) {
				d := pdu.DataOut{Final: true, ITT: 0x7777, TTT: pdu.ReservedTag, ExpStatSN: c.ExpStatSN(), Data: make([]byte, 512)}
				var p pdu.PDU
				d.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotReject},
		},
		{
			name: "unsolicited Data-Out beyond the first burst",
			violate: func(t *testing.T, c *initiator.Conn) {
				itt := c.NextITT()
				cdb := make([]byte, 16)
				cdb[0] = 0x8a
				binary.BigEndian.PutUint32(cdb[10:14], 8)
				cmd := pdu.SCSICommand{Final: true, Write: true, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), ExpectedDataTransferLength: 4096, CDB: cdb}
				var p pdu.PDU
				cmd.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
				// InitialR2T=Yes: nothing may come unsolicited.
				d := pdu.DataOut{Final: true, ITT: itt, TTT: pdu.ReservedTag, ExpStatSN: c.ExpStatSN(), Data: make([]byte, 4096)}
				d.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotReject},
		},
		{
			name: "Data-Out beyond the R2T",
			violate: func(t *testing.T, c *initiator.Conn) {
				itt := c.NextITT()
				cdb := make([]byte, 16)
				cdb[0] = 0x8a
				binary.BigEndian.PutUint32(cdb[10:14], 8)
				cmd := pdu.SCSICommand{Final: true, Write: true, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), ExpectedDataTransferLength: 4096, CDB: cdb}
				var p pdu.PDU
				cmd.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
				r2tPDU, err := c.ReadPDU(ctxT(t))
				require.NoError(t, err)
				var r2t pdu.R2T
				require.NoError(t, r2t.Decode(r2tPDU))
				d := pdu.DataOut{Final: true, ITT: itt, TTT: r2t.TTT, ExpStatSN: c.ExpStatSN(), BufferOffset: 2048, Data: make([]byte, 4096)}
				d.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotReject},
		},
		{
			name: "data segment beyond MaxRecvDataSegmentLength",
			violate: func(t *testing.T, c *initiator.Conn) {
				limit, err := strconv.Atoi(c.Params()["MaxRecvDataSegmentLength"])
				require.NoError(t, err)
				m := pdu.NOPOut{Immediate: true, ITT: c.NextITT(), TTT: pdu.ReservedTag, CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(), Data: make([]byte, limit+512)}
				var p pdu.PDU
				m.Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotReject, gotDropped},
		},
		{
			name: "bad header digest",
			opt:  initiator.Options{HeaderDigest: true, DataDigest: true},
			violate: func(t *testing.T, c *initiator.Conn) {
				var p pdu.PDU
				(&pdu.NOPOut{Immediate: true, ITT: c.NextITT(), TTT: pdu.ReservedTag, CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN()}).Encode(&p)
				b := c.Encode(&p)
				b[pdu.BHSLen] ^= 0xff
				require.NoError(t, c.WriteRaw(b))
			},
			want: []outcome{gotDropped},
		},
		{
			name: "bad data digest",
			opt:  initiator.Options{HeaderDigest: true, DataDigest: true},
			violate: func(t *testing.T, c *initiator.Conn) {
				var p pdu.PDU
				(&pdu.NOPOut{Immediate: true, ITT: c.NextITT(), TTT: pdu.ReservedTag, CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(), Data: []byte("ping")}).Encode(&p)
				b := c.Encode(&p)
				b[len(b)-1] ^= 0xff
				require.NoError(t, c.WriteRaw(b))
			},
			want: []outcome{gotReject, gotDropped},
		},
		{
			name: "an AHS whose length lies",
			violate: func(t *testing.T, c *initiator.Conn) {
				var p pdu.PDU
				// Immediate: a rejected command's CmdSN is not consumed, and
				// this test does not plug the gap (RFC 7143 §11.17.1).
				(&pdu.SCSICommand{Immediate: true, Final: true, ITT: c.NextITT(), CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(), CDB: make([]byte, 16)}).Encode(&p)
				// One AHS announcing 200 bytes inside an 8-byte total.
				p.AHS = []byte{0, 200, 1, 0, 0, 0, 0, 0}
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotReject, gotDropped},
		},
		{
			name: "a text request that never ends",
			violate: func(t *testing.T, c *initiator.Conn) {
				itt := c.NextITT()
				chunk := make([]byte, 8192)
				for i := range chunk {
					chunk[i] = 'a'
				}
				ttt := uint32(pdu.ReservedTag)
				for i := 0; i < 64; i++ {
					var p pdu.PDU
					(&pdu.TextRequest{Continue: true, ITT: itt, TTT: ttt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), Data: chunk}).Encode(&p)
					if c.SendPDU(&p) != nil {
						return
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := c.ReadPDU(ctx)
					cancel()
					require.NoError(t, err, "the target answers each piece or rejects the request")
					if resp.Opcode() == pdu.OpReject {
						return
					}
					var tr pdu.TextResponse
					require.NoError(t, tr.Decode(resp))
					ttt = tr.TTT
				}
				t.Fatal("512 KiB of continued text accepted")
			},
			want: []outcome{gotIgnored, gotDropped},
		},
		{
			name: "logout while a write waits for its data",
			violate: func(t *testing.T, c *initiator.Conn) {
				itt := c.NextITT()
				cdb := make([]byte, 16)
				cdb[0] = 0x8a
				binary.BigEndian.PutUint32(cdb[10:14], 128)
				var p pdu.PDU
				(&pdu.SCSICommand{Final: true, Write: true, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), ExpectedDataTransferLength: 128 * blockSize, CDB: cdb}).Encode(&p)
				require.NoError(t, c.SendPDU(&p))
				(&pdu.LogoutRequest{Immediate: true, ITT: c.NextITT(), CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN()}).Encode(&p)
				require.NoError(t, c.SendPDU(&p))
			},
			want: []outcome{gotDropped},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt := tt.opt
			opt.ISID = [6]byte{0x80, 0, 0, 0, 1, byte(i)}
			opt.Timeout = 5 * time.Second
			c := h.login(t, opt)
			tt.violate(t, c)
			got, rej := awaitOutcome(t, c, 500*time.Millisecond)
			require.Contains(t, tt.want, got, "outcome %d (reject %+v)", got, rej)
			if got != gotDropped {
				// The session itself still works.
				require.NoError(t, c.Nop(ctxT(t), []byte("still there")))
				require.NoError(t, c.TestUnitReady(ctxT(t), 0))
			}
		})
	}

	t.Run("commands before login completes", func(t *testing.T) {
		for _, first := range []bool{true, false} {
			nc, err := net.Dial("tcp", h.addr)
			require.NoError(t, err)
			if !first {
				// A login that stops in the security stage, then a command.
				_, err = nc.Write(encode(&pdu.LoginRequest{CSG: 0, NSG: 1, ISID: [6]byte{0x80, 0, 0, 0, 2, 1}, CID: 0, Data: []byte("InitiatorName=iqn.2026-11.io.example:x\x00SessionType=Normal\x00TargetName=" + testTarget + "\x00AuthMethod=None\x00")}, false))
				require.NoError(t, err)
			}
			_, err = nc.Write(encode(&pdu.SCSICommand{Final: true, Read: true, ITT: 9, ExpectedDataTransferLength: 36, CDB: []byte{0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, false))
			require.NoError(t, err)
			require.True(t, dropped(t, nc, 5*time.Second), "the target hangs up")
			nc.Close()
		}
	})

	rounds, err := stop()
	require.NoError(t, err, "the healthy session was disturbed")
	require.Positive(t, rounds)
}

// TestHostileConnectionsLeaveNothingRunning: once hostile connections
// (garbage, half logins, writes abandoned halfway, logouts racing writes,
// NOP-In pings never answered) have gone, the running server holds no
// goroutine for them.
func TestHostileConnectionsLeaveNothingRunning(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: 20 * time.Millisecond, NopTimeout: 100 * time.Millisecond, LoginTimeout: time.Second})
	snap := leakcheck.Take()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch i % 4 {
			case 0: // garbage and a half header
				nc, err := net.Dial("tcp", h.addr)
				if err != nil {
					return
				}
				nc.Write(append(make([]byte, 48), 1, 2, 3))
				time.Sleep(20 * time.Millisecond)
				nc.Close()
			case 1: // a write abandoned after its command
				c, err := initiator.Dial(context.Background(), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0x60, byte(i)}})
				if err != nil {
					return
				}
				cdb := make([]byte, 16)
				cdb[0] = 0x8a
				binary.BigEndian.PutUint32(cdb[10:14], 64)
				var p pdu.PDU
				(&pdu.SCSICommand{Final: true, Write: true, ITT: c.NextITT(), CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), ExpectedDataTransferLength: 64 * blockSize, CDB: cdb}).Encode(&p)
				c.SendPDU(&p)
				time.Sleep(20 * time.Millisecond)
				c.Close()
			case 2: // a logout racing a write that waits for data
				c, err := initiator.Dial(context.Background(), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0x61, byte(i)}})
				if err != nil {
					return
				}
				cdb := make([]byte, 16)
				cdb[0] = 0x8a
				binary.BigEndian.PutUint32(cdb[10:14], 8)
				var p pdu.PDU
				(&pdu.SCSICommand{Final: true, Write: true, ITT: c.NextITT(), CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), ExpectedDataTransferLength: 8 * blockSize, CDB: cdb}).Encode(&p)
				c.SendPDU(&p)
				c.Logout(context.Background())
				c.Close()
			case 3: // pings never answered: the target drops the connection
				c, err := initiator.Dial(context.Background(), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0x62, byte(i)}, ManualNOPIn: true})
				if err != nil {
					return
				}
				select {
				case <-c.Done():
				case <-time.After(5 * time.Second):
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	if left := snap.Wait(leakcheck.DefaultTimeout); len(left) > 0 {
		t.Fatalf("%d goroutine(s) still running for connections that are gone:\n%s", len(left), leakcheck.Format(left))
	}
	require.Empty(t, h.srv.Sessions())
}
