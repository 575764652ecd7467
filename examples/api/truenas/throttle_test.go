package truenas

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestLoginThrottlePerAddress: failed logins from one address are
// answered one delay apart however many connections they come on; other
// addresses wait only their own delay; the table of addresses stays
// bounded, addresses past its bound sharing one turn.
func TestLoginThrottlePerAddress(t *testing.T) {
	const d = time.Second
	th := newLoginThrottle(d, 4)
	now := time.Unix(1000, 0)
	a := netip.MustParseAddr("192.0.2.1")
	for i := 1; i <= 5; i++ {
		require.Equal(t, now.Add(time.Duration(i)*d), th.reserve(a, now), "failure %d from one address", i)
	}
	b := netip.MustParseAddr("192.0.2.2")
	require.Equal(t, now.Add(d), th.reserve(b, now))
	// Later, a's turns have passed: it waits one delay again.
	later := now.Add(time.Minute)
	require.Equal(t, later.Add(d), th.reserve(a, later))

	// Many addresses: the table keeps at most its bound; the overflow
	// shares a turn, so it is not a way around the delay.
	for i := range 100 {
		th.reserve(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), later)
	}
	require.LessOrEqual(t, len(th.next), 4+1)
	x := netip.MustParseAddr("203.0.113.9")
	first := th.reserve(x, later)
	require.True(t, th.reserve(netip.MustParseAddr("203.0.113.10"), later).After(first), "overflow addresses share one turn")
	// An IPv6 address is throttled by its /64 (one host has many).
	p := netip.MustParseAddr("2001:db8::1")
	q := netip.MustParseAddr("2001:db8::2")
	th2 := newLoginThrottle(d, 8)
	require.Equal(t, now.Add(d), th2.reserve(p, now))
	require.Equal(t, now.Add(2*d), th2.reserve(q, now))
}
