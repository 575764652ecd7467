package fuzz

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// loginKeys are key names a login may carry; the fuzzer picks among them
// (or makes one up) so that requests reach the negotiation and stage logic
// rather than stopping at "unknown key".
func loginKeys() []string {
	return []string{"InitiatorName", "TargetName", "SessionType", "AuthMethod", "InitiatorAlias", "HeaderDigest", "DataDigest",
		"MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength", "InitialR2T", "ImmediateData", "MaxConnections",
		"MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel", "DefaultTime2Wait",
		"DefaultTime2Retain", "CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C", "SendTargets", "X-com.example.key"}
}

// loginValues are plausible values, beside fuzzed strings.
func loginValues() []string {
	return []string{"iqn.2026-11.io.example:fuzz", sessionTarget, "Normal", "Discovery", "None", "CHAP", "None,CRC32C", "CRC32C",
		"Yes", "No", "0", "1", "512", "8192", "262144", "16777215", "16777216", "5", "All", "Irrelevant", "Reject", "NotUnderstood", ""}
}

// loginStep is one fuzzed Login Request.
type loginStep struct {
	Transit, Continue bool
	CSG, NSG          uint8
	VersionMax        uint8
	VersionMin        uint8
	ISIDLow           uint8
	TSIH              uint16
	CID               uint16
	ITT               uint32
	CmdSN             uint32
	Keys              []struct {
		Name, Value   uint8
		OwnName       string
		OwnValue      string
		UseOwn, Other bool
	}
	Raw     []byte
	UseRaw  bool // send Raw as the data segment as is
	Leading bool // start with valid leading keys (names, session type)
	NotLog  bool // send some other opcode instead
	Op      uint8
}

func (s *loginStep) data() []byte {
	if s.UseRaw {
		return s.Raw
	}
	names, values := loginKeys(), loginValues()
	var pairs []negotiate.Pair
	if s.Leading {
		pairs = append(pairs, negotiate.Pair{Key: "InitiatorName", Value: "iqn.2026-11.io.example:fuzz"},
			negotiate.Pair{Key: "TargetName", Value: sessionTarget}, negotiate.Pair{Key: "SessionType", Value: "Normal"})
	}
	for _, k := range s.Keys {
		p := negotiate.Pair{Key: names[int(k.Name)%len(names)], Value: values[int(k.Value)%len(values)]}
		if k.UseOwn {
			p.Value = k.OwnValue
		}
		if k.Other {
			p.Key = k.OwnName
		}
		pairs = append(pairs, p)
	}
	return negotiate.Append(nil, pairs...)
}

// FuzzLogin drives the login phase of an in-process server with sequences
// of gofuzz-built Login Requests (stages, flags, ISID/TSIH/CID and keys
// picked from the real key set or made up) on a raw connection. Every
// answer must be a well-formed Login Response; after a response with a
// failure status the target must hang up; no input may hang the exchange
// or panic the server, and a healthy session logs in afterwards.
func FuzzLogin(f *testing.F) {
	srv := startFuzzServer(f)
	f.Add([]byte("login"), uint8(2))
	f.Add([]byte{1, 1, 1, 3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1, 1, 1, 1, 2, 2}, uint8(3))
	// Found by search: a first step that is a complete, valid login
	// (leading keys, CSG 1 to NSG 3, T=1) followed by fuzzed steps in the
	// full feature phase.
	f.Add([]byte("MxM\xfcm\xdf3\x06m\x8e\xfeN>\x94\x16\xd3\xe8\xec\x9a5/yx\x9a\xcc\b~\xc3\xe2d5\xdb\x19\x8b\x8b1qh|\xe9\xf6\xf2R\x8d\x90\xc7w\"\x86\xa7\xf4c\xc0\x1b\x10\xb3\xbd\x18\x0f\x95\xa7_\x12\x1f"), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, steps uint8) {
		defer failIfStalled(t)()
		fz := gofuzz.NewFromGoFuzz(data).NilChance(0.1).NumElements(0, 12)
		nc, err := net.Dial("tcp", srv.addr)
		require.NoError(t, err)
		defer nc.Close()
		r := pdu.NewReader(nc, pdu.MaxDataSegmentLength)
		w := pdu.NewWriter(nc)
		hungUp := false
		for i := 0; i < int(steps%8)+1 && !hungUp; i++ {
			var st loginStep
			fz.Fuzz(&st)
			var p pdu.PDU
			if st.NotLog {
				op := initiatorOps()[int(st.Op)%len(initiatorOps())]
				m := decoders[op]()
				fz.Fuzz(m)
				m.Encode(&p)
			} else {
				(&pdu.LoginRequest{Transit: st.Transit, Continue: st.Continue, CSG: st.CSG % 4, NSG: st.NSG % 4,
					VersionMax: st.VersionMax % 2, VersionMin: st.VersionMin % 2, ISID: [6]byte{0x80, 0, 0, 0, 0x33, st.ISIDLow},
					TSIH: st.TSIH % 4, ITT: st.ITT, CID: st.CID, CmdSN: st.CmdSN, Data: st.data()}).Encode(&p)
			}
			if len(p.Data) > 8192 {
				p.Data = p.Data[:8192]
			}
			nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if w.WritePDU(&p) != nil {
				break
			}
			// Read what the target answers until it goes quiet or hangs up.
			for {
				nc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
				var resp pdu.PDU
				err := r.ReadPDU(&resp)
				if err != nil {
					if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
						hungUp = true
					} else {
						var ne net.Error
						require.True(t, errors.As(err, &ne) && ne.Timeout(), "reading the answer: %v", err)
					}
					break
				}
				if resp.Opcode() == pdu.OpReject {
					continue
				}
				require.Equal(t, pdu.OpLoginResp, resp.Opcode(), "in the login phase the target sends Login Responses")
				var lr pdu.LoginResponse
				require.NoError(t, lr.Decode(&resp))
				if _, err := negotiate.Parse(lr.Data); err != nil && !lr.Continue {
					t.Fatalf("login response text does not parse: %v: %q", err, lr.Data)
				}
				if lr.StatusClass != 0 {
					// A failed login ends the connection (RFC 7143 §11.13.5).
					nc.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, err := io.Copy(io.Discard, nc)
					var ne net.Error
					require.False(t, errors.As(err, &ne) && ne.Timeout(), "the target kept the connection after login status %d/%d", lr.StatusClass, lr.StatusDetail)
					hungUp = true
					break
				}
			}
		}
		nc.Close()

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		check, err := initiator.Dial(ctx, srv.addr, initiator.Options{TargetName: sessionTarget, ISID: [6]byte{0x80, 0, 0, 0, 0x34, 1}})
		require.NoError(t, err, "a healthy login after the fuzzed one")
		check.Close()
		require.False(t, strings.Contains(srv.log.String(), "panic"), "the server recovered a panic:\n%s", srv.log.String())
	})
}

// isReset reports a connection reset by the peer.
func isReset(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && bytes.Contains([]byte(se.Error()), []byte("reset"))
}
