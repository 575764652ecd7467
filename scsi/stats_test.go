package scsi_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		op   byte
		kind scsi.CommandKind
	}{
		{0x08, scsi.KindRead}, {0x28, scsi.KindRead}, {0xa8, scsi.KindRead}, {0x88, scsi.KindRead},
		{0x0a, scsi.KindWrite}, {0x2a, scsi.KindWrite}, {0xaa, scsi.KindWrite}, {0x8a, scsi.KindWrite},
		{0x2e, scsi.KindWrite}, {0x41, scsi.KindWrite}, {0x93, scsi.KindWrite}, {0x89, scsi.KindWrite},
		{0x00, scsi.KindOther}, {0x12, scsi.KindOther}, {0x35, scsi.KindOther}, {0x9e, scsi.KindOther},
	} {
		require.Equal(t, tc.kind, scsi.KindOf([]byte{tc.op}), "opcode 0x%02x", tc.op)
	}
	require.Equal(t, scsi.KindOther, scsi.KindOf(nil))
}

func TestSenseKeyOf(t *testing.T) {
	fixed := scsi.IllegalRequestSense(0x24, 0)
	k, ok := scsi.SenseKeyOf(fixed)
	require.True(t, ok)
	require.Equal(t, scsi.SenseIllegalRequest, k)
	k, ok = scsi.SenseKeyOf([]byte{0x72, 0x06, 0x29, 0x00})
	require.True(t, ok)
	require.Equal(t, scsi.SenseUnitAttention, k)
	_, ok = scsi.SenseKeyOf([]byte{0x70})
	require.False(t, ok)
	_, ok = scsi.SenseKeyOf([]byte{0x7f, 1, 2})
	require.False(t, ok)
}

func TestLatencyBuckets(t *testing.T) {
	require.Equal(t, time.Microsecond, scsi.LatencyBound(0))
	require.Equal(t, 1024*time.Microsecond, scsi.LatencyBound(10))
	require.Equal(t, time.Duration(0), scsi.LatencyBound(scsi.NumLatencyBuckets-1))
	var c scsi.IOCounters
	res := scsi.Result{Status: scsi.StatusGood}
	for _, d := range []time.Duration{0, time.Microsecond, 1500 * time.Nanosecond, 3 * time.Microsecond, time.Millisecond, time.Minute} {
		c.Begin()
		c.End([]byte{0x28}, 0, 0, &res, d)
	}
	s := c.Snapshot()
	require.Equal(t, uint64(6), s.ReadLatency.Count)
	require.Equal(t, uint64(2), s.ReadLatency.Buckets[0]) // 0 and 1 µs
	require.Equal(t, uint64(1), s.ReadLatency.Buckets[1]) // 1.5 µs ≤ 2 µs
	require.Equal(t, uint64(1), s.ReadLatency.Buckets[2]) // 3 µs ≤ 4 µs
	require.Equal(t, uint64(1), s.ReadLatency.Buckets[10])
	require.Equal(t, uint64(1), s.ReadLatency.Buckets[scsi.NumLatencyBuckets-1])
	require.Equal(t, time.Minute+time.Millisecond+4500*time.Nanosecond+time.Microsecond, s.ReadLatency.Sum)
	// Every bucket's bound holds what lands in it.
	for i := 0; i < scsi.NumLatencyBuckets-1; i++ {
		var h scsi.IOCounters
		h.Begin()
		h.End([]byte{0x2a}, 0, 0, &res, scsi.LatencyBound(i))
		h.Begin()
		h.End([]byte{0x2a}, 0, 0, &res, scsi.LatencyBound(i)+time.Nanosecond)
		w := h.Snapshot().WriteLatency
		require.Equal(t, uint64(1), w.Buckets[i], "bucket %d", i)
		require.Equal(t, uint64(1), w.Buckets[i+1], "bucket %d", i+1)
	}
}

func TestIOCountersStatuses(t *testing.T) {
	var c scsi.IOCounters
	for _, res := range []scsi.Result{
		{Status: scsi.StatusCheckCondition, Sense: scsi.IllegalRequestSense(0x20, 0)},
		{Status: scsi.StatusCheckCondition, Sense: scsi.IllegalRequestSense(0x24, 0)},
		{Status: scsi.StatusReservationConflict},
		{Status: scsi.StatusBusy},
		{Status: scsi.StatusTaskSetFull},
		{Status: scsi.StatusTaskAborted},
		{Status: scsi.StatusGood, DataInLen: 36},
	} {
		c.Begin()
		c.End([]byte{0x12}, 0, res.DataInLen, &res, time.Microsecond)
	}
	c.Begin()
	c.Begin()
	c.Cancel()
	s := c.Snapshot()
	require.Equal(t, uint64(7), s.Others)
	require.Equal(t, uint64(2), s.SenseKeys[scsi.SenseIllegalRequest])
	require.Equal(t, uint64(1), s.ReservationConflicts)
	require.Equal(t, uint64(1), s.Busy)
	require.Equal(t, uint64(1), s.TaskSetFull)
	require.Equal(t, uint64(1), s.TaskAborted)
	require.Equal(t, uint64(6), s.Errors())
	require.Equal(t, uint64(36), s.BytesOut)
	require.Zero(t, s.ReadBytes, "INQUIRY data is not read data")
	require.Equal(t, int64(1), s.InFlight)
	require.Zero(t, s.ReadLatency.Count+s.WriteLatency.Count, "only reads and writes are timed")
}

func TestUnitStats(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	before := f.lu.Stats()
	require.Equal(t, uint64(2), before.Others, "the fixture's TEST UNIT READYs")
	require.Equal(t, uint64(2), before.SenseKeys[scsi.SenseUnitAttention])

	data := make([]byte, 4*bs)
	f.good(write10(0, 4), data, 0)
	f.good(read10(0, 2), nil, 2*bs)
	f.good(read10(2, 2), nil, 2*bs)
	res := f.run(nexusB, 0, read10(blocks, 1), nil, bs)
	f.requireSense(res, scsi.SenseIllegalRequest, 0x21, 0x00)

	s := f.lu.Stats()
	require.Equal(t, uint64(3), s.Reads)
	require.Equal(t, uint64(1), s.Writes)
	require.Equal(t, uint64(4*bs), s.BytesIn)
	require.Equal(t, uint64(4*bs), s.WriteBytes)
	require.Equal(t, uint64(4*bs), s.BytesOut)
	require.Equal(t, uint64(4*bs), s.ReadBytes)
	require.Equal(t, uint64(1), s.SenseKeys[scsi.SenseIllegalRequest])
	require.Equal(t, uint64(3), s.ReadLatency.Count)
	require.Equal(t, uint64(1), s.WriteLatency.Count)
	require.Zero(t, s.InFlight)

	require.Len(t, s.Nexuses, 2)
	byPort := map[string]scsi.NexusStats{}
	for _, n := range s.Nexuses {
		byPort[n.Nexus.InitiatorPort] = n
	}
	a, b := byPort[nexusA.InitiatorPort], byPort[nexusB.InitiatorPort]
	require.Equal(t, nexusA, a.Nexus)
	require.Equal(t, uint64(2), a.Reads)
	require.Equal(t, uint64(1), a.Writes)
	require.Equal(t, uint64(1), b.Reads)
	require.Equal(t, uint64(1), b.SenseKeys[scsi.SenseIllegalRequest])
	require.Zero(t, b.BytesOut)
}

func TestUnitStatsConcurrent(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nexusA
			if w%2 == 1 {
				n = nexusB
			}
			for i := 0; i < each; i++ {
				cmd := &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: read10(uint32(i), 1), DataIn: make([]byte, bs)}
				if res := f.tgt.Execute(context.Background(), cmd); res.Status != scsi.StatusGood {
					t.Errorf("status %v", res.Status)
				}
			}
		}()
	}
	wg.Wait()
	s := f.lu.Stats()
	require.Equal(t, uint64(workers*each), s.Reads)
	require.Equal(t, uint64(workers*each*bs), s.BytesOut)
	require.Equal(t, uint64(workers*each), s.ReadLatency.Count)
	var sum uint64
	for _, n := range s.Nexuses {
		sum += n.Reads
	}
	require.Equal(t, s.Reads, sum)
}

// recorder collects unit events.
type recorder struct {
	mu     sync.Mutex
	events []scsi.UnitEvent
}

func (r *recorder) observe(e scsi.UnitEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) take() []scsi.UnitEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

func TestUnitObserver(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	var rec recorder
	f.lu.SetObserver(rec.observe)

	// A reservation and its release.
	f.good([]byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	f.good([]byte{0x17, 0, 0, 0, 0, 0}, nil, 0)
	ev := rec.take()
	require.Len(t, ev, 2)
	require.Equal(t, scsi.UnitReservationChanged, ev[0].Kind)
	require.Equal(t, "RESERVE", ev[0].Action)
	require.Equal(t, nexusA, ev[0].Nexus)
	require.Same(t, f.lu, ev[0].Unit)
	require.Equal(t, "RELEASE", ev[1].Action)

	// A persistent reservation registration, and one that conflicts.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, 0, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, 1, 5, 0xa, 0))
	require.Equal(t, scsi.StatusReservationConflict, f.pr(nexusB, 1, 5, 0xb, 0))
	ev = rec.take()
	require.Len(t, ev, 2)
	require.Equal(t, "PERSISTENT RESERVE OUT REGISTER", ev[0].Action)
	require.Equal(t, "PERSISTENT RESERVE OUT RESERVE", ev[1].Action)

	// A LOGICAL UNIT RESET raises a unit attention for the other nexus.
	require.NoError(t, f.tgt.Transport().ResetLogicalUnit(nexusA, scsi.EncodeLUN(0)))
	ev = rec.take()
	require.NotEmpty(t, ev)
	seen := map[string]bool{}
	for _, e := range ev {
		require.Equal(t, scsi.UnitAttentionRaised, e.Kind)
		require.Equal(t, scsi.SenseUnitAttention, e.Sense.Key)
		require.Equal(t, byte(0x29), e.Sense.ASC)
		require.Equal(t, byte(0x03), e.Sense.ASCQ)
		require.Equal(t, nexusA.TargetName, e.Nexus.TargetName)
		require.Equal(t, nexusA.RelativePortID, e.Nexus.RelativePortID)
		seen[e.Nexus.InitiatorPort] = true
	}
	require.True(t, seen[nexusB.InitiatorPort])

	// Closing the unit takes it offline.
	require.NoError(t, f.lu.Close())
	ev = rec.take()
	require.Len(t, ev, 1)
	require.Equal(t, scsi.UnitOffline, ev[0].Kind)
	require.Equal(t, "closed", ev[0].Reason)

	// No observer, no events.
	f.lu.SetObserver(nil)
	f.run(nexusA, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	require.Empty(t, rec.take())
}

func TestUnitObserverOffline(t *testing.T) {
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Offline: true})
	require.NoError(t, err)
	defer lu.Close()
	var rec recorder
	lu.SetObserver(rec.observe)
	ev := rec.take()
	require.Len(t, ev, 1)
	require.Equal(t, scsi.UnitOffline, ev[0].Kind)
	require.Equal(t, "configured offline", ev[0].Reason)
}

// BenchmarkIOCounters measures what counting costs a command: Begin and
// End with a read's result, as the unit and the session each do.
func BenchmarkIOCounters(b *testing.B) {
	var c scsi.IOCounters
	cdb := read10(0, 8)
	res := scsi.Result{Status: scsi.StatusGood, DataInLen: 4096}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Begin()
			start := time.Now()
			c.End(cdb, 0, res.DataInLen, &res, time.Since(start))
		}
	})
}
