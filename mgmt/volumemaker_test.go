package mgmt

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
)

// storeMaker is an Opener of type STORE whose volumes are memory devices
// it makes and deletes, as a storage service's opener would.
type storeMaker struct{ vols map[string]*backend.Memory }

func (s *storeMaker) Check(e Extent) error { return nil }

func (s *storeMaker) Storage(e Extent) string { return "store:" + e.Params["volume"] }

func (s *storeMaker) Open(e Extent) (backend.Device, error) {
	if v := s.vols[e.Params["volume"]]; v != nil {
		return v, nil
	}
	return nil, errors.New("no such volume")
}

func (s *storeMaker) MakeVolume(p Pool, e *Extent) error {
	if e.Params["zone"] == "" {
		return fmt.Errorf("pool %s names no zone", p.Name)
	}
	e.Params["volume"] = e.Params["zone"] + "/" + e.Name
	if s.vols[e.Params["volume"]] != nil {
		return errors.New("exists")
	}
	s.vols[e.Params["volume"]] = backend.NewMemory(e.Filesize)
	return nil
}

func (s *storeMaker) DeleteVolume(e Extent) error {
	delete(s.vols, e.Params["volume"])
	return nil
}

func TestPoolOfAVolumeMaker(t *testing.T) {
	sm := &storeMaker{vols: map[string]*backend.Memory{}}
	openers := memoryOpeners()
	openers["STORE"] = sm
	cfg := &Config{Version: ConfigVersion, Global: Global{Basename: DefaultBasename}, Pools: []Pool{
		{ID: 1, Name: "svc", Type: "STORE", Params: map[string]string{"zone": "z1"}},
		{ID: 2, Name: "bad", Type: "STORE"},
	}}
	m, err := New(ctx, Options{Store: &MemoryStore{}, Initial: cfg, Openers: openers})
	require.NoError(t, err)
	defer m.Close()

	v, err := m.CreateVolume(ctx, "svc", "v1", 1<<20)
	require.NoError(t, err)
	require.Equal(t, Volume{Name: "v1", Size: 1 << 20, UUID: v.UUID, Pool: "svc"}, v)
	require.Contains(t, sm.vols, "z1/v1", "the volume is made in the storage")
	e, err := m.Config(false).VolumeExtent("svc", "v1")
	require.NoError(t, err)
	require.Equal(t, "STORE", e.Type)
	require.Equal(t, map[string]string{"zone": "z1", "volume": "z1/v1"}, e.Params)

	_, err = m.CreateVolume(ctx, "bad", "v2", 1<<20)
	require.ErrorContains(t, err, "names no zone")
	_, err = m.CopyVolume(ctx, "svc", "v1", "v3")
	require.ErrorContains(t, err, "not supported")

	require.NoError(t, m.DestroyVolume(ctx, "svc", "v1"))
	require.NotContains(t, sm.vols, "z1/v1", "the volume is deleted from the storage")

	// Pool types: fs, block, or an opener's that makes volumes.
	for _, tc := range []struct {
		p    Pool
		want string
	}{
		{Pool{ID: 1, Name: "p", Type: "FILE"}, "not fs, block or an extent type that makes volumes"},
		{Pool{ID: 1, Name: "p", Type: PoolFS, Path: "/srv", Params: map[string]string{"a": "b"}}, "takes none"},
	} {
		bad := &Config{Version: ConfigVersion, Pools: []Pool{tc.p}}
		require.ErrorContains(t, validate(bad, nil, newOpeners(openers)), tc.want)
	}
}

// TestVolumeKeepsItsName: a volume named by its extent (not a file of a
// directory pool) keeps its name through adoption and edits: an extent
// that would rename it is refused, so the volume stays findable and
// destroyable by its name.
func TestVolumeKeepsItsName(t *testing.T) {
	sm := &storeMaker{vols: map[string]*backend.Memory{}}
	openers := memoryOpeners()
	openers["STORE"] = sm
	cfg := &Config{Version: ConfigVersion, Global: Global{Basename: DefaultBasename}, Pools: []Pool{
		{ID: 1, Name: "svc", Type: "STORE", Params: map[string]string{"zone": "z1"}}}}
	m, err := New(ctx, Options{Store: &MemoryStore{}, Initial: cfg, Openers: openers})
	require.NoError(t, err)
	defer m.Close()
	_, err = m.CreateVolume(ctx, "svc", "v1", 1<<20)
	require.NoError(t, err)

	_, err = m.AdoptVolume(ctx, "svc", "v1", func(e *Extent) error { e.Name = "other"; return nil })
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "name", me.Field)
	e, err := m.AdoptVolume(ctx, "svc", "v1", func(e *Extent) error { e.Comment = "mine"; return nil })
	require.NoError(t, err)
	require.True(t, e.Adopted)
	_, err = m.UpdateExtent(ctx, e.ID, func(e *Extent) error { e.Name = "renamed"; return nil })
	require.ErrorAs(t, err, &me)
	require.Equal(t, "name", me.Field)
	require.ErrorIs(t, m.DestroyVolume(ctx, "svc", "v1"), ErrInUse, "an adopted volume is released first")
	released, err := m.ReleaseVolume(ctx, e.ID, false)
	require.NoError(t, err)
	require.True(t, released)
	require.NoError(t, m.DestroyVolume(ctx, "svc", "v1"))
	require.NotContains(t, sm.vols, "z1/v1")
}

// sizedMaker is a storeMaker that knows its zones' space.
type sizedMaker struct {
	storeMaker
	space map[string][2]int64
}

func (s *sizedMaker) PoolSpace(p Pool) (int64, int64, error) {
	sp, ok := s.space[p.Params["zone"]]
	if !ok {
		return 0, 0, fmt.Errorf("zone %q unreachable", p.Params["zone"])
	}
	return sp[0], sp[1], nil
}

func TestPoolsOfAPoolSizer(t *testing.T) {
	sm := &sizedMaker{storeMaker: storeMaker{vols: map[string]*backend.Memory{}}, space: map[string][2]int64{"z1": {10 << 30, 4 << 30}}}
	openers := memoryOpeners()
	openers["STORE"] = sm
	openers["PLAIN"] = &storeMaker{vols: map[string]*backend.Memory{}}
	cfg := &Config{Version: ConfigVersion, Global: Global{Basename: DefaultBasename}, Pools: []Pool{
		{ID: 1, Name: "svc", Type: "STORE", Params: map[string]string{"zone": "z1"}},
		{ID: 2, Name: "plain", Type: "PLAIN", Params: map[string]string{"zone": "z1"}},
	}}
	m, err := New(ctx, Options{Store: &MemoryStore{}, Initial: cfg, Openers: openers})
	require.NoError(t, err)
	defer m.Close()
	pools, err := m.Pools()
	require.NoError(t, err)
	require.Equal(t, []PoolInfo{{Name: "svc", Type: "STORE", Size: 10 << 30, FreeSize: 4 << 30}, {Name: "plain", Type: "PLAIN"}}, pools)

	delete(sm.space, "z1")
	_, err = m.Pools()
	require.ErrorContains(t, err, `zone "z1" unreachable`)
}

// namingMaker is a VolumeMaker that names every volume in Params, with no
// setting of its pool to read.
type namingMaker struct{ storeMaker }

func (s *namingMaker) MakeVolume(p Pool, e *Extent) error {
	e.Params["volume"] = "plain/" + e.Name
	s.vols[e.Params["volume"]] = backend.NewMemory(e.Filesize)
	return nil
}

// TestVolumeOfAPoolWithoutParams: a pool with no Params still hands its
// maker an extent whose Params it can fill in (it panicked, and the API
// call answered "internal error").
func TestVolumeOfAPoolWithoutParams(t *testing.T) {
	nm := &namingMaker{storeMaker{vols: map[string]*backend.Memory{}}}
	openers := memoryOpeners()
	openers["STORE"] = nm
	cfg := &Config{Version: ConfigVersion, Global: Global{Basename: DefaultBasename}, Pools: []Pool{{ID: 1, Name: "plain", Type: "STORE"}}}
	m, err := New(ctx, Options{Store: &MemoryStore{}, Initial: cfg, Openers: openers})
	require.NoError(t, err)
	defer m.Close()
	v, err := m.CreateVolume(ctx, "plain", "v1", 1<<20)
	require.NoError(t, err)
	require.Equal(t, "v1", v.Name)
	require.Contains(t, nm.vols, "plain/v1")
}
