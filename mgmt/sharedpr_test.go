package mgmt

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// sharedMemStore is a scsi.SharedStateStore in memory whose swaps run
// the watchers' callbacks before they return.
type sharedMemStore struct {
	mu       sync.Mutex
	data     []byte
	version  uint64
	watchers []func()
}

func (s *sharedMemStore) Load(context.Context) ([]byte, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data, s.version, nil
}

func (s *sharedMemStore) CompareAndSwap(_ context.Context, v uint64, data []byte) (uint64, bool, error) {
	s.mu.Lock()
	if v != s.version {
		s.mu.Unlock()
		return 0, false, nil
	}
	s.data, s.version = data, s.version+1
	nv, ws := s.version, append([]func(){}, s.watchers...)
	s.mu.Unlock()
	for _, w := range ws {
		w()
	}
	return nv, true, nil
}

func (s *sharedMemStore) Watch(changed func()) (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, changed)
	return func() {}, nil
}

// sharingOpener serves the extent type SHARED: memory whose reservations
// live in store; fail makes ReservationStore fail.
type sharingOpener struct {
	memTypeOpener
	store *sharedMemStore
	fail  bool
}

func (o sharingOpener) ReservationStore(e Extent, dev backend.Device) (scsi.SharedStateStore, error) {
	if o.fail {
		return nil, errors.New("cluster unreachable")
	}
	return o.store, nil
}

// sharedUnit runs a Manager with a SHARED extent mapped to a target and
// returns the extent's unit attached to a target of its own.
func sharedUnit(t *testing.T, o sharingOpener, prDir string) (*scsi.Target, error) {
	t.Helper()
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	opened := 0
	o.opened = &opened
	m, err := New(ctx, Options{Store: &MemoryStore{}, Server: srv, ReservationDir: prDir, Openers: map[string]Opener{"SHARED": o}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	tg := NewTarget()
	tg.Name = "t0"
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Type, e.Params = "s0", "SHARED", map[string]string{"size": "1048576", "name": "a"}
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	if _, err := m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID}); err != nil {
		return nil, err
	}
	st := scsi.NewTarget()
	require.NoError(t, st.Attach(0, m.app.units[e.ID].lu))
	return st, nil
}

func TestReservationSharerGivesUnitsOneStore(t *testing.T) {
	store := &sharedMemStore{}
	prDir := t.TempDir()
	t1, err := sharedUnit(t, sharingOpener{store: store}, prDir)
	require.NoError(t, err)
	t2, err := sharedUnit(t, sharingOpener{store: store}, t.TempDir())
	require.NoError(t, err)
	n1 := scsi.Nexus{InitiatorPort: "iqn.a,i,0x000000000001", TargetName: "iqn.t", TargetPort: "p1", RelativePortID: 1}
	n2 := scsi.Nexus{InitiatorPort: "iqn.b,i,0x000000000001", TargetName: "iqn.t", TargetPort: "p2", RelativePortID: 2}
	run := func(tg *scsi.Target, n scsi.Nexus, cdb, out []byte) (scsi.Status, []byte) {
		var res scsi.Result
		for range 3 { // past POWER ON OCCURRED
			cmd := &scsi.Command{Nexus: n, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: out, DataIn: make([]byte, 512)}
			if res = tg.Execute(context.Background(), cmd); res.Status == scsi.StatusGood {
				return res.Status, cmd.DataIn[:res.DataInLen]
			}
		}
		return res.Status, nil
	}
	// REGISTER with APTPL through the first unit.
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[8:], 0xabc)
	p[20] = 0x01
	st, _ := run(t1, n1, []byte{0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0}, p)
	require.Equal(t, scsi.StatusGood, st)
	st, keys := run(t2, n2, []byte{0x5e, 0, 0, 0, 0, 0, 0, 2, 0, 0}, nil)
	require.Equal(t, scsi.StatusGood, st)
	require.EqualValues(t, 8, binary.BigEndian.Uint32(keys[4:]), "the key registered through the other unit")
	require.EqualValues(t, 0xabc, binary.BigEndian.Uint64(keys[8:]))
	// No reservations file even with APTPL: the shared store holds them.
	files, err := filepath.Glob(filepath.Join(prDir, "*.json"))
	require.NoError(t, err)
	for _, f := range files {
		require.True(t, strings.HasSuffix(f, ".sanitize.json"), "reservations file %s", f)
	}
	require.NotEmpty(t, store.data)

	// A store the opener cannot give refuses the unit, with the reason.
	_, err = sharedUnit(t, sharingOpener{store: store, fail: true}, "")
	require.ErrorContains(t, err, "shared reservations: cluster unreachable")
}

// A unit's reservations reach the store through scsi's contract.
var _ scsi.SharedStateStore = (*sharedMemStore)(nil)
