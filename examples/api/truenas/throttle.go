package truenas

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// maxThrottledSources bounds the sources a Server remembers failed
// logins of.
const maxThrottledSources = 4096

// loginThrottle spaces the answers to failed logins by source (an IPv4
// address, an IPv6 /64): each waits one delay after the source's last
// one, so a guesser gains nothing from many connections at once. It
// remembers at most max sources whose turns are still to come; sources
// past that share one turn.
type loginThrottle struct {
	delay time.Duration
	max   int

	mu   sync.Mutex
	next map[netip.Prefix]time.Time // when the source's last failure is answered
}

func newLoginThrottle(delay time.Duration, max int) *loginThrottle {
	return &loginThrottle{delay: delay, max: max, next: map[netip.Prefix]time.Time{}}
}

// sourceOf is the source a peer address is throttled as.
func sourceOf(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{} // no address: the shared turn
	}
	return p
}

// reserve takes the next turn of addr's source at time now and returns
// when the failure may be answered.
func (t *loginThrottle) reserve(addr netip.Addr, now time.Time) time.Time {
	key := sourceOf(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.next[key]; !ok && len(t.next) >= t.max {
		for k, at := range t.next {
			if !at.After(now) {
				delete(t.next, k)
			}
		}
		if len(t.next) >= t.max {
			key = netip.Prefix{}
		}
	}
	at := t.next[key]
	if at.Before(now) {
		at = now
	}
	at = at.Add(t.delay)
	t.next[key] = at
	return at
}

// wait holds a failed login of addr until its turn, or until ctx ends.
func (t *loginThrottle) wait(ctx context.Context, addr netip.Addr) {
	if t.delay <= 0 {
		return
	}
	timer := time.NewTimer(time.Until(t.reserve(addr, time.Now())))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
}

// peerAddr is the address r came from (the zero Addr if unknown).
func peerAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	return a
}
