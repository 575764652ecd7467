package fuzz

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

const sessionTarget = "iqn.2026-11.io.iscsikit:fuzz"

// fuzzServer is an in-process target on a loopback port whose log is kept
// to spot recovered panics.
type fuzzServer struct {
	addr string
	log  *syncbuf.Buffer
}

func startFuzzServer(f *testing.F) *fuzzServer {
	f.Helper()
	log := new(syncbuf.Buffer)
	srv, err := iscsi.NewServer(iscsi.Options{
		Logger:       slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		NopInterval:  -1,
		LoginTimeout: 2 * time.Second,
		MaxIOSize:    1 << 20,
	})
	require.NoError(f, err)
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(fuzzBlocks*512), scsi.UnitConfig{ThinProvisioning: true, Serial: "fuzz", MaxTransferLength: 1 << 20})
	require.NoError(f, err)
	dev := scsi.NewTarget()
	require.NoError(f, dev.Attach(0, lu))
	require.NoError(f, srv.AddTarget(&iscsi.Target{Name: sessionTarget, Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(f, err)
	go srv.Serve(l)
	f.Cleanup(func() { srv.Close() })
	return &fuzzServer{addr: l.Addr().String(), log: log}
}

// initiatorOps are the opcodes an initiator sends.
func initiatorOps() []pdu.Opcode {
	return []pdu.Opcode{pdu.OpNOPOut, pdu.OpSCSICommand, pdu.OpTaskMgmtReq, pdu.OpLoginReq, pdu.OpTextReq, pdu.OpDataOut, pdu.OpLogoutReq, pdu.OpSNACKReq}
}

// sessionStep is one fuzzed PDU: a message of a type the fuzzer picks,
// with sequence numbers near the real ones unless Wild.
type sessionStep struct {
	Op        uint8
	Wild      bool // keep the fuzzed CmdSN/ExpStatSN
	Garbage   []byte
	UseGarb   bool
	SmallData bool
}

// FuzzSession logs in to an in-process server and then sends a sequence
// of gofuzz-built PDUs (any initiator opcode, fields fuzzed, digests and
// lengths correct) and raw garbage. Whatever it sends, the server must not
// panic (it would recover, but the log tells), and a new session must
// still log in and run a command afterwards.
func FuzzSession(f *testing.F) {
	srv := startFuzzServer(f)
	f.Add([]byte("nop"), uint8(3))
	f.Add([]byte{1, 0, 0, 0, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0}, uint8(4))
	f.Add([]byte{5, 1, 2, 3, 4, 5, 6, 7, 8}, uint8(8))
	f.Add([]byte{4, 0, 0, 'S', 'e', 'n', 'd', 'T', 'a', 'r', 'g', 'e', 't', 's', '=', 'A', 'l', 'l', 0}, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, steps uint8) { fuzzSessionOnce(t, srv, data, steps) })
}

// fuzzSessionOnce is one input of FuzzSession.
func fuzzSessionOnce(t *testing.T, srv *fuzzServer, data []byte, steps uint8) {
	ops := initiatorOps()
	defer failIfStalled(t)()
	{
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := initiator.Dial(ctx, srv.addr, initiator.Options{TargetName: sessionTarget, Timeout: 2 * time.Second, ISID: [6]byte{0x80, 0, 0, 0, 0, 1}})
		require.NoError(t, err)
		fz := gofuzz.NewFromGoFuzz(data).NilChance(0.2).NumElements(0, 64)
		for range steps % 16 {
			var st sessionStep
			fz.Fuzz(&st)
			if st.UseGarb {
				if c.WriteRaw(st.Garbage) != nil {
					break
				}
				continue
			}
			m := decoders[ops[int(st.Op)%len(ops)]]()
			fz.Fuzz(m)
			var p pdu.PDU
			m.Encode(&p)
			if !st.Wild && len(p.Header) >= 32 {
				// CmdSN and ExpStatSN where the target expects them, so
				// the PDU gets past the window checks.
				cmdSN, exp := c.CmdSN(), c.ExpStatSN()
				p.Header[24], p.Header[25], p.Header[26], p.Header[27] = byte(cmdSN>>24), byte(cmdSN>>16), byte(cmdSN>>8), byte(cmdSN)
				p.Header[28], p.Header[29], p.Header[30], p.Header[31] = byte(exp>>24), byte(exp>>16), byte(exp>>8), byte(exp)
			}
			if st.SmallData && len(p.Data) > 512 {
				p.Data = p.Data[:512]
			}
			if c.SendPDU(&p) != nil {
				break
			}
		}
		// Whatever state the junk left, a ping may or may not be answered
		// (garbage can announce a data segment that never comes, which the
		// target waits for); the connection then goes.
		nopCtx, nopCancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_ = c.Nop(nopCtx, nil)
		nopCancel()
		tc := time.Now()
		c.Close()
		if time.Since(tc) > time.Second {
			t.Fatalf("close took %v", time.Since(tc))
		}
		tc = time.Now()

		check, err := initiator.Dial(ctx, srv.addr, initiator.Options{TargetName: sessionTarget, ISID: [6]byte{0x80, 0, 0, 0, 0, 2}})
		require.NoError(t, err, "a healthy login after the fuzzed session")
		if time.Since(tc) > time.Second {
			t.Fatalf("login took %v", time.Since(tc))
		}
		_ = check.TestUnitReady(ctx, 0)
		require.NoError(t, check.TestUnitReady(ctx, 0))
		check.Close()
		require.False(t, strings.Contains(srv.log.String(), "panic"), "the server recovered a panic:\n%s", srv.log.String())
	}
}

// failIfStalled returns a function to defer that ends the input. No
// input may make an exchange hang: one still running after 20 seconds
// panics the fuzzing process with every goroutine's stack, so the fuzzer
// records it as a crasher (a test cannot fail from another goroutine while
// its own is stuck).
func failIfStalled(t *testing.T) func() {
	const stallAfter = 20 * time.Second
	stall := time.AfterFunc(stallAfter, func() {
		buf := make([]byte, 8<<20)
		panic(fmt.Sprintf("%s: one fuzzed exchange took over %v; goroutines:\n%s", t.Name(), stallAfter, buf[:runtime.Stack(buf, true)]))
	})
	return func() { stall.Stop() }
}
