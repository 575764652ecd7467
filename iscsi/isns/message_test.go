package isns_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/iscsi/isns"
)

func TestMessageRoundTrip(t *testing.T) {
	m := &isns.Message{Function: isns.DevAttrReg, Flags: isns.FlagClient | isns.FlagReplace, XID: 7, Attrs: []isns.Attr{
		isns.String(isns.TagISCSIName, "iqn.2026-11.io.example:t"),
		isns.String(isns.TagEntityID, "abc"),
		isns.Delimiter(),
		isns.Addr(isns.TagPortalIPAddress, netip.MustParseAddr("192.0.2.1")),
		isns.Port(isns.TagPortalPort, 3260),
		isns.Empty(isns.TagPGTag),
	}}
	b, err := m.Append(nil)
	require.NoError(t, err)
	// The header: version 1, function, payload length, flags with first
	// and last, transaction 7, sequence 0; strings NUL-padded to words.
	require.Equal(t, []byte{0, 1, 0, 1}, b[0:4])
	require.Equal(t, len(b)-12, int(b[4])<<8|int(b[5]))
	require.Equal(t, []byte{0x9c, 0x00, 0, 7, 0, 0}, b[6:12])
	require.Equal(t, []byte{0, 0, 0, 32, 0, 0, 0, 28}, b[12:20])
	require.Equal(t, []byte{0, 0, 0, 1, 0, 0, 0, 4, 'a', 'b', 'c', 0}, b[48:60])

	got, err := isns.Decode(b)
	require.NoError(t, err)
	require.Equal(t, m.Function, got.Function)
	require.Equal(t, m.Flags, got.Flags)
	require.Equal(t, m.XID, got.XID)
	require.Len(t, got.Attrs, len(m.Attrs))
	name, err := got.Attrs[0].AsString()
	require.NoError(t, err)
	require.Equal(t, "iqn.2026-11.io.example:t", name)
	addr, err := got.Attrs[3].AsAddr()
	require.NoError(t, err)
	require.Equal(t, netip.MustParseAddr("192.0.2.1"), addr)
	port, err := got.Attrs[4].AsUint32()
	require.NoError(t, err)
	require.Equal(t, uint32(3260), port)
	require.Empty(t, got.Attrs[5].Value)

	// ReadMessage joins a message sent in two PDUs.
	rsp := &isns.Message{Function: isns.DevAttrQry.Response(), XID: 9, Status: isns.StatusSuccess, Attrs: []isns.Attr{isns.Uint32(isns.TagDDID, 5)}}
	one, err := rsp.Append(nil)
	require.NoError(t, err)
	payload := one[12:]
	first := append([]byte{0, 1, 0x80, 2, 0, 4, 0x44, 0x00, 0, 9, 0, 0}, payload[:4]...)
	second := append([]byte{0, 1, 0x80, 2, 0, byte(len(payload) - 4), 0x48, 0x00, 0, 9, 0, 1}, payload[4:]...)
	joined, err := isns.ReadMessage(bytes.NewReader(append(first, second...)))
	require.NoError(t, err)
	require.Equal(t, rsp.Function, joined.Function)
	id, err := joined.Attrs[0].AsUint32()
	require.NoError(t, err)
	require.Equal(t, uint32(5), id)
}

func TestDecodeErrors(t *testing.T) {
	valid, err := (&isns.Message{Function: isns.DevAttrReg.Response(), Attrs: []isns.Attr{isns.Uint32(isns.TagEntityIndex, 1)}}).Append(nil)
	require.NoError(t, err)
	for name, b := range map[string][]byte{
		"short":          valid[:8],
		"version":        append([]byte{0, 2}, valid[2:]...),
		"length":         valid[:len(valid)-4],
		"overrun":        append(append([]byte{}, valid[:len(valid)-8]...), 0, 0, 0, 99, 0, 0, 0, 0),
		"no status":      {0, 1, 0x80, 1, 0, 0, 0x0c, 0, 0, 0, 0, 0},
		"odd attribute":  {0, 1, 0x80, 1, 0, 12, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3},
		"authentication": {0, 1, 0x80, 1, 0, 4, 0x2c, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		_, err := isns.Decode(b)
		require.ErrorIs(t, err, isns.ErrFormat, name)
	}
	_, err = isns.String(isns.TagEntityID, "hello").AsUint32()
	require.ErrorIs(t, err, isns.ErrFormat)
	_, err = isns.Attr{Tag: isns.TagEntityID, Value: []byte("abcd")}.AsString()
	require.ErrorIs(t, err, isns.ErrFormat, "no NUL terminator")
	_, err = (&isns.Message{Attrs: []isns.Attr{{Tag: 1, Value: []byte{1}}}}).Append(nil)
	require.Error(t, err)
}

func TestServerAddress(t *testing.T) {
	for in, want := range map[string]string{
		"isns.example.com":      "isns.example.com:3205",
		"10.0.0.1:3300":         "10.0.0.1:3300",
		"[2001:db8::1]":         "[2001:db8::1]:3205",
		"[2001:db8::1]:1234":    "[2001:db8::1]:1234",
		"2001:db8::1":           "[2001:db8::1]:3205",
		"isns.example.com:3205": "isns.example.com:3205",
	} {
		got, err := isns.ServerAddress(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", ":3205", "host:0", "host:70000", "host:http", "a b", "http://x/"} {
		_, err := isns.ServerAddress(bad)
		require.Error(t, err, bad)
	}
}

// TestServerDownNeverBlocks: with nothing listening, Update returns at
// once, the client keeps retrying, and Close (with nothing registered)
// returns at once too.
func TestServerDownNeverBlocks(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	logs := &countingHandler{}
	c, err := isns.NewClient(isns.Options{Servers: []string{addr}, EntityID: "e", MaxRetry: time.Second, Logger: slog.New(logs)})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			c.Update(isns.Registration{Targets: []isns.Target{{Name: "iqn.2026-11.io.example:t"}}})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Update blocked on a server that is down")
	}
	require.Zero(t, c.Synced(addr))
	// Failures are logged once a minute; the retries in between at
	// debug level.
	deadline := time.Now().Add(60 * time.Second)
	for logs.count(slog.LevelDebug) < 2 {
		require.True(t, time.Now().Before(deadline), "the client stopped retrying")
		time.Sleep(100 * time.Millisecond)
	}
	require.Equal(t, 1, logs.count(slog.LevelWarn))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Close(ctx))

	_, err = isns.NewClient(isns.Options{Servers: []string{addr}})
	require.Error(t, err, "no entity ID")
	_, err = isns.NewClient(isns.Options{EntityID: "e"})
	require.Error(t, err, "no server")
	_, err = isns.NewClient(isns.Options{EntityID: "e", Servers: []string{"host:0"}})
	require.Error(t, err)
}

// countingHandler counts log records by level.
type countingHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = map[slog.Level]int{}
	}
	h.counts[r.Level]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[l]
}
