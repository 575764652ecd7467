package pdu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// message is what every PDU type implements.
type message interface {
	Encode(p *PDU)
	Decode(p *PDU) error
}

// roundTrip writes m through a Writer and reads it back through a Reader
// with the given digests, decoding into out.
func roundTrip(t *testing.T, m, out message, header, data bool) *PDU {
	t.Helper()
	var p PDU
	m.Encode(&p)
	var wire bytes.Buffer
	w := NewWriter(&wire)
	w.SetDigests(header, data)
	require.NoError(t, w.WritePDU(&p))
	require.Zero(t, wire.Len()%4, "PDUs are padded to 4 bytes")
	r := NewReader(&wire, MaxDataSegmentLength)
	r.SetDigests(header, data)
	var q PDU
	require.NoError(t, r.ReadPDU(&q))
	require.Zero(t, wire.Len(), "reader consumed exactly one PDU")
	require.NoError(t, out.Decode(&q))
	return &q
}

func TestRoundTripEveryOpcode(t *testing.T) {
	cdb32 := make([]byte, 32)
	for i := range cdb32 {
		cdb32[i] = byte(i + 1)
	}
	tests := []struct {
		name string
		in   message
		out  func() message
	}{
		{"NOP-Out", &NOPOut{Immediate: true, LUN: 1 << 48, ITT: 7, TTT: ReservedTag, CmdSN: 9, ExpStatSN: 3, Data: []byte("ping")}, func() message { return new(NOPOut) }},
		{"NOP-In", &NOPIn{LUN: 1 << 48, ITT: ReservedTag, TTT: 5, StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 33, Data: []byte("pong!")}, func() message { return new(NOPIn) }},
		{"SCSI Command", &SCSICommand{Final: true, Read: true, Attr: 1, LUN: 2 << 48, ITT: 11, ExpectedDataTransferLength: 4096, CmdSN: 12, ExpStatSN: 13, CDB: []byte{0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}}, func() message { return new(SCSICommand) }},
		{"SCSI Command, extended CDB and bidi AHS", &SCSICommand{Final: true, Read: true, Write: true, Attr: 2, ITT: 1, CDB: cdb32, HasBidiReadLength: true, BidiReadLength: 512, Data: []byte{1, 2, 3}}, func() message { return new(SCSICommand) }},
		{"SCSI Response", &SCSIResponse{Underflow: true, Status: 2, ITT: 11, StatSN: 4, ExpCmdSN: 5, MaxCmdSN: 6, ExpDataSN: 2, ResidualCount: 512, Data: AppendSenseData(nil, []byte{0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0})}, func() message { return new(SCSIResponse) }},
		{"Task Management Request", &TaskMgmtRequest{Immediate: true, Function: TMFAbortTask, LUN: 1 << 48, ITT: 20, RTT: 11, CmdSN: 14, ExpStatSN: 5, RefCmdSN: 12}, func() message { return new(TaskMgmtRequest) }},
		{"Task Management Response", &TaskMgmtResponse{Response: TMFResponseNoTask, ITT: 20, StatSN: 5, ExpCmdSN: 15, MaxCmdSN: 40}, func() message { return new(TaskMgmtResponse) }},
		{"Login Request", &LoginRequest{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, ITT: 1, CID: 1, CmdSN: 1, Data: []byte("InitiatorName=iqn.2026-11.io.example:x\x00")}, func() message { return new(LoginRequest) }},
		{"Login Response", &LoginResponse{Transit: true, CSG: 1, NSG: 3, ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 9, ITT: 1, StatSN: 1, ExpCmdSN: 1, MaxCmdSN: 32, Data: []byte("HeaderDigest=None\x00")}, func() message { return new(LoginResponse) }},
		{"Text Request", &TextRequest{Final: true, ITT: 3, TTT: ReservedTag, CmdSN: 2, ExpStatSN: 2, Data: []byte("SendTargets=All\x00")}, func() message { return new(TextRequest) }},
		{"Text Response", &TextResponse{Continue: true, ITT: 3, TTT: 77, StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 3, Data: []byte("TargetName=iqn.2026-11.io.example:t\x00")}, func() message { return new(TextResponse) }},
		{"SCSI Data-Out", &DataOut{Final: true, LUN: 1 << 48, ITT: 11, TTT: 99, ExpStatSN: 4, DataSN: 1, BufferOffset: 8192, Data: bytes.Repeat([]byte{0xab}, 8192)}, func() message { return new(DataOut) }},
		{"SCSI Data-In with status", &DataIn{Final: true, HasStatus: true, Underflow: true, ResidualCount: 1, LUN: 1 << 48, ITT: 11, TTT: ReservedTag, StatSN: 8, ExpCmdSN: 9, MaxCmdSN: 40, DataSN: 3, BufferOffset: 3 * 8192, Data: bytes.Repeat([]byte{0xcd}, 8191)}, func() message { return new(DataIn) }},
		{"Logout Request", &LogoutRequest{Immediate: true, ReasonCode: LogoutCloseSession, ITT: 30, CID: 1, CmdSN: 20, ExpStatSN: 9}, func() message { return new(LogoutRequest) }},
		{"Logout Response", &LogoutResponse{ITT: 30, StatSN: 9, ExpCmdSN: 21, MaxCmdSN: 52, Time2Wait: 2, Time2Retain: 20}, func() message { return new(LogoutResponse) }},
		{"SNACK Request", &SNACKRequest{Type: 1, LUN: 1 << 48, ITT: 11, TTT: ReservedTag, ExpStatSN: 4, BegRun: 2, RunLength: 3}, func() message { return new(SNACKRequest) }},
		{"Ready To Transfer", &R2T{LUN: 1 << 48, ITT: 11, TTT: 99, StatSN: 4, ExpCmdSN: 5, MaxCmdSN: 36, R2TSN: 1, BufferOffset: 65536, DesiredDataTransferLength: 65536}, func() message { return new(R2T) }},
		{"Asynchronous Message", &AsyncMessage{StatSN: 10, ExpCmdSN: 11, MaxCmdSN: 12, AsyncEvent: AsyncLogoutRequest, Parameter3: 2}, func() message { return new(AsyncMessage) }},
		{"Reject", &Reject{Reason: RejectProtocolError, StatSN: 10, ExpCmdSN: 11, MaxCmdSN: 12, Header: bytes.Repeat([]byte{0x11}, BHSLen)}, func() message { return new(Reject) }},
	}
	for _, tt := range tests {
		for _, dig := range []struct{ header, data bool }{{false, false}, {true, false}, {true, true}} {
			t.Run(tt.name, func(t *testing.T) {
				out := tt.out()
				roundTrip(t, tt.in, out, dig.header, dig.data)
				normalize(tt.in)
				normalize(out)
				require.Equal(t, tt.in, out)
			})
		}
	}
}

// normalize clears what a decoded message keeps that an encoded one was
// never given: the SCSI Command's internal CDB buffer.
func normalize(m message) {
	if c, ok := m.(*SCSICommand); ok {
		c.CDB = append([]byte(nil), c.CDB...)
		c.cdb = [len(c.cdb)]byte{}
	}
}

func TestSCSICommandWireLayout(t *testing.T) {
	var p PDU
	(&SCSICommand{Immediate: true, Final: true, Write: true, Attr: 1, LUN: 0x0001000000000000, ITT: 0x01020304,
		ExpectedDataTransferLength: 0x1000, CmdSN: 0x0a0b0c0d, ExpStatSN: 0x11121314,
		CDB: []byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 8, 0}, Data: make([]byte, 5)}).Encode(&p)
	h := p.Header
	require.Equal(t, byte(0x41), h[0], "I bit and opcode 0x01")
	require.Equal(t, byte(0xa1), h[1], "F, W and SIMPLE")
	require.Equal(t, byte(0), h[4], "TotalAHSLength")
	require.Equal(t, []byte{0, 0, 5}, h[5:8], "DataSegmentLength")
	require.Equal(t, uint64(0x0001000000000000), binary.BigEndian.Uint64(h[8:16]))
	require.Equal(t, uint32(0x01020304), binary.BigEndian.Uint32(h[16:20]))
	require.Equal(t, uint32(0x1000), binary.BigEndian.Uint32(h[20:24]))
	require.Equal(t, uint32(0x0a0b0c0d), binary.BigEndian.Uint32(h[24:28]))
	require.Equal(t, uint32(0x11121314), binary.BigEndian.Uint32(h[28:32]))
	require.Equal(t, []byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}, h[32:48])

	var wire bytes.Buffer
	require.NoError(t, NewWriter(&wire).WritePDU(&p))
	require.Equal(t, BHSLen+8, wire.Len(), "5 data bytes are padded to 8")
}

func TestDigestsCatchCorruption(t *testing.T) {
	var p PDU
	(&NOPOut{ITT: 1, TTT: ReservedTag, Data: []byte("hello, target")}).Encode(&p)
	encode := func() []byte {
		var wire bytes.Buffer
		w := NewWriter(&wire)
		w.SetDigests(true, true)
		require.NoError(t, w.WritePDU(&p))
		return wire.Bytes()
	}
	read := func(b []byte) error {
		r := NewReader(bytes.NewReader(b), 0)
		r.SetDigests(true, true)
		var q PDU
		return r.ReadPDU(&q)
	}
	require.NoError(t, read(encode()))

	b := encode()
	b[20] ^= 0x01 // a header byte
	err := read(b)
	require.ErrorIs(t, err, ErrHeaderDigest)
	var pe *ProtocolError
	require.ErrorAs(t, err, &pe)
	require.True(t, pe.Fatal, "a bad header digest loses framing")

	b = encode()
	b[BHSLen+4+2] ^= 0x80 // a data byte
	err = read(b)
	require.ErrorIs(t, err, ErrDataDigest)
	require.ErrorAs(t, err, &pe)
	require.False(t, pe.Fatal, "a bad data digest keeps framing")
	require.Equal(t, RejectDataDigest, pe.Reason)
}

func TestReaderLimitsAndTruncation(t *testing.T) {
	var p PDU
	(&NOPOut{ITT: 1, TTT: ReservedTag, Data: make([]byte, 100)}).Encode(&p)
	var wire bytes.Buffer
	require.NoError(t, NewWriter(&wire).WritePDU(&p))
	full := wire.Bytes()

	// Longer than the negotiated limit: a non-fatal error, and the data
	// can be skipped to stay in step.
	r := NewReader(bytes.NewReader(append(append([]byte(nil), full...), full...)), 64)
	var q PDU
	err := r.ReadHeader(&q)
	var pe *ProtocolError
	require.ErrorAs(t, err, &pe)
	require.False(t, pe.Fatal)
	require.NoError(t, r.DiscardData(&q))
	require.Error(t, r.ReadHeader(&q)) // the second copy is just as long
	require.NoError(t, r.DiscardData(&q))
	require.ErrorIs(t, r.ReadHeader(&q), io.EOF)

	// Cut anywhere: an error, never a PDU.
	for cut := 1; cut < len(full); cut++ {
		r := NewReader(bytes.NewReader(full[:cut]), 0)
		err := r.ReadPDU(&q)
		require.Error(t, err, "cut at %d", cut)
		require.True(t, errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF), "cut at %d: %v", cut, err)
	}
}

func TestDecodeRejectsMalformedFields(t *testing.T) {
	tests := []struct {
		name string
		msg  message
		mut  func(p *PDU)
		into message
	}{
		{"wrong opcode", &NOPOut{TTT: ReservedTag}, func(p *PDU) {}, new(SCSICommand)},
		{"Data-In status without F", &DataIn{Final: true, HasStatus: true}, func(p *PDU) { p.Header[1] &^= 0x80 }, new(DataIn)},
		{"Data-In overflow and underflow", &DataIn{Final: true, HasStatus: true, Overflow: true}, func(p *PDU) { p.Header[1] |= 0x02 }, new(DataIn)},
		{"R2T of zero bytes", &R2T{DesiredDataTransferLength: 1}, func(p *PDU) { binary.BigEndian.PutUint32(p.Header[44:], 0) }, new(R2T)},
		{"Data-Out with AHS", &DataOut{}, func(p *PDU) { p.Header[4] = 1; p.AHS = make([]byte, 4) }, new(DataOut)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p PDU
			tt.msg.Encode(&p)
			tt.mut(&p)
			err := tt.into.Decode(&p)
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			require.NotEmpty(t, pe.Error())
		})
	}
}

func TestPadding(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: 3, 8191: 1} {
		require.Equal(t, want, Padding(n), "Padding(%d)", n)
	}
}

// benchmarkDataIn measures the Data-In hot path: encode and write a
// MaxRecvDataSegmentLength-sized PDU.
func benchmarkDataIn(b *testing.B, size int, digests bool) {
	data := bytes.Repeat([]byte{0x5a}, size)
	w := NewWriter(io.Discard)
	w.SetDigests(digests, digests)
	var p PDU
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		(&DataIn{Final: true, ITT: 1, TTT: ReservedTag, DataSN: uint32(i), Data: data}).Encode(&p)
		if err := w.WritePDU(&p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteDataIn64K(b *testing.B)        { benchmarkDataIn(b, 64<<10, false) }
func BenchmarkWriteDataIn64KDigests(b *testing.B) { benchmarkDataIn(b, 64<<10, true) }

// benchmarkReadDataOut measures the Data-Out hot path: read a header, then
// its data into a caller's buffer (as the target does into a task buffer).
func benchmarkReadDataOut(b *testing.B, size int, digests bool) {
	var p PDU
	(&DataOut{Final: true, ITT: 1, TTT: 5, Data: bytes.Repeat([]byte{0xa5}, size)}).Encode(&p)
	var wire bytes.Buffer
	w := NewWriter(&wire)
	w.SetDigests(digests, digests)
	if err := w.WritePDU(&p); err != nil {
		b.Fatal(err)
	}
	one := wire.Bytes()
	src := bytes.NewReader(one)
	r := NewReader(src, size)
	r.SetDigests(digests, digests)
	dst := make([]byte, size)
	var q PDU
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(one)
		if err := r.ReadHeader(&q); err != nil {
			b.Fatal(err)
		}
		if err := r.ReadData(&q, dst); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReadDataOut64K(b *testing.B)        { benchmarkReadDataOut(b, 64<<10, false) }
func BenchmarkReadDataOut64KDigests(b *testing.B) { benchmarkReadDataOut(b, 64<<10, true) }

func BenchmarkDecodeSCSICommand(b *testing.B) {
	var p PDU
	(&SCSICommand{Final: true, Read: true, Attr: 1, ITT: 1, ExpectedDataTransferLength: 4096,
		CDB: []byte{0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0}}).Encode(&p)
	var m SCSICommand
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Decode(&p); err != nil {
			b.Fatal(err)
		}
	}
}
