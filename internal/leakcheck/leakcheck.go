// Package leakcheck finds goroutines a test leaves behind, in the manner
// of go.uber.org/goleak but with the standard library only: it snapshots
// the goroutines running when a test starts and, when the test ends,
// waits a while for every goroutine started since to exit.
//
// Tests using it must not run in parallel with others (t.Parallel), since
// a parallel test's goroutines would count as leaks.
package leakcheck

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Goroutine is one goroutine of a stack dump.
type Goroutine struct {
	ID    uint64
	State string // as in the dump header: "running", "chan receive", ...
	Stack string // the full entry, header included
}

// All returns every goroutine but the caller's.
func All() []Goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	entries := bytes.Split(buf, []byte("\n\n"))
	out := make([]Goroutine, 0, len(entries))
	for i, e := range entries {
		if i == 0 {
			continue // the caller itself is always first
		}
		g, ok := parse(string(e))
		if ok {
			out = append(out, g)
		}
	}
	return out
}

// parse reads "goroutine 12 [chan receive]:\n..." .
func parse(entry string) (Goroutine, bool) {
	header, _, _ := strings.Cut(entry, "\n")
	rest, ok := strings.CutPrefix(header, "goroutine ")
	if !ok {
		return Goroutine{}, false
	}
	idStr, state, ok := strings.Cut(rest, " [")
	if !ok {
		return Goroutine{}, false
	}
	id, err := strconv.ParseUint(idStr, 10, 64)
	if err != nil {
		return Goroutine{}, false
	}
	state, _, _ = strings.Cut(state, "]")
	return Goroutine{ID: id, State: state, Stack: entry}, true
}

// benign reports whether g belongs to the runtime or the test framework.
func benign(g Goroutine) bool {
	for _, f := range []string{
		"testing.(*T).Run(",
		"testing.tRunner(",
		"testing.runTests(",
		"testing.(*M).",
		"testing.runFuzzing(",
		"testing.(*F).",
		"os/signal.signal_recv",
		"os/signal.loop",
		"runtime.ensureSigM",
	} {
		if strings.Contains(g.Stack, f) {
			return true
		}
	}
	return false
}

// Snapshot records the goroutines running now.
type Snapshot map[uint64]bool

// Take returns a snapshot of the goroutines running now.
func Take() Snapshot {
	s := make(Snapshot)
	for _, g := range All() {
		s[g.ID] = true
	}
	return s
}

// Leaked returns the goroutines running now that s does not hold and that
// are not the runtime's or the test framework's.
func (s Snapshot) Leaked() []Goroutine {
	var out []Goroutine
	for _, g := range All() {
		if !s[g.ID] && !benign(g) {
			out = append(out, g)
		}
	}
	return out
}

// Wait polls for up to timeout until no goroutine has leaked since s and
// returns those still running then.
func (s Snapshot) Wait(timeout time.Duration) []Goroutine {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		left := s.Leaked()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// DefaultTimeout is how long Check waits for goroutines to end.
const DefaultTimeout = 10 * time.Second

// Check snapshots the goroutines now and registers a cleanup, run after
// every cleanup registered later (servers shut down, connections closed),
// that fails t if goroutines started since are still running
// DefaultTimeout later. Call it first in a test.
func Check(t testing.TB) {
	t.Helper()
	s := Take()
	t.Cleanup(func() {
		if left := s.Wait(DefaultTimeout); len(left) > 0 {
			t.Errorf("%d goroutine(s) leaked:\n%s", len(left), Format(left))
		}
	})
}

// Format renders goroutines for a failure message, sorted by ID.
func Format(gs []Goroutine) string {
	gs = slices.Clone(gs)
	slices.SortFunc(gs, func(a, b Goroutine) int { return int(a.ID) - int(b.ID) })
	var b strings.Builder
	for _, g := range gs {
		fmt.Fprintf(&b, "%s\n\n", g.Stack)
	}
	return b.String()
}
