package mgmt

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
)

// memTypeOpener serves the extent type MEM: memory of params["size"]
// bytes, named by params["name"].
type memTypeOpener struct{ opened *int }

func (memTypeOpener) Check(e Extent) error {
	var errs []error
	if n, err := strconv.ParseInt(e.Params["size"], 10, 64); err != nil || n <= 0 {
		errs = append(errs, &Error{Field: "params.size", Msg: fmt.Sprintf("%q is not a positive byte count", e.Params["size"])})
	}
	if e.Params["name"] == "" {
		errs = append(errs, errors.New("params.name is required"))
	}
	return errors.Join(errs...)
}

func (memTypeOpener) Storage(e Extent) string { return "mem:" + e.Params["name"] }

func (o memTypeOpener) Open(e Extent) (backend.Device, error) {
	*o.opened++
	n, _ := strconv.ParseInt(e.Params["size"], 10, 64)
	return backend.NewMemory(n), nil
}

func TestOpenersByType(t *testing.T) {
	opened := 0
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	m, err := New(ctx, Options{Store: &MemoryStore{}, Server: srv, Openers: map[string]Opener{"MEM": memTypeOpener{&opened}}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })

	tg := NewTarget()
	tg.Name = "t0"
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Type, e.Params = "m0", "MEM", map[string]string{"size": "x"}
	_, err = m.CreateExtent(ctx, e)
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "params.size", me.Field, "the opener's own *Error keeps its field")
	require.Equal(t, "extent", me.Object)
	require.Equal(t, "m0", me.Name)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "extent 1 (m0): params: params.name is required", "a plain error is reported against params")

	e.Params = map[string]string{"size": "1048576", "name": "a"}
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID})
	require.NoError(t, err)
	require.Equal(t, 1, opened, "the mapped MEM extent was opened by its opener")
	lu := m.app.units[e.ID].lu
	require.Equal(t, uint64(1<<20/512), lu.Blocks())

	e2 := NewExtent()
	e2.Name, e2.Type, e2.Params = "m1", "MEM", map[string]string{"size": "4096", "name": "a"}
	_, err = m.CreateExtent(ctx, e2)
	require.ErrorIs(t, err, ErrExists, "two extents on the same storage")

	e3 := NewExtent()
	e3.Name, e3.Type = "x", "RBD"
	_, err = m.CreateExtent(ctx, e3)
	require.ErrorContains(t, err, `type: "RBD" is not one of DISK, FILE, MEM`)

	e4 := NewExtent()
	e4.Name, e4.Path, e4.Params = "f", "/srv/f.img", map[string]string{"pool": "rbd"}
	_, err = m.CreateExtent(ctx, e4)
	require.ErrorContains(t, err, "params: a FILE extent takes no params")

	// The package-level Validate knows only the default types.
	require.ErrorContains(t, Validate(m.Config(true), nil), `"MEM" is not one of DISK, FILE`)
}

func TestKindString(t *testing.T) {
	require.Equal(t, "not found", KindNotFound.String())
	require.Equal(t, "invalid", KindInvalid.String())
	require.Equal(t, "Kind(0)", Kind(0).String())
	var _ fmt.Stringer = KindInUse
}
