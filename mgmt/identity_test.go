package mgmt

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestIdentityGeneratedAtCreateAndKept(t *testing.T) {
	m, store := newManager(t, nil)
	var made []Extent
	for _, name := range []string{"lun0", "lun1"} {
		e := NewExtent()
		e.Name, e.Path = name, "/srv/"+name+".img"
		e, err := m.CreateExtent(ctx, e)
		require.NoError(t, err)
		require.NotEmpty(t, e.Serial)
		require.Len(t, e.NAA, 34, "0x and 32 hex digits")
		require.Equal(t, "0x6", e.NAA[:3])
		made = append(made, e)
	}
	require.NotEqual(t, made[0].Serial, made[1].Serial)
	require.NotEqual(t, made[0].NAA, made[1].NAA)
	saved, err := store.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, made[0].NAA, saved.Extents[0].NAA, "stored with the extent")

	// An edit keeps them; a duplicate is refused.
	e, err := m.UpdateExtent(ctx, made[0].ID, func(e *Extent) error { e.Comment = "x"; return nil })
	require.NoError(t, err)
	require.Equal(t, made[0].NAA, e.NAA)
	_, err = m.UpdateExtent(ctx, made[1].ID, func(e *Extent) error { e.NAA = made[0].NAA; return nil })
	require.ErrorIs(t, err, ErrExists)
	require.ErrorContains(t, err, "naa: extent 1 has the same NAA")
	_, err = m.UpdateExtent(ctx, made[1].ID, func(e *Extent) error { e.Serial = made[0].Serial; return nil })
	require.ErrorContains(t, err, "serial: extent 1 has the same serial")

	// A configured type 5 NAA is kept as written.
	e, err = m.UpdateExtent(ctx, made[1].ID, func(e *Extent) error { e.NAA = "0x5001405FFFEEDDCC"; return nil })
	require.NoError(t, err)
	require.Equal(t, "0x5001405FFFEEDDCC", e.NAA)
}

func TestIdentityGeneratedOnceForAnOlderFile(t *testing.T) {
	e := NewExtent()
	e.Name, e.Path = "lun0", "/srv/lun0.img"
	store := &MemoryStore{}
	require.NoError(t, store.Save(ctx, oneLUN(e)))
	m, err := New(ctx, Options{Store: store, Openers: memoryOpeners()})
	require.NoError(t, err)
	got := m.Config(false).Extents[0]
	m.Close()
	require.NotEmpty(t, got.NAA)
	saved, err := store.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, got.NAA, saved.Extents[0].NAA, "generated once and saved")
	require.Equal(t, got.Serial, saved.Extents[0].Serial)

	m, err = New(ctx, Options{Store: store, Openers: memoryOpeners()})
	require.NoError(t, err)
	require.Equal(t, got, m.Config(false).Extents[0], "the next load keeps them")
	m.Close()
}
