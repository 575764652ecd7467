package truenas

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/mgmt"
)

// imageMaker is an Opener of type IMAGE that makes and deletes memory
// volumes, as examples/iscsid's RBD opener makes and deletes images.
type imageMaker struct{ vols map[string]*backend.Memory }

func (s *imageMaker) Check(mgmt.Extent) error { return nil }

func (s *imageMaker) Storage(e mgmt.Extent) string { return "image:" + e.Params["image"] }

func (s *imageMaker) Open(e mgmt.Extent) (backend.Device, error) {
	if v := s.vols[e.Params["image"]]; v != nil {
		return v, nil
	}
	return nil, errors.New("no such image")
}

func (s *imageMaker) MakeVolume(p mgmt.Pool, e *mgmt.Extent) error {
	e.Params["image"] = e.Name
	if s.vols[e.Name] != nil {
		return errors.New("image exists")
	}
	s.vols[e.Name] = backend.NewMemory(e.Filesize)
	return nil
}

func (s *imageMaker) DeleteVolume(e mgmt.Extent) error {
	delete(s.vols, e.Params["image"])
	return nil
}

// TestDatasetsOfAVolumeMakerPool: pool.dataset.create, .query and .delete
// serve the volumes of a pool whose Opener makes them (an RBD pool in
// iscsid), with the directory pools' naming rule; the storage is made and
// deleted through the opener, and the zvol is adopted by an extent named
// as its volume.
func TestDatasetsOfAVolumeMakerPool(t *testing.T) {
	im := &imageMaker{vols: map[string]*backend.Memory{}}
	openers := mgmt.DefaultOpeners()
	openers["IMAGE"] = im
	init := mgmt.EmptyConfig()
	init.Pools = []mgmt.Pool{{ID: 1, Name: "rbd", Type: "IMAGE", Params: map[string]string{"pool": "rbd"}}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: init, Openers: openers})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, nil))
	t.Cleanup(srv.Close)
	c := &rpc{t: t, url: srv.URL}

	var ds map[string]any
	c.ok(&ds, "pool.dataset.create", `{"name": "rbd/iscsi/lun0", "type": "VOLUME", "volsize": 1048576}`)
	require.Equal(t, "rbd/iscsi/lun0", ds["id"])
	require.Contains(t, im.vols, "iscsi--lun0", "the image is made through the opener")
	var list []map[string]any
	c.ok(&list, "pool.dataset.query")
	require.Len(t, list, 1)
	require.Equal(t, "rbd/iscsi/lun0", list[0]["name"])
	require.Equal(t, "rbd", list[0]["pool"])
	c.fails(-32602, "must be letters", "pool.dataset.create", `{"name": "rbd/a.b", "type": "VOLUME", "volsize": 1048576}`)

	// An extent on the zvol adopts the volume; named otherwise, it is
	// refused, since this volume is named by its extent.
	c.fails(-32602, `name the extent "iscsi--lun0"`, "iscsi.extent.create", `{"name": "lun0", "type": "DISK", "disk": "zvol/rbd/iscsi/lun0"}`)
	var e map[string]any
	c.ok(&e, "iscsi.extent.create", `{"name": "iscsi--lun0", "type": "DISK", "disk": "zvol/rbd/iscsi/lun0"}`)
	require.Equal(t, "zvol/rbd/iscsi/lun0", e["disk"])
	c.ok(nil, "iscsi.extent.delete", `1`)

	var deleted any
	c.ok(&deleted, "pool.dataset.delete", `"rbd/iscsi/lun0"`)
	require.NotContains(t, im.vols, "iscsi--lun0", "the image is deleted through the opener")
	c.ok(&list, "pool.dataset.query")
	require.Empty(t, list)
}
