package scsi_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// PERSISTENT RESERVE OUT service actions and types used below.
const (
	saRegister       = 0x00
	saReserve        = 0x01
	saRelease        = 0x02
	saClear          = 0x03
	saPreempt        = 0x04
	saRegisterIgnore = 0x06
	saRegisterMove   = 0x07

	typeWE   = 0x1
	typeEA   = 0x3
	typeWERO = 0x5
	typeEARO = 0x6
	typeWEAR = 0x7
	typeEAAR = 0x8
)

// nexusC is a third initiator that never registers.
var nexusC = scsi.Nexus{InitiatorPort: "iqn.c,i,0x000000000001", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}

func prout(sa, typ byte, key, saKey uint64, flags byte) ([]byte, []byte) {
	cdb := []byte{0x5f, sa, typ, 0, 0, 0, 0, 0, 24, 0}
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[0:], key)
	binary.BigEndian.PutUint64(p[8:], saKey)
	p[20] = flags
	return cdb, p
}

func prin(sa byte) []byte { return []byte{0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0} }

// pr runs PERSISTENT RESERVE OUT through nexus n and returns the status.
func (f *fixture) pr(n scsi.Nexus, sa, typ byte, key, saKey uint64) scsi.Status {
	cdb, p := prout(sa, typ, key, saKey, 0)
	return f.run(n, 0, cdb, p, 0).Status
}

// clearUAs consumes pending unit attentions of n.
func (f *fixture) clearUAs(n scsi.Nexus) {
	for i := 0; i < 8; i++ {
		if f.run(n, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0).Status == scsi.StatusGood {
			return
		}
	}
}

func TestPersistentReservationAccess(t *testing.T) {
	read, write := read10(0, 1), write10(0, 1)
	// For each type: may a registered non-holder read and write, and may
	// an unregistered nexus (SPC-4 table 64)?
	for _, tc := range []struct {
		name                  string
		typ                   byte
		regRead, regWrite     bool
		unregRead, unregWrite bool
		registrantHoldsToo    bool
		releaseRaisesUA       bool
	}{
		{name: "write exclusive", typ: typeWE, regRead: true, unregRead: true},
		{name: "exclusive access", typ: typeEA},
		{name: "write exclusive registrants only", typ: typeWERO, regRead: true, regWrite: true, unregRead: true, releaseRaisesUA: true},
		{name: "exclusive access registrants only", typ: typeEARO, regRead: true, regWrite: true, releaseRaisesUA: true},
		{name: "write exclusive all registrants", typ: typeWEAR, regRead: true, regWrite: true, unregRead: true, registrantHoldsToo: true, releaseRaisesUA: true},
		{name: "exclusive access all registrants", typ: typeEAAR, regRead: true, regWrite: true, registrantHoldsToo: true, releaseRaisesUA: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, scsi.UnitConfig{})
			f.clearUAs(nexusC)
			require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
			require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegister, 0, 0, 0xb))
			require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, tc.typ, 0xa, 0))
			// The holder reads and writes.
			require.Equal(t, scsi.StatusGood, f.run(nexusA, 0, read, nil, bs).Status)
			require.Equal(t, scsi.StatusGood, f.run(nexusA, 0, write, make([]byte, bs), 0).Status)
			expect := func(n scsi.Nexus, cdb, out []byte, ok bool) {
				t.Helper()
				want := scsi.StatusReservationConflict
				if ok {
					want = scsi.StatusGood
				}
				require.Equal(t, want, f.run(n, 0, cdb, out, bs).Status, "%x", cdb[0])
			}
			expect(nexusB, read, nil, tc.regRead)
			expect(nexusB, write, make([]byte, bs), tc.regWrite)
			expect(nexusC, read, nil, tc.unregRead)
			expect(nexusC, write, make([]byte, bs), tc.unregWrite)
			// Commands SPC-4 always allows.
			expect(nexusC, []byte{0x12, 0, 0, 0, 36, 0}, nil, true)
			expect(nexusC, []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, true)
			expect(nexusC, []byte{0, 0, 0, 0, 0, 0}, nil, true)
			// Another type from the holder, or any reservation from
			// elsewhere, conflicts; the same one again is fine.
			require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, tc.typ, 0xa, 0))
			other := byte(typeWE)
			if tc.typ == typeWE {
				other = typeEA
			}
			require.Equal(t, scsi.StatusReservationConflict, f.pr(nexusA, saReserve, other, 0xa, 0))
			if !tc.registrantHoldsToo {
				require.Equal(t, scsi.StatusReservationConflict, f.pr(nexusB, saReserve, tc.typ, 0xb, 0))
				// A registered non-holder's RELEASE changes nothing.
				require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRelease, tc.typ, 0xb, 0))
			}
			// SPC-2 RESERVE conflicts while registrations exist.
			require.Equal(t, scsi.StatusReservationConflict, f.run(nexusA, 0, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0).Status)
			// RELEASE with the wrong type is refused.
			cdb, p := prout(saRelease, other, 0xa, 0, 0)
			f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x26, 0x04)
			require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRelease, tc.typ, 0xa, 0))
			if tc.releaseRaisesUA {
				f.requireSense(f.run(nexusB, 0, read, nil, bs), scsi.SenseUnitAttention, 0x2a, 0x04)
			}
			expect(nexusC, write, make([]byte, bs), true)
		})
	}
}

func TestPersistentReserveInData(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	in := f.good(prin(0x00), nil, 4096)
	require.Equal(t, make([]byte, 8), in, "no keys, generation 0")
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0x1111))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegisterIgnore, 0, 0x999, 0x2222))
	in = f.good(prin(0x00), nil, 4096)
	require.Equal(t, uint32(2), binary.BigEndian.Uint32(in[0:]), "generation")
	require.Equal(t, uint32(16), binary.BigEndian.Uint32(in[4:]))
	require.ElementsMatch(t, []uint64{0x1111, 0x2222}, []uint64{binary.BigEndian.Uint64(in[8:]), binary.BigEndian.Uint64(in[16:])})
	// A short allocation length truncates.
	short := prin(0x00)
	short[7], short[8] = 0, 12
	require.Len(t, f.good(short, nil, 4096), 12)

	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeWE, 0x1111, 0))
	in = f.good(prin(0x01), nil, 4096)
	require.Equal(t, uint32(16), binary.BigEndian.Uint32(in[4:]))
	require.Equal(t, uint64(0x1111), binary.BigEndian.Uint64(in[8:]))
	require.Equal(t, byte(typeWE), in[8+13])

	caps := f.good(prin(0x02), nil, 4096)
	require.Equal(t, uint16(8), binary.BigEndian.Uint16(caps))
	require.Zero(t, caps[2]&0x01, "PTPL_C without a store")
	require.Equal(t, []byte{0xea, 0x01}, caps[4:6])

	full := f.good(prin(0x03), nil, 4096)
	require.Equal(t, uint32(len(full)-8), binary.BigEndian.Uint32(full[4:]))
	holders := 0
	for off := 8; off < len(full); {
		d := full[off:]
		if d[12]&0x01 != 0 {
			holders++
			require.Equal(t, uint64(0x1111), binary.BigEndian.Uint64(d))
			require.Equal(t, byte(typeWE), d[13])
		}
		tidLen := int(binary.BigEndian.Uint32(d[20:]))
		require.Equal(t, byte(0x45), d[24], "iSCSI TransportID, initiator port format")
		off += 24 + tidLen
	}
	require.Equal(t, 1, holders)
	// Unknown service actions are refused.
	f.fails(prin(0x04), nil, 4096, scsi.SenseIllegalRequest, 0x24, 0)
}

func TestPersistentReserveOutErrors(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	for _, tc := range []struct {
		name   string
		n      scsi.Nexus
		sa     byte
		typ    byte
		key    uint64
		saKey  uint64
		status scsi.Status
	}{
		{"unregistered nexus quoting a key", nexusA, saRegister, 0, 0x5, 0x6, scsi.StatusReservationConflict},
		{"unregistered nexus with a zero key does nothing", nexusA, saRegister, 0, 0, 0, scsi.StatusGood},
		{"register", nexusA, saRegister, 0, 0, 0xa, scsi.StatusGood},
		{"register again with the wrong key", nexusA, saRegister, 0, 0xb, 0xc, scsi.StatusReservationConflict},
		{"reserve with the wrong key", nexusA, saReserve, typeEA, 0xb, 0, scsi.StatusReservationConflict},
		{"reserve from an unregistered nexus", nexusB, saReserve, typeEA, 0, 0, scsi.StatusReservationConflict},
		{"clear with the wrong key", nexusA, saClear, 0, 0xb, 0, scsi.StatusReservationConflict},
		{"preempt a key nobody holds", nexusA, saPreempt, typeEA, 0xa, 0x77, scsi.StatusReservationConflict},
		{"register and move without a reservation", nexusA, saRegisterMove, 0, 0xa, 0xb, scsi.StatusReservationConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cdb, p := prout(tc.sa, tc.typ, tc.key, tc.saKey, 0)
			if tc.sa == saRegisterMove {
				cdb[8] = 48
				p = append(p, make([]byte, 24)...)
			}
			require.Equal(t, tc.status, f.run(tc.n, 0, cdb, p, 0).Status)
		})
	}
	// Malformed requests.
	cdb, p := prout(saReserve, 0x2, 0xa, 0, 0) // type 2 is obsolete
	f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x24, 0)
	cdb, p = prout(saReserve, 0x10|typeEA, 0xa, 0, 0) // element scope
	f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x24, 0)
	cdb, p = prout(saReserve, typeWE, 0xa, 0, 0x04) // ALL_TG_PT other than with REGISTER
	f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x26, 0)
	cdb, p = prout(saRegister, 0, 0xa, 0xa, 0x01) // APTPL without a store
	f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x26, 0)
	cdb, p = prout(saRegister, 0, 0xa, 0xa, 0)
	cdb[8] = 23
	f.fails(cdb, p[:23], 0, scsi.SenseIllegalRequest, 0x1a, 0)
}

func TestPersistentReservationPreemptClearUnregister(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	f.clearUAs(nexusC)
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saReserve, typeWE, 0xb, 0))
	// A preempts B: B's registration goes, A holds an EA reservation.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saPreempt, typeEA, 0xa, 0xb))
	f.requireSense(f.run(nexusB, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x05)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	in := f.good(prin(0x01), nil, 4096)
	require.Equal(t, uint64(0xa), binary.BigEndian.Uint64(in[8:]))
	require.Equal(t, byte(typeEA), in[8+13])
	// Unregistering the holder releases the reservation.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0xa, 0))
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	require.Equal(t, []byte{0, 0, 0, 0}, f.good(prin(0x01), nil, 4096)[4:8])
	// CLEAR drops everything and tells the other registrants.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegister, 0, 0, 0xb))
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeEAAR, 0xa, 0))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saClear, 0, 0xb, 0))
	f.requireSense(f.run(nexusA, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x03)
	require.Equal(t, uint32(0), binary.BigEndian.Uint32(f.good(prin(0x00), nil, 4096)[4:]))
	// Persistent reservations survive a LU reset and the loss of the nexus.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeEA, 0xa, 0))
	require.NoError(t, f.tgt.Transport().ResetLogicalUnit(nexusB, scsi.EncodeLUN(0)))
	f.tgt.Transport().NexusLost(nexusA)
	f.clearUAs(nexusB)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
}

func TestRegisterAndMove(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeWE, 0xa, 0))
	move := func(port string, relPort uint16, unreg bool) scsi.Result {
		tid := make([]byte, 4+max((len(port)+1+3)&^3, 20))
		tid[0] = 0x45
		binary.BigEndian.PutUint16(tid[2:], uint16(len(tid)-4))
		copy(tid[4:], port)
		cdb, p := prout(saRegisterMove, typeWE, 0xa, 0xbb, 0)
		if unreg {
			p[17] = 0x02
		}
		binary.BigEndian.PutUint16(p[18:], relPort)
		binary.BigEndian.PutUint32(p[20:], uint32(len(tid)))
		p = append(p, tid...)
		binary.BigEndian.PutUint32(cdb[5:], uint32(len(p)))
		return f.run(nexusA, 0, cdb, p, 0)
	}
	f.requireSense(move("not-a-port", 1, false), scsi.SenseIllegalRequest, 0x26, 0)
	f.requireSense(move(nexusA.InitiatorPort, 1, false), scsi.SenseIllegalRequest, 0x26, 0)
	require.Equal(t, scsi.StatusGood, move("iqn.b,i,0x000000000001", 1, true).Status)
	// B holds it now and A is gone.
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusA, 0, write10(0, 1), make([]byte, bs), 0).Status)
	keys := f.good(prin(0x00), nil, 4096)
	require.Equal(t, uint32(8), binary.BigEndian.Uint32(keys[4:]))
	require.Equal(t, uint64(0xbb), binary.BigEndian.Uint64(keys[8:]))
}

// memStore is a scsi.StateStore in memory; failSave makes Save fail.
type memStore struct {
	mu       sync.Mutex
	data     []byte
	failSave bool
}

func (m *memStore) Load() ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data, nil
}

func (m *memStore) Save(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSave {
		return errors.New("store failed")
	}
	m.data = append([]byte(nil), data...)
	if data == nil {
		m.data = nil
	}
	return nil
}

// stored returns what the store holds.
func (m *memStore) stored() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data
}

func TestAPTPLPersistsAcrossRestart(t *testing.T) {
	st := &memStore{}
	dev := backend.NewMemory(blocks * bs)
	f := newFixture(t, scsi.UnitConfig{Reservations: st})
	caps := f.good(prin(0x02), nil, 4096)
	require.Equal(t, byte(0x01), caps[2]&0x01, "PTPL_C")
	cdb, p := prout(saRegister, 0, 0, 0xa, 0x01)
	f.good(cdb, p, 0)
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeWERO, 0xa, 0))
	require.NotEmpty(t, st.data)

	// A new unit over the same store comes up with the reservation.
	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{Serial: "unit0", Reservations: st})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	g := &fixture{t: t, tgt: tgt, lu: lu}
	g.clearUAs(nexusB)
	g.clearUAs(nexusA)
	require.Equal(t, scsi.StatusReservationConflict, g.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status)
	require.Equal(t, scsi.StatusGood, g.run(nexusA, 0, write10(0, 1), make([]byte, bs), 0).Status)
	caps = g.good(prin(0x02), nil, 4096)
	require.Equal(t, byte(0x01), caps[3]&0x01, "PTPL_A")

	// Registering without APTPL drops what was persisted.
	cdb, p = prout(saRegister, 0, 0xa, 0xa, 0)
	g.good(cdb, p, 0)
	require.Empty(t, st.data)

	// A damaged store is refused at start.
	st.data = []byte("{")
	_, err = scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Reservations: st})
	require.Error(t, err)
}

// gatedDevice holds every write until release is closed.
type gatedDevice struct {
	*backend.Memory
	entered chan struct{}
	release chan struct{}
}

func (d *gatedDevice) WriteAt(p []byte, off int64) (int, error) {
	d.entered <- struct{}{}
	<-d.release
	return d.Memory.WriteAt(p, off)
}

func TestPreemptAndAbortEndsRunningTasks(t *testing.T) {
	dev := &gatedDevice{Memory: backend.NewMemory(blocks * bs), entered: make(chan struct{}, 1), release: make(chan struct{})}
	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{Serial: "gated"})
	require.NoError(t, err)
	t.Cleanup(func() { lu.Close() })
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, lu))
	f := &fixture{t: t, tgt: tgt, lu: lu}
	f.clearUAs(nexusA)
	f.clearUAs(nexusB)
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saRegister, 0, 0, 0xa))
	require.Equal(t, scsi.StatusGood, f.pr(nexusB, saRegister, 0, 0, 0xb))
	// Write Exclusive, Registrants Only: B may write.
	require.Equal(t, scsi.StatusGood, f.pr(nexusA, saReserve, typeWERO, 0xa, 0))

	done := make(chan scsi.Result, 1)
	go func() {
		cmd := &scsi.Command{Nexus: nexusB, LUN: scsi.EncodeLUN(0), CDB: write10(0, 1), DataOut: make([]byte, bs)}
		done <- tgt.Execute(context.Background(), cmd)
	}()
	<-dev.entered // B's write is inside the device
	cdb, p := prout(0x05, typeEA, 0xa, 0xb, 0)
	require.Equal(t, scsi.StatusGood, tgt.Execute(context.Background(), &scsi.Command{Nexus: nexusA, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: p}).Status)
	close(dev.release)
	require.Equal(t, scsi.StatusTaskAborted, (<-done).Status)
	// B hears why; unregistered now, it may read but not write under
	// A's Write Exclusive, Registrants Only.
	f.requireSense(f.run(nexusB, 0, read10(0, 1), nil, bs), scsi.SenseUnitAttention, 0x2a, 0x05)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, read10(0, 1), nil, bs).Status)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, write10(0, 1), make([]byte, bs), 0).Status)
	// The issuer's own tasks are not aborted.
	go func() { <-dev.entered }()
	require.Equal(t, scsi.StatusGood, f.run(nexusA, 0, write10(0, 1), make([]byte, bs), 0).Status)
}
