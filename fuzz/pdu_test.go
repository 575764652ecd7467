package fuzz

import (
	"bytes"
	"errors"
	"io"
	"testing"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// message is what every PDU type implements.
type message interface {
	Encode(p *pdu.PDU)
	Decode(p *pdu.PDU) error
}

// decoders maps each opcode to a fresh message of its type.
var decoders = map[pdu.Opcode]func() message{
	pdu.OpNOPOut:       func() message { return new(pdu.NOPOut) },
	pdu.OpSCSICommand:  func() message { return new(pdu.SCSICommand) },
	pdu.OpTaskMgmtReq:  func() message { return new(pdu.TaskMgmtRequest) },
	pdu.OpLoginReq:     func() message { return new(pdu.LoginRequest) },
	pdu.OpTextReq:      func() message { return new(pdu.TextRequest) },
	pdu.OpDataOut:      func() message { return new(pdu.DataOut) },
	pdu.OpLogoutReq:    func() message { return new(pdu.LogoutRequest) },
	pdu.OpSNACKReq:     func() message { return new(pdu.SNACKRequest) },
	pdu.OpNOPIn:        func() message { return new(pdu.NOPIn) },
	pdu.OpSCSIResponse: func() message { return new(pdu.SCSIResponse) },
	pdu.OpTaskMgmtResp: func() message { return new(pdu.TaskMgmtResponse) },
	pdu.OpLoginResp:    func() message { return new(pdu.LoginResponse) },
	pdu.OpTextResp:     func() message { return new(pdu.TextResponse) },
	pdu.OpDataIn:       func() message { return new(pdu.DataIn) },
	pdu.OpLogoutResp:   func() message { return new(pdu.LogoutResponse) },
	pdu.OpR2T:          func() message { return new(pdu.R2T) },
	pdu.OpAsyncMsg:     func() message { return new(pdu.AsyncMessage) },
	pdu.OpReject:       func() message { return new(pdu.Reject) },
}

// encodeWire writes m as it would travel, with the given digests.
func encodeWire(t *testing.T, m message, digests bool) []byte {
	var p pdu.PDU
	m.Encode(&p)
	var b bytes.Buffer
	w := pdu.NewWriter(&b)
	w.SetDigests(digests, digests)
	require.NoError(t, w.WritePDU(&p))
	return b.Bytes()
}

// FuzzReadPDU feeds arbitrary bytes to the PDU reader, with and without
// digests, and decodes whatever frames it finds. The reader must never
// panic or read past a limit; every error must be an I/O end or a
// *pdu.ProtocolError; a PDU that decodes must re-encode to the same
// header it was read from.
func FuzzReadPDU(f *testing.F) {
	seed := func(m message, digests bool) {
		var p pdu.PDU
		m.Encode(&p)
		var b bytes.Buffer
		w := pdu.NewWriter(&b)
		w.SetDigests(digests, digests)
		if err := w.WritePDU(&p); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes(), digests)
	}
	seed(&pdu.SCSICommand{Final: true, Read: true, Attr: 1, ITT: 1, ExpectedDataTransferLength: 512, CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}}, false)
	seed(&pdu.SCSICommand{Final: true, Write: true, ITT: 2, CDB: make([]byte, 32), Data: []byte{1, 2, 3}}, true)
	seed(&pdu.LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80}, Data: []byte("InitiatorName=iqn.2026-11.io.example:x\x00")}, false)
	seed(&pdu.DataOut{Final: true, ITT: 2, TTT: 7, Data: bytes.Repeat([]byte{9}, 100)}, true)
	seed(&pdu.TextRequest{Final: true, TTT: pdu.ReservedTag, Data: []byte("SendTargets=All\x00")}, false)
	seed(&pdu.Reject{Reason: pdu.RejectProtocolError, Header: make([]byte, pdu.BHSLen)}, false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), false)

	f.Fuzz(func(t *testing.T, data []byte, digests bool) {
		r := pdu.NewReader(bytes.NewReader(data), 4096)
		r.SetDigests(digests, digests)
		for range 8 {
			var p pdu.PDU
			err := r.ReadPDU(&p)
			if err != nil {
				var pe *pdu.ProtocolError
				if errors.As(err, &pe) {
					require.NotEmpty(t, pe.Error())
					if !pe.Fatal && p.DataSegmentLength() > 4096 {
						if r.DiscardData(&p) == nil {
							continue
						}
					}
					return
				}
				require.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF), "unexpected error %v", err)
				return
			}
			require.LessOrEqual(t, len(p.Data), 4096)
			// The whole PDU as read (header, AHS, data) re-frames, with
			// the same digests, into a PDU that reads back identical.
			var reframed bytes.Buffer
			w := pdu.NewWriter(&reframed)
			w.SetDigests(digests, digests)
			require.NoError(t, w.WritePDU(&p))
			rr := pdu.NewReader(bytes.NewReader(reframed.Bytes()), 4096)
			rr.SetDigests(digests, digests)
			var framed pdu.PDU
			require.NoError(t, rr.ReadPDU(&framed), "a PDU read with digests %v does not read back", digests)
			require.Equal(t, p.Header, framed.Header)
			require.True(t, bytes.Equal(p.AHS, framed.AHS) && bytes.Equal(p.Data, framed.Data), "AHS or data changed in a round trip")
			newMsg, ok := decoders[p.Opcode()]
			if !ok {
				continue
			}
			m := newMsg()
			if err := m.Decode(&p); err != nil {
				var pe *pdu.ProtocolError
				require.ErrorAs(t, err, &pe, "decode errors are protocol errors")
				continue
			}
			// What decoded cleanly re-encodes, and decodes again the same.
			var q pdu.PDU
			m.Encode(&q)
			again := newMsg()
			require.NoError(t, again.Decode(&q), "%v re-encoded from %x", p.Opcode(), p.Header)
		}
	})
}

// FuzzMessageRoundTrip builds well-typed messages from the fuzzer's bytes
// with gofuzz, sends them through the Writer and Reader, and requires that
// a message that decodes encodes to exactly the same bytes again
// (encode∘decode is the identity on everything the codec accepts).
func FuzzMessageRoundTrip(f *testing.F) {
	f.Add([]byte("seed"), uint8(pdu.OpSCSICommand), false)
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, uint8(pdu.OpDataIn), true)
	f.Add([]byte("login"), uint8(pdu.OpLoginReq), false)
	f.Fuzz(func(t *testing.T, data []byte, op uint8, digests bool) {
		newMsg, ok := decoders[pdu.Opcode(op&0x3f)]
		if !ok {
			return
		}
		m := newMsg()
		gofuzz.NewFromGoFuzz(data).NilChance(0.2).NumElements(0, 64).Fuzz(m)
		if c, ok := m.(*pdu.SCSICommand); ok && len(c.CDB) > 16+255 {
			c.CDB = c.CDB[:16+255]
		}
		wire := encodeWire(t, m, digests)
		r := pdu.NewReader(bytes.NewReader(wire), pdu.MaxDataSegmentLength)
		r.SetDigests(digests, digests)
		var p pdu.PDU
		require.NoError(t, r.ReadPDU(&p))
		got := newMsg()
		if err := got.Decode(&p); err != nil {
			var pe *pdu.ProtocolError
			require.ErrorAs(t, err, &pe)
			return
		}
		require.Equal(t, wire, encodeWire(t, got, digests))
	})
}
