package scsi

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// CommandKind sorts commands for counting: the reads and writes of
// user data, and everything else.
type CommandKind uint8

// Command kinds.
const (
	KindOther CommandKind = iota
	KindRead
	KindWrite
	numKinds
)

// String returns "read", "write" or "other".
func (k CommandKind) String() string {
	switch k {
	case KindRead:
		return "read"
	case KindWrite:
		return "write"
	default:
		return "other"
	}
}

// KindOf returns the kind of the command whose CDB is cdb: READ (6, 10,
// 12, 16) are reads; WRITE (6, 10, 12, 16), WRITE AND VERIFY, WRITE SAME
// and COMPARE AND WRITE are writes; the rest are other.
func KindOf(cdb []byte) CommandKind {
	if len(cdb) == 0 {
		return KindOther
	}
	switch cdb[0] {
	case 0x08, 0x28, 0xa8, 0x88:
		return KindRead
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x89:
		return KindWrite
	}
	return KindOther
}

// SenseKeyOf returns the sense key of encoded sense data, fixed (response
// code 0x70/0x71) or descriptor format (0x72/0x73); false when sense is
// too short or of another format.
func SenseKeyOf(sense []byte) (SenseKey, bool) {
	if len(sense) < 2 {
		return 0, false
	}
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		if len(sense) < 3 {
			return 0, false
		}
		return SenseKey(sense[2] & 0x0f), true
	case 0x72, 0x73:
		return SenseKey(sense[1] & 0x0f), true
	}
	return 0, false
}

// NumLatencyBuckets is the number of buckets of a latency histogram: one
// per power of two from 1 µs to 2^24 µs (about 16.8 s), and one for
// everything slower.
const NumLatencyBuckets = 26

// LatencyBound returns the upper bound (inclusive) of latency bucket i,
// 2^i microseconds; the last bucket has no bound and returns 0.
func LatencyBound(i int) time.Duration {
	if i < 0 || i >= NumLatencyBuckets-1 {
		return 0
	}
	return time.Microsecond << uint(i)
}

// latencyBucket returns the bucket of a command that took d.
func latencyBucket(d time.Duration) int {
	us := (int64(d) + 999) / 1000
	if us <= 1 {
		return 0
	}
	return min(bits.Len64(uint64(us-1)), NumLatencyBuckets-1)
}

// latencyCounters is a histogram of command latencies with fixed
// log-scale buckets; its count is the sum of its buckets, so a snapshot's
// count always matches them.
type latencyCounters struct {
	buckets [NumLatencyBuckets]atomic.Uint64
	sum     atomic.Int64 // nanoseconds
}

func (h *latencyCounters) observe(d time.Duration) {
	h.buckets[latencyBucket(d)].Add(1)
	h.sum.Add(int64(d))
}

// Latency is a snapshot of a latency histogram.
type Latency struct {
	// Count is the number of commands observed.
	Count uint64
	// Sum is their total latency.
	Sum time.Duration
	// Buckets holds, per bucket, the commands that took at most
	// LatencyBound(i) and more than LatencyBound(i-1) (not cumulative);
	// the last one holds the slower ones.
	Buckets [NumLatencyBuckets]uint64
}

func (h *latencyCounters) snapshot() Latency {
	var l Latency
	for i := range h.buckets {
		l.Buckets[i] = h.buckets[i].Load()
		l.Count += l.Buckets[i]
	}
	l.Sum = time.Duration(h.sum.Load())
	return l
}

// IOCounters counts the commands of one scope (a logical unit, an I_T
// nexus on it, an iSCSI session). The zero value is ready; its methods are
// safe for concurrent use and never allocate, so a transport can keep one
// per session on its data path.
type IOCounters struct {
	commands [numKinds]atomic.Uint64
	bytesIn  [numKinds]atomic.Uint64 // data the initiator sent (Data-Out), by command kind
	bytesOut [numKinds]atomic.Uint64 // data returned to the initiator (Data-In), by command kind
	sense    [16]atomic.Uint64
	conflict atomic.Uint64
	busy     atomic.Uint64
	full     atomic.Uint64
	aborted  atomic.Uint64
	inFlight atomic.Int64
	read     latencyCounters
	write    latencyCounters
}

// Begin counts a command as in flight; End or Cancel must follow.
func (c *IOCounters) Begin() { c.inFlight.Add(1) }

// Cancel undoes Begin for a command that did not run.
func (c *IOCounters) Cancel() { c.inFlight.Add(-1) }

// End counts a command that Begin counted: its kind (from cdb), the bytes
// it received (dataOut) and returned (dataIn), the status and sense key
// of res, and, for reads and writes, how long it took.
func (c *IOCounters) End(cdb []byte, dataOut, dataIn int, res *Result, took time.Duration) {
	c.inFlight.Add(-1)
	k := KindOf(cdb)
	c.commands[k].Add(1)
	if dataOut > 0 {
		c.bytesIn[k].Add(uint64(dataOut))
	}
	if dataIn > 0 {
		c.bytesOut[k].Add(uint64(dataIn))
	}
	switch res.Status {
	case StatusGood:
	case StatusCheckCondition:
		if key, ok := SenseKeyOf(res.Sense); ok {
			c.sense[key].Add(1)
		}
	case StatusReservationConflict:
		c.conflict.Add(1)
	case StatusBusy:
		c.busy.Add(1)
	case StatusTaskSetFull:
		c.full.Add(1)
	case StatusTaskAborted:
		c.aborted.Add(1)
	}
	switch k {
	case KindRead:
		c.read.observe(took)
	case KindWrite:
		c.write.observe(took)
	}
}

// IOStats is a snapshot of IOCounters. Counters only grow; InFlight is
// the commands running at the time of the snapshot.
type IOStats struct {
	// Commands counts the commands completed, by kind.
	Reads, Writes, Others uint64
	// BytesIn is the data received with commands (Data-Out); BytesOut
	// the data returned (Data-In), by every command.
	BytesIn, BytesOut uint64
	// ReadBytes is the part of BytesOut that reads returned; WriteBytes
	// the part of BytesIn that writes brought (the rest is parameter
	// data, INQUIRY and the like).
	ReadBytes, WriteBytes uint64
	// SenseKeys counts the CHECK CONDITIONs, indexed by sense key.
	SenseKeys [16]uint64
	// ReservationConflicts, Busy, TaskSetFull and TaskAborted count the
	// commands that ended with those statuses.
	ReservationConflicts, Busy, TaskSetFull, TaskAborted uint64
	// InFlight is the number of commands executing.
	InFlight int64
	// ReadLatency and WriteLatency are the latency histograms of reads
	// and writes.
	ReadLatency, WriteLatency Latency
}

// Errors returns the commands that ended with a status other than GOOD.
func (s *IOStats) Errors() uint64 {
	n := s.ReservationConflicts + s.Busy + s.TaskSetFull + s.TaskAborted
	for _, v := range s.SenseKeys {
		n += v
	}
	return n
}

// Snapshot returns the counters' current values.
func (c *IOCounters) Snapshot() IOStats {
	s := IOStats{
		Reads:                c.commands[KindRead].Load(),
		Writes:               c.commands[KindWrite].Load(),
		Others:               c.commands[KindOther].Load(),
		ReadBytes:            c.bytesOut[KindRead].Load(),
		WriteBytes:           c.bytesIn[KindWrite].Load(),
		ReservationConflicts: c.conflict.Load(),
		Busy:                 c.busy.Load(),
		TaskSetFull:          c.full.Load(),
		TaskAborted:          c.aborted.Load(),
		InFlight:             c.inFlight.Load(),
		ReadLatency:          c.read.snapshot(),
		WriteLatency:         c.write.snapshot(),
	}
	for i := range c.sense {
		s.SenseKeys[i] = c.sense[i].Load()
	}
	for k := range c.bytesIn {
		s.BytesIn += c.bytesIn[k].Load()
		s.BytesOut += c.bytesOut[k].Load()
	}
	return s
}

// UnitStats is a snapshot of a logical unit's counters: its total and
// its breakdown per I_T nexus.
type UnitStats struct {
	IOStats
	// Nexuses breaks the total down by the I_T nexuses that sent
	// commands, ordered by first command. Past maxRememberedNexuses the
	// rest are counted in one more entry whose InitiatorPort is "other".
	Nexuses []NexusStats
}

// NexusStats is the part of a unit's counters one I_T nexus accounts for.
// A nexus keeps its counters after it ends, so a session that logs in
// again through the same initiator port continues them.
type NexusStats struct {
	Nexus Nexus
	IOStats
}

// nexusCounters are the counters of one I_T nexus on a unit.
type nexusCounters struct {
	nexus Nexus
	IOCounters
}

// unitTelemetry is what a unit keeps for observation: its counters and
// the observer of its events.
type unitTelemetry struct {
	total IOCounters
	// nexuses maps nexus keys to their counters; copied on write (a new
	// nexus), so commands look theirs up without a lock.
	nexuses  atomic.Pointer[map[string]*nexusCounters]
	order    []*nexusCounters // guarded by mu
	overflow *nexusCounters   // guarded by mu
	mu       sync.Mutex
	observer atomic.Pointer[UnitObserver]
}

// nexus returns the counters of the nexus key, making them on its first
// command.
func (u *unitTelemetry) nexus(key string, n Nexus) *nexusCounters {
	if m := u.nexuses.Load(); m != nil {
		if c := (*m)[key]; c != nil {
			return c
		}
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.nexuses.Load()
	if old != nil {
		if c := (*old)[key]; c != nil {
			return c
		}
	}
	if len(u.order) >= maxRememberedNexuses {
		if u.overflow == nil {
			u.overflow = &nexusCounters{nexus: Nexus{InitiatorPort: "other"}}
		}
		return u.overflow
	}
	c := &nexusCounters{nexus: n}
	m := make(map[string]*nexusCounters, len(u.order)+1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[key] = c
	u.order = append(u.order, c)
	u.nexuses.Store(&m)
	return c
}

// executeCounted is execute with the unit's counters kept and the
// reservation commands that succeed reported to its observer. A command
// the unit did not take (it was closed: ok false) is not counted.
func (lu *LogicalUnit) executeCounted(ctx context.Context, cmd *Command, key string, t *Target) (Result, bool) {
	tel := &lu.telemetry
	nc := tel.nexus(key, cmd.Nexus)
	tel.total.Begin()
	nc.Begin()
	start := time.Now()
	res, ok := lu.execute(ctx, cmd, key, t)
	if !ok {
		tel.total.Cancel()
		nc.Cancel()
		return res, false
	}
	took := time.Since(start)
	in := min(res.DataInLen, len(cmd.DataIn))
	tel.total.End(cmd.CDB, len(cmd.DataOut), in, &res, took)
	nc.End(cmd.CDB, len(cmd.DataOut), in, &res, took)
	if res.Status == StatusGood && len(cmd.CDB) > 1 {
		if action := reservationAction(cmd.CDB); action != "" {
			tel.notify(UnitEvent{Kind: UnitReservationChanged, Unit: lu, Nexus: cmd.Nexus, Action: action})
		}
	}
	return res, true
}

// reservationAction names the reservation command cdb is, or "".
func reservationAction(cdb []byte) string {
	switch cdb[0] {
	case 0x16, 0x56:
		return "RESERVE"
	case 0x17, 0x57:
		return "RELEASE"
	case 0x5f:
		if sa := int(cdb[1] & 0x1f); sa < len(prOutActions) {
			return "PERSISTENT RESERVE OUT " + prOutActions[sa]
		}
	}
	return ""
}

// prOutActions names the PERSISTENT RESERVE OUT service actions (SPC-4
// table 212).
var prOutActions = [...]string{"REGISTER", "RESERVE", "RELEASE", "CLEAR", "PREEMPT", "PREEMPT AND ABORT", "REGISTER AND IGNORE EXISTING KEY", "REGISTER AND MOVE"}

// Stats returns a snapshot of the unit's counters: every command routed
// to it by a Target since it was made, in total and per I_T nexus.
func (lu *LogicalUnit) Stats() UnitStats {
	tel := &lu.telemetry
	s := UnitStats{IOStats: tel.total.Snapshot()}
	tel.mu.Lock()
	list := append([]*nexusCounters(nil), tel.order...)
	if tel.overflow != nil {
		list = append(list, tel.overflow)
	}
	tel.mu.Unlock()
	for _, c := range list {
		s.Nexuses = append(s.Nexuses, NexusStats{Nexus: c.nexus, IOStats: c.Snapshot()})
	}
	return s
}
