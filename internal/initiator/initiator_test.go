package initiator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/stretchr/testify/require"
)

const testTarget = "iqn.2026-11.io.iscsikit:disk0"

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// A full session with digests: security and operational stages, a READ
// answered in three Data-In PDUs with phase-collapsed status, a logout.
func TestLoginReadLogoutWithDigests(t *testing.T) {
	want := pattern(2048)
	cli, wait := runFake(t, func(f *fake) { f.mrdsl = 1024 }, func(f *fake) {
		f.login()
		check(f.keys["AuthMethod"] == "None", "AuthMethod %q", f.keys["AuthMethod"])
		check(f.keys["TargetName"] == testTarget, "TargetName %q", f.keys["TargetName"])
		check(f.keys["SessionType"] == "Normal", "SessionType %q", f.keys["SessionType"])
		cmd, _ := f.command()
		check(cmd.Read && !cmd.Write && cmd.Final, "flags R=%v W=%v F=%v", cmd.Read, cmd.Write, cmd.Final)
		check(cmd.CDB[0] == 0x88 && cmd.ExpectedDataTransferLength == 2048, "cdb % x edtl %d", cmd.CDB, cmd.ExpectedDataTransferLength)
		check(binary.BigEndian.Uint64(cmd.CDB[2:10]) == 5 && binary.BigEndian.Uint32(cmd.CDB[10:14]) == 4, "lba/len")
		check(cmd.LUN == 0x0001000000000000, "LUN %x", cmd.LUN)
		f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, DataSN: 0, BufferOffset: 0, Data: want[:1024]})
		f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, DataSN: 1, BufferOffset: 1024, Data: want[1024:1536]})
		f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, DataSN: 2, BufferOffset: 1536, Data: want[1536:],
			Final: true, HasStatus: true})
		p := f.expect(pdu.OpLogoutReq)
		var lo pdu.LogoutRequest
		must(lo.Decode(p))
		check(lo.Immediate && lo.ReasonCode == pdu.LogoutCloseSession, "logout %+v", lo)
		var rp pdu.PDU
		(&pdu.LogoutResponse{ITT: lo.ITT}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	ctx := context.Background()
	c := NewConn(cli, Options{TargetName: testTarget, HeaderDigest: true, DataDigest: true})
	defer c.Close()
	require.NoError(t, c.Login(ctx))
	st := c.Settings()
	require.True(t, st.HeaderDigest)
	require.True(t, st.DataDigest)
	require.Equal(t, 1024, st.MaxXmitDataSegmentLength)
	require.Equal(t, DefaultMaxRecvDataSegmentLength, st.MaxRecvDataSegmentLength)
	require.Equal(t, uint16(1), st.TSIH)
	require.Equal(t, "CRC32C", c.Params()["HeaderDigest"])
	require.Equal(t, "1", c.Params()["TargetPortalGroupTag"])

	got, err := c.ReadBlocks(ctx, 0x0001000000000000, 5, 4, 512)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.NoError(t, c.Logout(ctx))
	wait()
	require.ErrorIs(t, c.Err(), ErrConnClosed)
	require.Empty(t, c.Violations())
	_, err = c.Command(ctx, 0, make([]byte, 6), nil, 0)
	require.ErrorIs(t, err, ErrConnClosed)
}

// Immediate data, unsolicited Data-Out and an R2T, all cut to the target's
// MaxRecvDataSegmentLength, on a login that skips the security stage.
func TestWriteImmediateUnsolicitedAndR2T(t *testing.T) {
	data := pattern(20000)
	cli, wait := runFake(t, func(f *fake) { f.mrdsl = 4096 }, func(f *fake) {
		f.login()
		_, sawAuth := f.keys["AuthMethod"]
		check(!sawAuth, "AuthMethod sent with SkipSecurity")
		check(f.keys["InitialR2T"] == "No" && f.keys["FirstBurstLength"] == "8192", "keys %v", f.keys)
		cmd, _ := f.command()
		check(cmd.Write && !cmd.Final, "W=%v F=%v", cmd.Write, cmd.Final)
		check(cmd.ExpectedDataTransferLength == 20000, "edtl %d", cmd.ExpectedDataTransferLength)
		check(len(cmd.Data) == 4096, "immediate %d", len(cmd.Data))
		got := make([]byte, 20000)
		copy(got, cmd.Data)
		readOut := func(ttt uint32, wantSN uint32, off, n int) bool {
			p := f.expect(pdu.OpDataOut)
			var d pdu.DataOut
			must(d.Decode(p))
			check(d.ITT == cmd.ITT && d.TTT == ttt, "ITT %x TTT %x", d.ITT, d.TTT)
			check(d.DataSN == wantSN && int(d.BufferOffset) == off && len(d.Data) == n,
				"DataSN %d offset %d len %d, want %d %d %d", d.DataSN, d.BufferOffset, len(d.Data), wantSN, off, n)
			copy(got[off:], d.Data)
			return d.Final
		}
		check(readOut(pdu.ReservedTag, 0, 4096, 4096), "unsolicited Data-Out not final")
		var rp pdu.PDU
		(&pdu.R2T{ITT: cmd.ITT, TTT: 0x77, R2TSN: 0, BufferOffset: 8192, DesiredDataTransferLength: 11808}).Encode(&rp)
		f.send(&rp, statCurrent)
		check(!readOut(0x77, 0, 8192, 4096), "F early")
		check(!readOut(0x77, 1, 12288, 4096), "F early")
		check(readOut(0x77, 2, 16384, 3616), "F missing")
		check(bytes.Equal(got, data), "data differs")
		f.respond(cmd.ITT, 0, nil)
	})
	c := NewConn(cli, Options{TargetName: testTarget, SkipSecurity: true, Keys: []negotiate.Pair{
		{Key: "InitialR2T", Value: "No"}, {Key: "FirstBurstLength", Value: "8192"}}})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	require.False(t, c.Settings().InitialR2T)
	cdb := make([]byte, 16)
	cdb[0] = 0x8a
	resp, err := c.Command(ctx, 0, cdb, data, 0)
	require.NoError(t, err)
	require.NoError(t, resp.Check())
	require.Equal(t, 1, resp.R2Ts)
	wait()
	require.Empty(t, c.Violations())
}

// Discovery: a SendTargets answer split over three Text Response PDUs
// (C bit, one key cut in half) is reassembled.
func TestSendTargetsContinued(t *testing.T) {
	text := negotiate.Append(nil,
		negotiate.Pair{Key: "TargetName", Value: "iqn.2026-11.io.iscsikit:a"},
		negotiate.Pair{Key: "TargetAddress", Value: "127.0.0.1:3260,1"},
		negotiate.Pair{Key: "TargetAddress", Value: "[::1]:3260,1"},
		negotiate.Pair{Key: "TargetName", Value: "iqn.2026-11.io.iscsikit:b"},
		negotiate.Pair{Key: "TargetAddress", Value: "10.0.0.1:3260,2"})
	cuts := []int{0, 30, 70, len(text)}
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		check(f.keys["SessionType"] == "Discovery", "SessionType %q", f.keys["SessionType"])
		_, hasTarget := f.keys["TargetName"]
		check(!hasTarget, "TargetName in a discovery login")
		_, hasBurst := f.keys["MaxBurstLength"]
		check(!hasBurst, "session keys in a discovery login")
		for i := 0; i < 3; i++ {
			p := f.expect(pdu.OpTextReq)
			var req pdu.TextRequest
			must(req.Decode(p))
			if i == 0 {
				check(string(req.Data) == "SendTargets=All\x00", "request %q", req.Data)
				check(req.TTT == pdu.ReservedTag, "TTT %x", req.TTT)
			} else {
				check(len(req.Data) == 0 && req.TTT == 0x500+uint32(i-1), "continuation data %q TTT %x", req.Data, req.TTT)
			}
			last := i == 2
			m := pdu.TextResponse{Final: last, Continue: !last, ITT: req.ITT, TTT: 0x500 + uint32(i), Data: text[cuts[i]:cuts[i+1]]}
			if last {
				m.TTT = pdu.ReservedTag
			}
			var rp pdu.PDU
			m.Encode(&rp)
			f.send(&rp, statAdvance)
		}
	})
	c := NewConn(cli, Options{})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	got, err := c.SendTargets(ctx, "All")
	require.NoError(t, err)
	require.Equal(t, map[string][]string{
		"iqn.2026-11.io.iscsikit:a": {"127.0.0.1:3260,1", "[::1]:3260,1"},
		"iqn.2026-11.io.iscsikit:b": {"10.0.0.1:3260,2"},
	}, got)
	wait()
	require.Empty(t, c.Violations())
}

// Many goroutines share one Conn: commands leave in CmdSN order within the
// MaxCmdSN window (no command is sent while the window is closed), and
// responses sent in reverse order reach the right callers.
func TestConcurrentCommandsWindowAndDemux(t *testing.T) {
	const window, rounds = 4, 3
	cli, wait := runFake(t, func(f *fake) { f.window = window }, func(f *fake) {
		f.login()
		for r := 0; r < rounds; r++ {
			var cmds []*pdu.SCSICommand
			for i := 0; i < window; i++ {
				cmd, _ := f.command()
				cmds = append(cmds, cmd)
			}
			if r == 0 {
				// The window is full: nothing more may arrive.
				f.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				var hdr pdu.PDU
				err := f.r.ReadHeader(&hdr)
				check(err != nil, "a command beyond MaxCmdSN arrived: %v", hdr.Opcode())
				f.nc.SetReadDeadline(time.Time{})
			}
			for i := len(cmds) - 1; i >= 0; i-- {
				if i == 0 {
					f.maxCmd += window
				}
				cmd := cmds[i]
				f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, Data: cmd.CDB[2:6], Final: true, HasStatus: true})
			}
		}
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	var wg sync.WaitGroup
	errs := make(chan error, window*rounds)
	for g := 0; g < window*rounds; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cdb := make([]byte, 16)
			cdb[0] = 0x88
			binary.BigEndian.PutUint32(cdb[2:6], uint32(g)*0x01010101)
			resp, err := c.Command(ctx, 0, cdb, nil, 4)
			if err == nil && !bytes.Equal(resp.Data, cdb[2:6]) {
				err = errors.New("response delivered to the wrong caller")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	wait()
	require.Empty(t, c.Violations())
	exp, max := c.Window()
	require.Equal(t, c.CmdSN(), exp)
	require.Equal(t, exp+window-1, max)
}

// A Reject reaches the caller whose PDU was rejected as *RejectError; a
// dropped connection fails the waiting caller with ErrConnClosed.
func TestRejectAndDroppedConnection(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		_, p := f.command()
		var rp pdu.PDU
		(&pdu.Reject{Reason: pdu.RejectInvalidPDUField, Header: p.Header[:]}).Encode(&rp)
		f.send(&rp, statAdvance)
		f.command()
		f.nc.Close()
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	_, err := c.Command(ctx, 0, make([]byte, 6), nil, 0)
	var rej *RejectError
	require.ErrorAs(t, err, &rej)
	require.Equal(t, pdu.RejectInvalidPDUField, rej.Reason)
	require.Equal(t, pdu.OpSCSICommand, pdu.Opcode(rej.Header[0]&0x3f))

	err = c.TestUnitReady(ctx, 0)
	require.ErrorIs(t, err, ErrConnClosed)
	require.ErrorIs(t, err, io.EOF)
	wait()
	<-c.Done()
	_, err = c.ReadPDU(ctx)
	require.ErrorIs(t, err, ErrConnClosed)
}

// Target NOP-In pings are answered with an immediate NOP-Out echoing TTT,
// LUN and data; Nop pings the target.
func TestNopInPingAndNopOut(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		var rp pdu.PDU
		(&pdu.NOPIn{LUN: 0x0002000000000000, ITT: pdu.ReservedTag, TTT: 7, Data: []byte("ping")}).Encode(&rp)
		f.send(&rp, statCurrent)
		p := f.expect(pdu.OpNOPOut)
		var out pdu.NOPOut
		must(out.Decode(p))
		check(out.Immediate && out.ITT == pdu.ReservedTag && out.TTT == 7, "answer %+v", out)
		check(out.LUN == 0x0002000000000000 && string(out.Data) == "ping", "answer LUN %x data %q", out.LUN, out.Data)

		p = f.expect(pdu.OpNOPOut)
		must(out.Decode(p))
		check(out.Immediate && out.ITT != pdu.ReservedTag && out.TTT == pdu.ReservedTag, "ping %+v", out)
		(&pdu.NOPIn{ITT: out.ITT, TTT: pdu.ReservedTag, Data: out.Data}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	require.Eventually(t, func() bool { return c.PingsAnswered() == 1 }, 5*time.Second, time.Millisecond)
	require.NoError(t, c.Nop(ctx, []byte("hello, target")))
	wait()
	require.Empty(t, c.Violations())
}

// ABORT TASK carries the task's ITT and CmdSN, and its completion fails the
// aborted command with ErrTaskAborted.
func TestAbortTask(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		cmd, _ := f.command()
		p := f.expect(pdu.OpTaskMgmtReq)
		var tm pdu.TaskMgmtRequest
		must(tm.Decode(p))
		check(tm.Immediate && tm.Function == pdu.TMFAbortTask, "tmf %+v", tm)
		check(tm.RTT == cmd.ITT && tm.RefCmdSN == cmd.CmdSN && tm.LUN == cmd.LUN, "tmf %+v for cmd ITT %x CmdSN %d", tm, cmd.ITT, cmd.CmdSN)
		var rp pdu.PDU
		(&pdu.TaskMgmtResponse{ITT: tm.ITT, Response: pdu.TMFResponseComplete}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	sent := make(chan uint32, 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.Do(ctx, &Request{LUN: 3 << 48, CDB: make([]byte, 6), Attr: AttrSimple,
			OnSent: func(itt, _ uint32) { sent <- itt }})
		done <- err
	}()
	itt := <-sent
	resp, err := c.TaskManagement(ctx, pdu.TMFAbortTask, 3<<48, itt)
	require.NoError(t, err)
	require.Equal(t, uint8(pdu.TMFResponseComplete), resp)
	require.ErrorIs(t, <-done, ErrTaskAborted)
	wait()
}

// Data-In out of DataSN order is a protocol error; the abandoned task's
// later PDUs are dropped rather than surfacing in ReadPDU, and a context
// deadline ends a call whose answer never comes.
func TestDataSNOrderAndAbandonedTasks(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		cmd, _ := f.command()
		f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, DataSN: 1, BufferOffset: 0, Data: make([]byte, 4)})
		f.dataIn(pdu.DataIn{ITT: cmd.ITT, TTT: pdu.ReservedTag, DataSN: 0, BufferOffset: 4, Data: make([]byte, 4), Final: true, HasStatus: true})
		cmd2, _ := f.command() // never answered before the caller gives up
		p := f.expect(pdu.OpNOPOut)
		f.respond(cmd2.ITT, 0, nil) // late: must be dropped
		var out pdu.NOPOut
		must(out.Decode(p))
		var rp pdu.PDU
		(&pdu.NOPIn{ITT: out.ITT, TTT: pdu.ReservedTag}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	_, err := c.Command(ctx, 0, []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, 8)
	require.ErrorIs(t, err, ErrProtocol)

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = c.TestUnitReady(short, 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 5*time.Second)

	require.NoError(t, c.Nop(ctx, nil))
	wait()
	quick, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	_, err = c.ReadPDU(quick)
	require.ErrorIs(t, err, context.DeadlineExceeded, "a dropped PDU surfaced")
}

// CHAP in the security stage, one-way and mutual; a wrong target answer
// fails the login.
func TestCHAP(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chap    CHAP
		wantErr bool
	}{
		{name: "one-way", chap: CHAP{Username: "alice", Secret: "alicesecret1"}},
		{name: "mutual", chap: CHAP{Username: "alice", Secret: "alicesecret1", TargetUsername: "tgt", TargetSecret: "targetsecret"}},
		{name: "mutual-bad-target", chap: CHAP{Username: "alice", Secret: "alicesecret1", TargetUsername: "tgt", TargetSecret: "wrongsecret0"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, wait := runFake(t, func(f *fake) {
				f.chap = &fakeCHAP{user: "alice", secret: "alicesecret1", targetUser: "tgt", targetSecret: "targetsecret"}
			}, func(f *fake) {
				if tc.wantErr {
					defer func() { recover() }() // the initiator hangs up mid-login
				}
				f.login()
				check(f.keys["AuthMethod"] == "CHAP" && f.keys["CHAP_A"] == "5", "keys %v", f.keys)
			})
			c := NewConn(cli, Options{TargetName: testTarget, CHAP: &tc.chap})
			defer c.Close()
			err := c.Login(context.Background())
			if tc.wantErr {
				require.ErrorContains(t, err, "mutual CHAP")
				c.Close()
			} else {
				require.NoError(t, err)
			}
			wait()
		})
	}
}

// The raw API: a hand-built login request read back synchronously in the
// login phase, and a raw NOP-Out whose answer goes to ReadPDU.
func TestRawPDUs(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		p := f.expect(pdu.OpLoginReq)
		var req pdu.LoginRequest
		must(req.Decode(p))
		var rp pdu.PDU
		(&pdu.LoginResponse{ITT: req.ITT, StatusClass: 2, StatusDetail: 7}).Encode(&rp)
		must(f.w.WritePDU(&rp))
		f.login()
		p = f.expect(pdu.OpNOPOut)
		var out pdu.NOPOut
		must(out.Decode(p))
		check(!out.Immediate && out.CmdSN == f.expCmd-1, "raw NOP-Out %+v", out)
		(&pdu.NOPIn{ITT: out.ITT, TTT: pdu.ReservedTag, Data: out.Data}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()

	var p pdu.PDU
	(&pdu.LoginRequest{CSG: 0, ITT: c.NextITT(), ISID: DefaultISID, Data: []byte("bogus")}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	in, err := c.ReadPDU(ctx)
	require.NoError(t, err)
	var lr pdu.LoginResponse
	require.NoError(t, lr.Decode(in))
	require.Equal(t, uint8(2), lr.StatusClass)

	require.NoError(t, c.Login(ctx))
	itt := c.NextITT()
	(&pdu.NOPOut{ITT: itt, TTT: pdu.ReservedTag, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(), Data: []byte("raw")}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	in, err = c.ReadPDU(ctx)
	require.NoError(t, err)
	require.Equal(t, pdu.OpNOPIn, in.Opcode())
	require.Equal(t, itt, in.ITT())
	require.Equal(t, "raw", string(in.Data))
	wait()
}

// A login the target refuses is a *LoginError carrying the status.
func TestLoginRefused(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		p := f.expect(pdu.OpLoginReq)
		var req pdu.LoginRequest
		must(req.Decode(p))
		var rp pdu.PDU
		(&pdu.LoginResponse{ITT: req.ITT, StatusClass: 2, StatusDetail: 3}).Encode(&rp)
		must(f.w.WritePDU(&rp))
	})
	_, err := func() (*Conn, error) {
		c := NewConn(cli, Options{TargetName: "iqn.2026-11.io.iscsikit:nosuch"})
		defer c.Close()
		return c, c.Login(context.Background())
	}()
	var le *LoginError
	require.ErrorAs(t, err, &le)
	require.Equal(t, uint16(0x0203), le.Status())
	wait()
}

func TestMergeKeys(t *testing.T) {
	base := []negotiate.Pair{{Key: "A", Value: "1"}, {Key: "B", Value: "2"}, {Key: "C", Value: "3"}}
	got := mergeKeys(base, []negotiate.Pair{{Key: "B", Value: ""}, {Key: "C", Value: "9"}, {Key: "D", Value: "4"}, {Key: "E", Value: "5"}},
		func(k string) bool { return k != "E" })
	require.Equal(t, []negotiate.Pair{{Key: "A", Value: "1"}, {Key: "C", Value: "9"}, {Key: "D", Value: "4"}}, got)
	require.Equal(t, "2", base[1].Value, "base modified")
}

func TestParseSense(t *testing.T) {
	fixed := make([]byte, 18)
	fixed[0], fixed[2], fixed[12], fixed[13] = 0x70, 0x05, 0x24, 0x00
	for _, tc := range []struct {
		name           string
		sense          []byte
		key, asc, ascq byte
	}{
		{"fixed", fixed, 0x05, 0x24, 0x00},
		{"descriptor", []byte{0x72, 0x06, 0x29, 0x01, 0, 0, 0, 0}, 0x06, 0x29, 0x01},
		{"short", []byte{0x70}, 0, 0, 0},
		{"empty", nil, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, a, q := ParseSense(tc.sense)
			require.Equal(t, []byte{tc.key, tc.asc, tc.ascq}, []byte{k, a, q})
		})
	}
}

// A closed command window holds non-immediate commands back until ctx
// ends, while immediate PDUs still go out; a StatSN gap is recorded as a
// violation.
func TestClosedWindowAndViolations(t *testing.T) {
	cli, wait := runFake(t, func(f *fake) { f.window = 0 }, func(f *fake) {
		f.login()
		p := f.expect(pdu.OpNOPOut) // the immediate ping; the command never came
		var out pdu.NOPOut
		must(out.Decode(p))
		f.statSN += 5
		var rp pdu.PDU
		(&pdu.NOPIn{ITT: out.ITT, TTT: pdu.ReservedTag}).Encode(&rp)
		f.send(&rp, statAdvance)
	})
	c := NewConn(cli, Options{TargetName: testTarget})
	defer c.Close()
	ctx := context.Background()
	require.NoError(t, c.Login(ctx))
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, c.TestUnitReady(short, 0), context.DeadlineExceeded)
	require.NoError(t, c.Nop(ctx, nil))
	wait()
	v := c.Violations()
	require.Len(t, v, 1)
	require.ErrorIs(t, v[0], ErrProtocol)
	require.ErrorContains(t, v[0], "StatSN")
}

func TestNotLoggedIn(t *testing.T) {
	cli, _ := runFake(t, nil, func(f *fake) {})
	c := NewConn(cli, Options{})
	defer c.Close()
	_, err := c.Command(context.Background(), 0, make([]byte, 6), nil, 0)
	require.ErrorIs(t, err, ErrNotLoggedIn)
	require.ErrorIs(t, c.Nop(context.Background(), nil), ErrNotLoggedIn)
}

// WriteRaw sends bytes as they are, e.g. a PDU with a corrupted data digest.
func TestEncodeAndWriteRaw(t *testing.T) {
	cli, wait := runFake(t, nil, func(f *fake) {
		f.login()
		var hdr pdu.PDU
		must(f.r.ReadHeader(&hdr))
		check(hdr.Opcode() == pdu.OpNOPOut, "got %v", hdr.Opcode())
		err := f.r.ReadData(&hdr, make([]byte, hdr.DataSegmentLength()))
		check(err != nil && bytes.Contains([]byte(err.Error()), []byte("data digest")), "err %v", err)
	})
	c := NewConn(cli, Options{TargetName: testTarget, DataDigest: true})
	defer c.Close()
	require.NoError(t, c.Login(context.Background()))
	var p pdu.PDU
	(&pdu.NOPOut{Immediate: true, ITT: c.NextITT(), TTT: pdu.ReservedTag, CmdSN: c.CmdSN(), ExpStatSN: c.ExpStatSN(), Data: []byte("abcd")}).Encode(&p)
	b := c.Encode(&p)
	require.Len(t, b, pdu.BHSLen+4+4)
	b[len(b)-1] ^= 0xff
	require.NoError(t, c.WriteRaw(b))
	wait()
}
