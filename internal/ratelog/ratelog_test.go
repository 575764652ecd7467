package ratelog_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/ratelog"
)

// buffer is a goroutine-safe log sink.
type buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *buffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestLimitsPerSourceAndMessage(t *testing.T) {
	var out buffer
	h := ratelog.New(slog.NewTextHandler(&out, nil), ratelog.Options{Burst: 3, Window: 200 * time.Millisecond})
	log := slog.New(h)
	a := log.With("remote", "10.0.0.1:1234")
	a2 := log.With("remote", "10.0.0.1:5678") // same host, another port
	b := log.With("remote", "10.0.0.2:1")
	for i := 0; i < 50; i++ {
		a.Warn("login rejected", "i", i)
		a2.Warn("login rejected", "i", i)
	}
	b.Warn("login rejected")
	a.Info("session established")
	lines := out.lines()
	require.Len(t, lines, 5, "3 of the flood, b's, and the other message")
	require.Contains(t, lines[3], "remote=10.0.0.2:1")
	require.Contains(t, lines[4], "session established")

	// The window ends: one summary for the 97 left out.
	require.Eventually(t, func() bool { return len(out.lines()) == 6 }, 10*time.Second, 10*time.Millisecond)
	sum := out.lines()[5]
	require.Contains(t, sum, "login rejected (97 more in the last 200ms)")
	require.Contains(t, sum, "suppressed=97")
	require.Contains(t, sum, "level=WARN")

	// A new window writes again.
	a.Warn("login rejected")
	require.Len(t, out.lines(), 7)
}

func TestNoSummaryWithoutSuppression(t *testing.T) {
	var out buffer
	log := slog.New(ratelog.New(slog.NewTextHandler(&out, nil), ratelog.Options{Burst: 2, Window: 50 * time.Millisecond}))
	log.Info("one")
	log.Info("one")
	time.Sleep(100 * time.Millisecond)
	log.Info("one")
	require.Len(t, out.lines(), 3)
}

func TestMaxKeysBoundsMemory(t *testing.T) {
	var out buffer
	log := slog.New(ratelog.New(slog.NewTextHandler(&out, nil), ratelog.Options{Burst: 1, Window: time.Hour, MaxKeys: 10}))
	for i := 0; i < 1000; i++ {
		log.With("remote", "10.1."+string(rune('0'+i%10))+"."+strings.Repeat("1", 1+i/10%3)).Warn("x")
	}
	for i := 0; i < 1000; i++ {
		log.With("remote", "192.168.0."+strings.Repeat("9", 1+i%200)).Warn("flood")
	}
	require.Less(t, len(out.lines()), 50)
}
