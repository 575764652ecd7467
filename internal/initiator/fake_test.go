package initiator

import (
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/stretchr/testify/require"
)

// fake is a scripted, minimal target on one end of a net.Pipe. Its
// helpers panic on any surprise; runFake turns the panic into a test
// failure.
type fake struct {
	nc      net.Conn
	r       *pdu.Reader
	w       *pdu.Writer
	statSN  uint32
	expCmd  uint32
	maxCmd  uint32
	window  uint32
	mrdsl   int
	answers map[string]string
	chap    *fakeCHAP
	keys    map[string]string // every key the initiator sent at login
}

type fakeCHAP struct {
	user, secret             string // the initiator's credentials
	targetUser, targetSecret string // answered for mutual CHAP
}

func newFake(nc net.Conn) *fake {
	return &fake{nc: nc, r: pdu.NewReader(nc, 1<<20), w: pdu.NewWriter(nc), statSN: 100,
		window: 32, mrdsl: 8192, answers: map[string]string{}, keys: map[string]string{}}
}

// runFake starts script on the target end of a pipe and returns the
// initiator end and a function that waits for the script and fails t if
// it panicked.
func runFake(t *testing.T, setup func(f *fake), script func(f *fake)) (net.Conn, func()) {
	t.Helper()
	cli, srv := net.Pipe()
	f := newFake(srv)
	if setup != nil {
		setup(f)
	}
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				errc <- fmt.Errorf("fake target: %v", v)
				srv.Close()
				return
			}
			errc <- nil
		}()
		script(f)
	}()
	wait := func() {
		t.Helper()
		select {
		case err := <-errc:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("fake target did not finish")
		}
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, wait
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func check(ok bool, format string, args ...any) {
	if !ok {
		panic(fmt.Sprintf(format, args...))
	}
}

// read returns the next PDU, keeping ExpCmdSN and checking the window.
func (f *fake) read() *pdu.PDU {
	p := new(pdu.PDU)
	must(f.r.ReadPDU(p))
	switch p.Opcode() {
	case pdu.OpSCSICommand, pdu.OpTextReq, pdu.OpTaskMgmtReq, pdu.OpNOPOut, pdu.OpLogoutReq:
		if !p.Immediate() {
			check(p.CmdSN() == f.expCmd, "%v CmdSN %d, expected %d", p.Opcode(), p.CmdSN(), f.expCmd)
			check(int32(p.CmdSN()-f.maxCmd) <= 0, "%v CmdSN %d beyond MaxCmdSN %d", p.Opcode(), p.CmdSN(), f.maxCmd)
			f.expCmd++
		} else {
			check(p.CmdSN() == f.expCmd, "immediate %v CmdSN %d, expected %d", p.Opcode(), p.CmdSN(), f.expCmd)
		}
		check(int32(p.ExpStatSN()-f.statSN) <= 0, "%v ExpStatSN %d ahead of StatSN %d", p.Opcode(), p.ExpStatSN(), f.statSN)
	}
	return p
}

func (f *fake) expect(op pdu.Opcode) *pdu.PDU {
	p := f.read()
	check(p.Opcode() == op, "got %v, expected %v", p.Opcode(), op)
	return p
}

// Status kinds for send.
const (
	statNone = iota
	statCurrent
	statAdvance
)

// send stamps StatSN (per kind), ExpCmdSN and MaxCmdSN into p and writes it.
func (f *fake) send(p *pdu.PDU, kind int) {
	switch kind {
	case statCurrent:
		binary.BigEndian.PutUint32(p.Header[24:28], f.statSN)
	case statAdvance:
		binary.BigEndian.PutUint32(p.Header[24:28], f.statSN)
		f.statSN++
	}
	binary.BigEndian.PutUint32(p.Header[28:32], f.expCmd)
	binary.BigEndian.PutUint32(p.Header[32:36], f.maxCmd)
	must(f.w.WritePDU(p))
}

func md5Resp(id byte, secret string, challenge []byte) string {
	s := md5.Sum(append(append([]byte{id}, secret...), challenge...))
	return "0x" + hex.EncodeToString(s[:])
}

// login answers the login phase: AuthMethod=None or CHAP in the security
// stage, then every operational key (echoing the first offered value
// unless answers says otherwise). It switches on the digests negotiated.
func (f *fake) login() {
	chapC := []byte{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6}
	hdr, data := false, false
	first := true
	for {
		p := f.expect(pdu.OpLoginReq)
		var req pdu.LoginRequest
		must(req.Decode(p))
		if first {
			f.expCmd = req.CmdSN
			f.maxCmd = req.CmdSN + f.window - 1
			first = false
		}
		check(req.CmdSN == f.expCmd, "login CmdSN %d, expected %d", req.CmdSN, f.expCmd)
		pairs, err := negotiate.Parse(req.Data)
		must(err)
		var out []negotiate.Pair
		if req.CSG == pdu.StageOperational && f.keys["TargetPortalGroupTag-sent"] == "" {
			out = append(out, negotiate.Pair{Key: "TargetPortalGroupTag", Value: "1"})
			f.keys["TargetPortalGroupTag-sent"] = "yes"
		}
		for _, kv := range pairs {
			f.keys[kv.Key] = kv.Value
			switch {
			case kv.Key == "InitiatorName" || kv.Key == "SessionType" || kv.Key == "TargetName":
			case kv.Key == "AuthMethod":
				out = append(out, negotiate.Pair{Key: "AuthMethod", Value: strings.Split(kv.Value, ",")[0]})
			case kv.Key == "CHAP_A":
				out = append(out, negotiate.Pair{Key: "CHAP_A", Value: "5"},
					negotiate.Pair{Key: "CHAP_I", Value: "7"},
					negotiate.Pair{Key: "CHAP_C", Value: "0x" + hex.EncodeToString(chapC)})
			case kv.Key == "CHAP_N":
				check(kv.Value == f.chap.user, "CHAP_N %q", kv.Value)
			case kv.Key == "CHAP_R":
				check(kv.Value == md5Resp(7, f.chap.secret, chapC), "CHAP_R mismatch")
			case kv.Key == "CHAP_I":
			case kv.Key == "CHAP_C":
				id := f.keys["CHAP_I"]
				var n int
				fmt.Sscan(id, &n)
				c, err := hex.DecodeString(strings.TrimPrefix(kv.Value, "0x"))
				must(err)
				out = append(out, negotiate.Pair{Key: "CHAP_N", Value: f.chap.targetUser},
					negotiate.Pair{Key: "CHAP_R", Value: md5Resp(byte(n), f.chap.targetSecret, c)})
			case kv.Key == "MaxRecvDataSegmentLength":
				out = append(out, negotiate.Pair{Key: kv.Key, Value: fmt.Sprint(f.mrdsl)})
			default:
				v := strings.Split(kv.Value, ",")[0]
				if a, ok := f.answers[kv.Key]; ok {
					v = a
				}
				out = append(out, negotiate.Pair{Key: kv.Key, Value: v})
				if kv.Key == "HeaderDigest" {
					hdr = v == "CRC32C"
				}
				if kv.Key == "DataDigest" {
					data = v == "CRC32C"
				}
			}
		}
		resp := pdu.LoginResponse{Transit: req.Transit, CSG: req.CSG, NSG: req.NSG, ISID: req.ISID,
			ITT: req.ITT, StatSN: f.statSN, ExpCmdSN: f.expCmd, MaxCmdSN: f.maxCmd,
			Data: negotiate.Append(nil, out...)}
		if !req.Transit {
			resp.NSG = 0
		}
		final := req.Transit && req.NSG == pdu.StageFullFeature
		if final {
			resp.TSIH = 1
		}
		f.statSN++
		var rp pdu.PDU
		resp.Encode(&rp)
		must(f.w.WritePDU(&rp))
		if final {
			f.r.SetDigests(hdr, data)
			f.w.SetDigests(hdr, data)
			return
		}
	}
}

// command reads a SCSI Command.
func (f *fake) command() (*pdu.SCSICommand, *pdu.PDU) {
	p := f.expect(pdu.OpSCSICommand)
	cmd := new(pdu.SCSICommand)
	must(cmd.Decode(p))
	return cmd, p
}

func (f *fake) respond(itt uint32, status byte, sense []byte) {
	m := pdu.SCSIResponse{ITT: itt, Status: status}
	if sense != nil {
		m.Data = pdu.AppendSenseData(nil, sense)
	}
	var p pdu.PDU
	m.Encode(&p)
	f.send(&p, statAdvance)
}

func (f *fake) dataIn(m pdu.DataIn) {
	var p pdu.PDU
	m.Encode(&p)
	kind := statNone
	if m.HasStatus {
		kind = statAdvance
	}
	f.send(&p, kind)
}
