package scsi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// sharedMem is a scsi.SharedStateStore in memory, shared by the units of
// a test as a RADOS object is by gateways: a swap notifies every watcher
// and waits for their callbacks, as a RADOS notify waits for its acks.
type sharedMem struct {
	mu       sync.Mutex
	data     []byte
	version  uint64
	watchers map[int]func()
	next     int
	// fail makes every access fail; swapRaces makes the next swaps
	// find the version changed (another writer got in first).
	fail      bool
	swapRaces int
	swaps     int
	// hang makes Load wait for its context, as a cluster that does not
	// answer.
	hang bool
}

var _ scsi.SharedStateStore = (*sharedMem)(nil)

func (m *sharedMem) Load(ctx context.Context) ([]byte, uint64, error) {
	m.mu.Lock()
	if m.hang {
		m.mu.Unlock()
		<-ctx.Done()
		return nil, 0, ctx.Err()
	}
	defer m.mu.Unlock()
	if m.fail {
		return nil, 0, errors.New("cluster unreachable")
	}
	return append([]byte(nil), m.data...), m.version, nil
}

func (m *sharedMem) CompareAndSwap(_ context.Context, version uint64, data []byte) (uint64, bool, error) {
	m.mu.Lock()
	if m.fail {
		m.mu.Unlock()
		return 0, false, errors.New("cluster unreachable")
	}
	if m.swapRaces > 0 {
		m.swapRaces--
		m.version++ // another writer's commit of the same state
		m.mu.Unlock()
		return 0, false, nil
	}
	if version != m.version {
		m.mu.Unlock()
		return 0, false, nil
	}
	m.data, m.version = append([]byte(nil), data...), m.version+1
	m.swaps++
	v := m.version
	ws := make([]func(), 0, len(m.watchers))
	for _, w := range m.watchers {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	m.notify(ws)
	return v, true, nil
}

// notify runs the watchers' callbacks and waits for them.
func (m *sharedMem) notify(ws []func()) {
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); w() }()
	}
	wg.Wait()
}

func (m *sharedMem) Watch(changed func()) (func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.watchers == nil {
		m.watchers = map[int]func(){}
	}
	id := m.next
	m.next++
	m.watchers[id] = changed
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		delete(m.watchers, id)
	}, nil
}

// Nexuses of the second gateway: relative port 2 (its portal group).
var (
	nexusAg2 = scsi.Nexus{InitiatorPort: nexusA.InitiatorPort, TargetName: "iqn.t", TargetPort: "iqn.t,t,0x2", RelativePortID: 2}
	nexusBg2 = scsi.Nexus{InitiatorPort: nexusB.InitiatorPort, TargetName: "iqn.t", TargetPort: "iqn.t,t,0x2", RelativePortID: 2}
	nexusCg2 = scsi.Nexus{InitiatorPort: nexusC.InitiatorPort, TargetName: "iqn.t", TargetPort: "iqn.t,t,0x2", RelativePortID: 2}
)

// gateways returns two units (gateway 1, reached through relative port
// 1, and gateway 2, port 2) sharing st.
func gateways(t *testing.T, st *sharedMem) (*fixture, *fixture) {
	t.Helper()
	g1 := newFixture(t, scsi.UnitConfig{SharedReservations: st})
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit0", SharedReservations: st})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	g2 := &fixture{t: t, tgt: tgt, lu: lu}
	for _, n := range []scsi.Nexus{nexusAg2, nexusBg2, nexusCg2} {
		g2.clearUAs(n)
	}
	g1.clearUAs(nexusC)
	return g1, g2
}

func TestSharedReservationsAcrossGateways(t *testing.T) {
	st := &sharedMem{}
	g1, g2 := gateways(t, st)
	w := make([]byte, bs)

	// REGISTER and RESERVE (write exclusive) through gateway 1.
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saReserve, typeWE, 0xa, 0))

	// Gateway 2 reads them.
	keys := g2.runGood(nexusBg2, prin(0x00), nil, 4096)
	require.Equal(t, uint32(8), binary.BigEndian.Uint32(keys[4:]))
	require.Equal(t, uint64(0xa), binary.BigEndian.Uint64(keys[8:]))
	res := g2.runGood(nexusBg2, prin(0x01), nil, 4096)
	require.Equal(t, uint32(16), binary.BigEndian.Uint32(res[4:]))
	require.Equal(t, uint64(0xa), binary.BigEndian.Uint64(res[8:]))
	require.Equal(t, byte(typeWE), res[8+13])
	full := g2.runGood(nexusBg2, prin(0x03), nil, 4096)
	require.Equal(t, uint16(1), binary.BigEndian.Uint16(full[8+18:]), "the registration's relative port")

	// Writes through gateway 2 conflict at once (its copy came with the
	// notification), reads do not; the same initiator through gateway 2
	// is another nexus, not registered.
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusAg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusGood, g2.run(nexusCg2, 0, read10(0, 1), nil, bs).Status)
	require.Equal(t, scsi.StatusGood, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)

	// PREEMPT through gateway 2 ends the holder's access on gateway 1,
	// which tells it REGISTRATIONS PREEMPTED.
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saPreempt, typeWE, 0xb, 0xa))
	g1.requireSense(g1.run(nexusA, 0, write10(0, 1), w, 0), scsi.SenseUnitAttention, 0x2a, 0x05)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusGood, g2.run(nexusBg2, 0, write10(0, 1), w, 0).Status)

	// CLEAR through gateway 1 (after registering again there) owes
	// gateway 2's registrant RESERVATIONS PREEMPTED.
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saClear, 0, 0xa, 0))
	g2.requireSense(g2.run(nexusBg2, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x03)
	require.Equal(t, scsi.StatusGood, g2.run(nexusBg2, 0, write10(0, 1), w, 0).Status)
	keys = g1.runGood(nexusA, prin(0x00), nil, 4096)
	require.Equal(t, uint32(0), binary.BigEndian.Uint32(keys[4:]))
}

func TestSharedReservationsReleaseAndMove(t *testing.T) {
	st := &sharedMem{}
	g1, g2 := gateways(t, st)
	w := make([]byte, bs)
	// A registrants-only reservation released on gateway 1 tells the
	// registrant on gateway 2 RESERVATIONS RELEASED.
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saReserve, typeWERO, 0xa, 0))
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRelease, typeWERO, 0xa, 0))
	g2.requireSense(g2.run(nexusBg2, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x04)

	// REGISTER AND MOVE through gateway 1 to a nexus of gateway 2.
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saReserve, typeWE, 0xa, 0))
	port := nexusC.InitiatorPort
	tid := make([]byte, 4+max((len(port)+1+3)&^3, 20))
	tid[0] = 0x45
	binary.BigEndian.PutUint16(tid[2:], uint16(len(tid)-4))
	copy(tid[4:], port)
	cdb, p := prout(saRegisterMove, typeWE, 0xa, 0xcc, 0)
	binary.BigEndian.PutUint16(p[18:], 2)
	binary.BigEndian.PutUint32(p[20:], uint32(len(tid)))
	p = append(p, tid...)
	binary.BigEndian.PutUint32(cdb[5:], uint32(len(p)))
	require.Equal(t, scsi.StatusGood, g1.run(nexusA, 0, cdb, p, 0).Status)
	require.Equal(t, scsi.StatusGood, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)

	// SPC-2 RESERVE conflicts with the persistent reservation held
	// through the other gateway (SPC-4 §5.13.3).
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusC, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0).Status)
	// APTPL is offered: the shared store is the persistence.
	caps := g2.runGood(nexusBg2, prin(0x02), nil, 4096)
	require.Equal(t, byte(0x01), caps[2]&0x01, "PTPL_C")
}

func TestSharedReservationsConcurrentRegisters(t *testing.T) {
	st := &sharedMem{}
	g1, g2 := gateways(t, st)
	const each = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for i := range each {
		for gi, g := range []*fixture{g1, g2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := scsi.Nexus{InitiatorPort: fmt.Sprintf("iqn.r%d,i,0x000000000001", i), TargetName: "iqn.t", TargetPort: "p", RelativePortID: uint16(gi + 1)}
				cdb, p := prout(saRegister, 0, 0, uint64(100+2*i+gi), 0)
				for range 4 { // past POWER ON OCCURRED
					cmd := &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: p}
					r := g.tgt.Execute(context.Background(), cmd)
					if r.Status == scsi.StatusGood {
						return
					}
				}
				errs <- fmt.Errorf("register %v failed", n)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	keys := g1.runGood(nexusA, prin(0x00), nil, 4096)
	require.Equal(t, uint32(8*2*each), binary.BigEndian.Uint32(keys[4:]))
	require.Equal(t, uint32(2*each), binary.BigEndian.Uint32(keys[0:]), "generation")
}

func TestSharedReservationsStoreTrouble(t *testing.T) {
	st := &sharedMem{}
	g1, _ := gateways(t, st)
	// Another writer winning the race a few times only costs retries.
	st.mu.Lock()
	st.swapRaces = 3
	st.mu.Unlock()
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRegister, 0, 0, 0xa))
	// A store that fails ends PERSISTENT RESERVE commands NOT READY,
	// while ordinary commands go on against the copy.
	st.mu.Lock()
	st.fail = true
	st.mu.Unlock()
	g1.requireSense(g1.run(nexusA, 0, prin(0x00), nil, 4096), scsi.SenseNotReady, 0x04, 0x00)
	cdb, p := prout(saReserve, typeWE, 0xa, 0, 0)
	g1.requireSense(g1.run(nexusA, 0, cdb, p, 0), scsi.SenseNotReady, 0x04, 0x00)
	require.Equal(t, scsi.StatusGood, g1.run(nexusA, 0, read10(0, 1), nil, bs).Status)
	// A store that does not answer ends them NOT READY too, after the
	// unit's deadline, not never.
	st.mu.Lock()
	st.fail, st.hang = false, true
	st.mu.Unlock()
	g1.requireSense(g1.run(nexusA, 0, prin(0x00), nil, 4096), scsi.SenseNotReady, 0x04, 0x00)
	st.mu.Lock()
	st.hang = false
	st.mu.Unlock()
	// A store that loses every race ends it ABORTED COMMAND.
	st.mu.Lock()
	st.fail, st.swapRaces = false, 1000
	st.mu.Unlock()
	g1.requireSense(g1.run(nexusA, 0, cdb, p, 0), scsi.SenseAbortedCommand, 0, 0)
	// A store that lost its state (a removed RADOS object: version 0)
	// is adopted as empty, and the next commit makes it again.
	st.mu.Lock()
	st.data, st.version, st.swapRaces = nil, 0, 0
	st.mu.Unlock()
	keys := g1.runGood(nexusA, prin(0x00), nil, 4096)
	require.Equal(t, uint32(0), binary.BigEndian.Uint32(keys[4:]))
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saReserve, typeWE, 0xa, 0))
	// A unit with both kinds of store is refused.
	_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{SharedReservations: st, Reservations: &memStore{}})
	require.ErrorIs(t, err, scsi.ErrInvalidConfig)
	// A damaged state is refused at start.
	st.mu.Lock()
	st.data, st.swapRaces = []byte("{"), 0
	st.mu.Unlock()
	_, err = scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{SharedReservations: st})
	require.Error(t, err)
}

// runGood runs cdb through n and requires GOOD.
func (f *fixture) runGood(n scsi.Nexus, cdb, out []byte, inLen int) []byte {
	f.t.Helper()
	res := f.run(n, 0, cdb, out, inLen)
	require.Equal(f.t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
	return f.lastIn
}

// BenchmarkWriteSharedReservation measures WRITE (10) of 4 KiB by a
// registrant under another nexus's Write Exclusive, Registrants Only
// reservation kept in a shared store (the longest check: not the holder,
// registered, ALL_TG_PT looked up): it reads the unit's copy, so the
// shared store costs the data path nothing.
func BenchmarkWriteSharedReservation(b *testing.B) {
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "bench", WriteCache: true, SharedReservations: &sharedMem{}})
	require.NoError(b, err)
	defer lu.Close()
	tgt := scsi.NewTarget()
	require.NoError(b, tgt.Attach(0, lu))
	ctx := context.Background()
	do := func(n scsi.Nexus, sa, typ byte, key, saKey uint64) scsi.Status {
		tgt.Execute(ctx, &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: make([]byte, 6)}) // POWER ON OCCURRED
		cdb, p := prout(sa, typ, key, saKey, 0)
		return tgt.Execute(ctx, &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: p}).Status
	}
	require.Equal(b, scsi.StatusGood, do(nexusB, saRegister, 0, 0, 0xb))
	require.Equal(b, scsi.StatusGood, do(nexusB, saReserve, typeWERO, 0xb, 0))
	require.Equal(b, scsi.StatusGood, do(nexusA, saRegister, 0, 0, 0xa))
	const size = 4 << 10
	cmd := scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: write10(0, size/bs), DataOut: make([]byte, size)}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if res := tgt.Execute(ctx, &cmd); res.Status != scsi.StatusGood {
			b.Fatalf("status 0x%02x sense % x", res.Status, res.Sense)
		}
	}
}

// A reopen that brings another shared store follows the new one: its
// state becomes the unit's, and the old store's changes no longer reach
// the unit.
func TestSharedReservationsReopenSwitchesStore(t *testing.T) {
	old, next := &sharedMem{}, &sharedMem{}
	f := newFixture(t, scsi.UnitConfig{SharedReservations: old})
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeWE, 0xa, 0))
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status)

	require.NoError(t, f.lu.Reopen(context.Background(), backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit0", SharedReservations: next}))
	f.clearUAs(nexusB)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status, "the new store holds no reservation")
	old.mu.Lock()
	watchers := len(old.watchers)
	old.mu.Unlock()
	require.Zero(t, watchers, "the old store is still watched")
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegister, 0, 0, 0xb))
	next.mu.Lock()
	require.NotEmpty(t, next.data)
	next.mu.Unlock()
}

// NoReservations withdraws every reservation command; a unit with a
// shared store offers them all; REPORT SUPPORTED OPERATION CODES says the
// same as the commands do.
func TestReservationCommandsOffered(t *testing.T) {
	reserve6 := []byte{0x16, 0, 0, 0, 0, 0}
	oneCommand := func(f *fixture, op byte, sa uint16) byte {
		cdb := []byte{0xa3, 0x0c, 0x01, op, 0, 0, 0, 0, 0x10, 0, 0, 0}
		if sa != 0xffff {
			cdb[2] = 0x02
			binary.BigEndian.PutUint16(cdb[4:], sa)
		}
		return f.runGood(nexusA, cdb, nil, 4096)[1] & 0x07 // SUPPORT
	}
	for _, tc := range []struct {
		name            string
		cfg             scsi.UnitConfig
		spc2, prOffered bool
	}{
		{"local", scsi.UnitConfig{}, true, true},
		{"shared", scsi.UnitConfig{SharedReservations: &sharedMem{}}, true, true},
		{"none", scsi.UnitConfig{NoReservations: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			for _, c := range []struct {
				cdb     []byte
				op      byte
				sa      uint16
				offered bool
			}{
				{reserve6, 0x16, 0xffff, tc.spc2},
				{prin(0x00), 0x5e, 0, tc.prOffered},
			} {
				res := f.run(nexusA, 0, c.cdb, nil, 4096)
				if c.offered {
					require.Equal(t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
					require.Equal(t, byte(3), oneCommand(f, c.op, c.sa))
				} else {
					f.requireSense(res, scsi.SenseIllegalRequest, 0x20, 0)
					require.Equal(t, byte(1), oneCommand(f, c.op, c.sa))
				}
			}
		})
	}
	_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{NoReservations: true, Reservations: &memStore{}})
	require.ErrorIs(t, err, scsi.ErrInvalidConfig)
}

// PREEMPT AND ABORT through one gateway aborts the preempted nexus's task
// running in the other.
func TestSharedReservationsPreemptAndAbortAcrossGateways(t *testing.T) {
	st := &sharedMem{}
	dev := &gatedDevice{Memory: backend.NewMemory(blocks * bs), entered: make(chan struct{}, 1), release: make(chan struct{})}
	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{Serial: "gated", SharedReservations: st})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	g1 := &fixture{t: t, tgt: tgt, lu: lu}
	g1.clearUAs(nexusB)
	_, g2 := gateways(t, st)

	require.Equal(t, scsi.StatusGood, g1.pr(nexusB, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, g2.pr(nexusAg2, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, g2.pr(nexusAg2, saReserve, typeWERO, 0xa, 0))
	done := make(chan scsi.Result, 1)
	go func() {
		cmd := &scsi.Command{Nexus: nexusB, LUN: scsi.EncodeLUN(0), CDB: write10(0, 1), DataOut: make([]byte, bs)}
		done <- tgt.Execute(context.Background(), cmd)
	}()
	<-dev.entered // B's write is inside gateway 1's device
	cdb, p := prout(0x05, typeEA, 0xa, 0xb, 0)
	require.Equal(t, scsi.StatusGood, g2.run(nexusAg2, 0, cdb, p, 0).Status)
	close(dev.release)
	require.Equal(t, scsi.StatusTaskAborted, (<-done).Status)
	g1.requireSense(g1.run(nexusB, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x05)
	// Unregistered now, B may read but not write under A's Write
	// Exclusive, Registrants Only (preempting a non-holder keeps the
	// reservation's type).
	require.Equal(t, scsi.StatusGood, g1.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status)
}

// A REGISTER with ALL_TG_PT through one gateway registers the initiator
// port through every target port, the other gateway's too: it holds the
// reservation it takes through both, and a PREEMPT of its key tells both
// of its nexuses.
func TestSharedReservationsAllTargetPorts(t *testing.T) {
	st := &sharedMem{}
	g1, g2 := gateways(t, st)
	w := make([]byte, bs)
	caps := g1.runGood(nexusA, prin(0x02), nil, 4096)
	require.Equal(t, byte(0x04), caps[2]&0x04, "ATP_C")
	cdb, p := prout(saRegister, 0, 0, 0xa, 0x04)
	g1.runGood(nexusA, cdb, p, 0)
	require.Equal(t, scsi.StatusGood, g1.pr(nexusA, saReserve, typeWE, 0xa, 0))

	// Through gateway 2 the same initiator port is registered and holds.
	require.Equal(t, scsi.StatusGood, g2.run(nexusAg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	keys := g2.runGood(nexusBg2, prin(0x00), nil, 4096)
	require.Equal(t, uint32(8), binary.BigEndian.Uint32(keys[4:]), "one registration")
	full := g2.runGood(nexusBg2, prin(0x03), nil, 4096)
	require.Equal(t, byte(0x03), full[8+12], "R_HOLDER and ALL_TG_PT")
	// Gateway 2's path may release what gateway 1's path reserved.
	require.Equal(t, scsi.StatusGood, g2.pr(nexusAg2, saRelease, typeWE, 0xa, 0))
	require.Equal(t, scsi.StatusGood, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusGood, g2.pr(nexusAg2, saReserve, typeEA, 0xa, 0))

	// PREEMPT by B through gateway 2: both of A's nexuses hear it.
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saPreempt, typeWE, 0xb, 0xa))
	g1.requireSense(g1.run(nexusA, 0, write10(0, 1), w, 0), scsi.SenseUnitAttention, 0x2a, 0x05)
	g2.requireSense(g2.run(nexusAg2, 0, write10(0, 1), w, 0), scsi.SenseUnitAttention, 0x2a, 0x05)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusAg2, 0, write10(0, 1), w, 0).Status)
}

// An SPC-2 reservation taken through one gateway fences the other
// gateway's nexuses, is released through the gateway that took it, and
// excludes persistent reservations there too; a reset through either
// gateway, and the loss of the holder's nexus, release it on both, and a
// LOGICAL UNIT RESET through one raises 29/03 on the other's nexuses.
func TestSharedSPC2ReservationAcrossGateways(t *testing.T) {
	st := &sharedMem{}
	g1, g2 := gateways(t, st)
	w := make([]byte, bs)
	reserve6, release6 := []byte{0x16, 0, 0, 0, 0, 0}, []byte{0x17, 0, 0, 0, 0, 0}
	reserve10 := []byte{0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}

	g1.runGood(nexusA, reserve6, nil, 0)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusBg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusAg2, 0, read10(0, 1), nil, bs).Status, "the same initiator through gateway 2 is another nexus")
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusBg2, 0, reserve10, nil, 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, g2.pr(nexusBg2, saRegister, 0, 0, 0xb), "PR OUT of another nexus conflicts")
	g2.runGood(nexusBg2, release6, nil, 0) // another nexus's release changes nothing
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusBg2, 0, write10(0, 1), w, 0).Status)
	require.Equal(t, scsi.StatusGood, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)

	g1.runGood(nexusA, release6, nil, 0)
	require.Equal(t, scsi.StatusGood, g2.run(nexusBg2, 0, write10(0, 1), w, 0).Status)

	// A registration through gateway 2 makes RESERVE conflict on gateway 1.
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, reserve6, nil, 0).Status)
	require.Equal(t, scsi.StatusGood, g2.pr(nexusBg2, saRegister, 0, 0xb, 0))

	// The loss of the holder's nexus on gateway 2 releases it on gateway 1.
	g2.runGood(nexusBg2, reserve10, nil, 0)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)
	g1.tgt.Transport().NexusLost(nexusA) // not the holder: nothing changes
	g1.clearUAs(nexusA)
	require.Equal(t, scsi.StatusReservationConflict, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)
	g2.tgt.Transport().NexusLost(nexusBg2)
	require.Equal(t, scsi.StatusGood, g1.run(nexusA, 0, write10(0, 1), w, 0).Status)

	// A LOGICAL UNIT RESET through gateway 2 releases gateway 1's holder.
	g1.runGood(nexusA, reserve6, nil, 0)
	g2.clearUAs(nexusCg2)
	require.Equal(t, scsi.StatusReservationConflict, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	require.NoError(t, g2.tgt.Transport().ResetLogicalUnit(nexusCg2, scsi.EncodeLUN(0)))
	g2.requireSense(g2.run(nexusCg2, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x29, 0x03)
	require.Equal(t, scsi.StatusGood, g2.run(nexusCg2, 0, write10(0, 1), w, 0).Status)
	// ... and gateway 1's nexus hears of the reset.
	g1.requireSense(g1.run(nexusA, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x29, 0x03)
	g1.runGood(nexusA, reserve6, nil, 0)
	g1.runGood(nexusA, release6, nil, 0)
}
