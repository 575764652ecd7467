package fuzz

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/iscsi/isns"
)

// FuzzISNSRead feeds arbitrary bytes to the iSNSP message reader and to
// the one-PDU decoder, as an iSNS server (or anything answering on its
// port) could send them. Neither may panic; every error must be an I/O
// end or wrap isns.ErrFormat; a message that decodes must encode back to
// a message that decodes to the same attributes, and every attribute
// accessor must fail cleanly on values of the wrong shape.
func FuzzISNSRead(f *testing.F) {
	seed := func(m *isns.Message) {
		b, err := m.Append(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&isns.Message{Function: isns.DevAttrReg.Response(), XID: 1, Attrs: []isns.Attr{
		isns.String(isns.TagEntityID, "iscsikit.test"), isns.Uint32(isns.TagRegistrationPeriod, 900),
		isns.Addr(isns.TagPortalIPAddress, netip.MustParseAddr("127.0.0.1")), isns.Port(isns.TagPortalPort, 3260),
	}})
	seed(&isns.Message{Function: isns.DevAttrQry.Response(), XID: 2, Status: isns.StatusNoSuchEntry})
	seed(&isns.Message{Function: isns.DDReg.Response(), XID: 3, Attrs: []isns.Attr{isns.Uint32(isns.TagDDID, 1), isns.String(isns.TagDDSymbolicName, "dd")}})
	seed(&isns.Message{Function: isns.ESI, XID: 4, Flags: isns.FlagServer, Attrs: []isns.Attr{isns.String(isns.TagEntityID, "e"), isns.Delimiter()}})
	f.Add([]byte{0, 1, 0x80, 1, 0, 4, 0x44, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}) // first PDU of two
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := isns.ReadMessage(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, isns.ErrFormat) {
				t.Fatalf("ReadMessage: unexpected error %v", err)
			}
		} else {
			checkISNS(t, m)
		}
		if m, err := isns.Decode(data); err == nil {
			checkISNS(t, m)
		} else if !errors.Is(err, isns.ErrFormat) {
			t.Fatalf("Decode: unexpected error %v", err)
		}
	})
}

// checkISNS re-encodes a decoded message and checks it decodes the same,
// and exercises every accessor on every attribute.
func checkISNS(t *testing.T, m *isns.Message) {
	for _, a := range m.Attrs {
		_, _ = a.AsString()
		_, _ = a.AsUint32()
		if addr, err := a.AsAddr(); err == nil {
			require.True(t, addr.IsValid())
		}
	}
	b, err := m.Append(nil)
	if err != nil {
		return // too long for one PDU: a reassembled message
	}
	again, err := isns.Decode(b)
	require.NoError(t, err)
	require.Equal(t, m.Function, again.Function)
	require.Equal(t, m.XID, again.XID)
	require.Equal(t, m.Status, again.Status)
	require.Equal(t, len(m.Attrs), len(again.Attrs))
	for i := range m.Attrs {
		require.Equal(t, m.Attrs[i].Tag, again.Attrs[i].Tag)
		require.True(t, bytes.Equal(m.Attrs[i].Value, again.Attrs[i].Value))
	}
}

// FuzzISNSRoundTrip builds messages with gofuzz: every message whose
// attribute values are whole words encodes and decodes to itself.
func FuzzISNSRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		fz := gofuzz.NewFromGoFuzz(data).NilChance(0).NumElements(0, 8)
		var m isns.Message
		var fn uint16
		fz.Fuzz(&fn)
		fz.Fuzz(&m.XID)
		fz.Fuzz(&m.Flags)
		m.Function = isns.Function(fn)
		m.Flags &^= isns.FlagAuth | isns.FlagFirst | isns.FlagLast
		if m.Function.IsResponse() {
			var st uint32
			fz.Fuzz(&st)
			m.Status = isns.Status(st)
		}
		var n int
		fz.Fuzz(&n)
		for i := 0; i < n%8; i++ {
			var tag uint32
			var s string
			fz.Fuzz(&tag)
			fz.Fuzz(&s)
			m.Attrs = append(m.Attrs, isns.String(isns.Tag(tag), s))
		}
		b, err := m.Append(nil)
		require.NoError(t, err)
		got, err := isns.Decode(b)
		require.NoError(t, err)
		require.Equal(t, m.Function, got.Function)
		require.Equal(t, m.Flags, got.Flags)
		require.Equal(t, m.XID, got.XID)
		require.Equal(t, m.Status, got.Status)
		require.Len(t, got.Attrs, len(m.Attrs))
		for i, a := range got.Attrs {
			s, err := a.AsString()
			require.NoError(t, err)
			want, _ := m.Attrs[i].AsString()
			require.Equal(t, want, s)
		}
	})
}
