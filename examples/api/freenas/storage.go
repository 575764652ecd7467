package freenas

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// StoragePrefix is where FreeNAS v1.0's volumes (the daemon's --pool
// pools) and their zvols (the pools' volumes) live.
const StoragePrefix = "/api/v1.0/storage/volume/"

// volumeView is a pool as FreeNAS v1.0 shows a volume, with the fields
// the Cinder driver reads for its capacity (avail, used).
type volumeView struct {
	ID      int    `json:"id"`
	Name    string `json:"name"`
	VolName string `json:"vol_name"`
	Avail   int64  `json:"avail"`
	Used    int64  `json:"used"`
	Status  string `json:"status"`
}

// zvolView is a pool volume as FreeNAS v1.0 shows a zvol.
type zvolView struct {
	Name    string `json:"name"`
	Volsize int64  `json:"volsize"`
	// Used is the space the volume's sparse file holds.
	Used int64 `json:"used"`
}

// zvolReq is what a zvol create or update takes.
type zvolReq struct {
	Name    string          `json:"name"`
	Volsize json.RawMessage `json:"volsize"`
	// Sparse is accepted true only: a volume is a sparse file.
	Sparse *bool `json:"sparse,omitempty"`
}

func (a *api) storageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+StoragePrefix, func(w http.ResponseWriter, r *http.Request) {
		vols, err := a.volumes()
		a.answer(w, r, http.StatusOK, vols, err)
	})
	mux.HandleFunc("GET "+StoragePrefix+"{pool}/", func(w http.ResponseWriter, r *http.Request) {
		v, err := a.volume(r.PathValue("pool"))
		a.answer(w, r, http.StatusOK, v, err)
	})
	mux.HandleFunc("GET "+StoragePrefix+"{pool}/zvols/", func(w http.ResponseWriter, r *http.Request) {
		zvols, err := a.zvols(r.PathValue("pool"))
		if err == nil {
			page, perr := rest.ParsePage(r, defaultLimit)
			if perr != nil {
				a.fail(w, perr, nil)
				return
			}
			zvols = rest.Apply(page, zvols)
		}
		a.answer(w, r, http.StatusOK, zvols, err)
	})
	mux.HandleFunc("POST "+StoragePrefix+"{pool}/zvols/", func(w http.ResponseWriter, r *http.Request) {
		z, err := a.createZvol(r)
		a.answer(w, r, http.StatusCreated, z, err)
	})
	mux.HandleFunc("GET "+StoragePrefix+"{pool}/zvols/{name}/", func(w http.ResponseWriter, r *http.Request) {
		z, err := a.zvol(r.PathValue("pool"), r.PathValue("name"))
		a.answer(w, r, http.StatusOK, z, err)
	})
	mux.HandleFunc("PUT "+StoragePrefix+"{pool}/zvols/{name}/", func(w http.ResponseWriter, r *http.Request) {
		z, err := a.updateZvol(r)
		a.answer(w, r, http.StatusAccepted, z, err)
	})
	mux.HandleFunc("DELETE "+StoragePrefix+"{pool}/zvols/{name}/", func(w http.ResponseWriter, r *http.Request) {
		err := a.m.DestroyVolume(r.Context(), r.PathValue("pool"), r.PathValue("name"))
		if err != nil {
			a.fail(w, err, zvolFields)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/api/v1.0/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, &rest.Error{Status: http.StatusNotImplemented, Msg: r.Method + " " + r.URL.Path + ": only the iSCSI services and the volumes' zvols of FreeNAS v1.0 are served (no snapshots, datasets or other services)"}, nil)
	})
}

var zvolFields = map[string]string{"name": "name", "size": "volsize", "filesize": "volsize"}

// answer writes v with status, or err.
func (a *api) answer(w http.ResponseWriter, _ *http.Request, status int, v any, err error) {
	if err != nil {
		a.fail(w, err, zvolFields)
		return
	}
	rest.WriteJSON(w, status, v)
}

func (a *api) volumes() ([]volumeView, error) {
	pools, err := a.m.Pools()
	if err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	out := []volumeView{}
	for _, p := range pools {
		v := volumeView{Name: p.Name, VolName: p.Name, Avail: p.FreeSize, Used: p.Size - p.FreeSize, Status: "HEALTHY"}
		for _, c := range cfg.Pools {
			if c.Name == p.Name {
				v.ID = c.ID
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// volume finds a pool by name or id.
func (a *api) volume(name string) (volumeView, error) {
	vols, err := a.volumes()
	if err != nil {
		return volumeView{}, err
	}
	for _, v := range vols {
		if v.Name == name || strconv.Itoa(v.ID) == name {
			return v, nil
		}
	}
	return volumeView{}, rest.NotFound("volume %s does not exist (the daemon's pools are its --pool flags)", name)
}

func zvolOut(v mgmt.Volume, path string) zvolView {
	z := zvolView{Name: v.Name, Volsize: v.Size}
	if fi, err := os.Stat(path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() {
			z.Used = st.Blocks * 512
		}
	}
	return z
}

func (a *api) zvols(pool string) ([]zvolView, error) {
	vols, err := a.m.Volumes(pool)
	if err != nil {
		return nil, poolNotFound(pool, err)
	}
	out := []zvolView{}
	for _, v := range vols {
		out = append(out, zvolOut(v, a.volumePath(pool, v.Name)))
	}
	return out, nil
}

// volumePath is where a pool volume's data lives.
func (a *api) volumePath(pool, name string) string {
	for _, e := range a.m.Config(false).Extents {
		if e.Pool == pool && mgmt.VolumeName(e) == name {
			if e.Type == mgmt.ExtentDisk {
				return mgmt.DiskPath(e.Disk)
			}
			return e.Path
		}
	}
	return ""
}

func (a *api) zvol(pool, name string) (zvolView, error) {
	vols, err := a.m.Volumes(pool)
	if err != nil {
		return zvolView{}, poolNotFound(pool, err)
	}
	for _, v := range vols {
		if v.Name == name {
			return zvolOut(v, a.volumePath(pool, name)), nil
		}
	}
	return zvolView{}, rest.NotFound("volume %s has no zvol %s", pool, name)
}

// poolNotFound words a missing pool as FreeNAS's missing volume.
func poolNotFound(pool string, err error) error {
	if me := (*mgmt.Error)(nil); asMgmt(err, &me) && me.Kind == mgmt.KindNotFound {
		return rest.NotFound("volume %s does not exist (the daemon's pools are its --pool flags)", pool)
	}
	return err
}

func (a *api) createZvol(r *http.Request) (zvolView, error) {
	pool := r.PathValue("pool")
	body, err := readBody(r)
	if err != nil {
		return zvolView{}, err
	}
	var req zvolReq
	if err := rest.DecodeJSON(body, &req); err != nil {
		return zvolView{}, err
	}
	if req.Name == "" {
		return zvolView{}, rest.BadRequest("name", "a zvol name is required")
	}
	if req.Sparse != nil && !*req.Sparse {
		return zvolView{}, rest.BadRequest("sparse", "zvols here are sparse files; thick allocation is not offered")
	}
	size, err := parseVolsize(req.Volsize)
	if err != nil {
		return zvolView{}, err
	}
	if _, err := a.m.Volumes(pool); err != nil {
		return zvolView{}, poolNotFound(pool, err)
	}
	v, err := a.m.CreateVolume(r.Context(), pool, req.Name, size)
	if err != nil {
		return zvolView{}, err
	}
	return zvolOut(v, a.volumePath(pool, v.Name)), nil
}

// updateZvol changes a zvol's volsize (the Cinder driver's extend).
func (a *api) updateZvol(r *http.Request) (zvolView, error) {
	pool, name := r.PathValue("pool"), r.PathValue("name")
	cur, err := a.zvol(pool, name)
	if err != nil {
		return zvolView{}, err
	}
	body, err := readBody(r)
	if err != nil {
		return zvolView{}, err
	}
	req := zvolReq{Name: name, Volsize: json.RawMessage(strconv.FormatInt(cur.Volsize, 10))}
	if err := merge.Patch(&req, body); err != nil {
		return zvolView{}, err
	}
	if req.Name != name {
		return zvolView{}, rest.BadRequest("name", "a zvol cannot be renamed")
	}
	size, err := parseVolsize(req.Volsize)
	if err != nil {
		return zvolView{}, err
	}
	// Found again in the change, under the Manager's lock: the zvol may
	// have gone meanwhile.
	if err := a.m.Update(r.Context(), func(c *mgmt.Config) error {
		for i, e := range c.Extents {
			if e.Pool == pool && mgmt.VolumeName(e) == name {
				c.Extents[i].Filesize = size
				return nil
			}
		}
		return rest.NotFound("volume %s has no zvol %s", pool, name)
	}); err != nil {
		return zvolView{}, err
	}
	return a.zvol(pool, name)
}

// parseVolsize reads a zvol size: bytes as a number or a string, or a
// number with ZFS's suffixes (K, M, G, T with or without B or iB, all
// binary: "10G" and "10GiB" are 10 GiB).
func parseVolsize(raw json.RawMessage) (int64, error) {
	var n int64
	if json.Unmarshal(raw, &n) == nil && n > 0 {
		return n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || strings.TrimSpace(s) == "" {
		return 0, rest.BadRequest("volsize", "want a size such as \"10G\" or a number of bytes, got %s", strings.TrimSpace(string(raw)))
	}
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "IB")
	if l := len(t); l > 0 && strings.ContainsRune("KMGT", rune(t[l-1])) {
		t += "B"
	}
	size, err := rest.ParseSize(t)
	if err != nil || size <= 0 {
		return 0, rest.BadRequest("volsize", "%q is not a size: use bytes or a number with K, M, G or T", s)
	}
	return size, nil
}
