package leakcheck

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFindsALeakAndItsEnd(t *testing.T) {
	s := Take()
	stop := make(chan struct{})
	go func() { <-stop }()
	left := s.Wait(50 * time.Millisecond)
	require.Len(t, left, 1)
	require.Contains(t, left[0].Stack, "TestFindsALeakAndItsEnd")
	require.Equal(t, "chan receive", left[0].State)
	close(stop)
	require.Empty(t, s.Wait(time.Second))
}

func TestParse(t *testing.T) {
	tests := []struct {
		in string
		ok bool
		id uint64
	}{
		{"goroutine 42 [select]:\nmain.f()", true, 42},
		{"goroutine x [select]:", false, 0},
		{"not a goroutine", false, 0},
	}
	for _, tt := range tests {
		g, ok := parse(tt.in)
		require.Equal(t, tt.ok, ok, tt.in)
		require.Equal(t, tt.id, g.ID)
	}
}
