package truenas

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Volumes (zvols) are mgmt volumes of a directory pool (iscsid's --pool
// NAME=DIR): dataset "tank/iscsi/lun0" is volume "iscsi--lun0" of pool
// "tank", the sparse file DIR/iscsi--lun0.img. In mgmt a volume is an
// extent; until iscsi.extent.create names it (type DISK, disk
// "zvol/tank/iscsi/lun0") it is not shown by iscsi.extent.*, as a zvol is
// not an extent in TrueNAS. That create takes the volume's extent over
// (its name, comment and SCSI settings), and iscsi.extent.delete without
// remove gives it back to the dataset.

// zvolPrefix is how a DISK extent names a zvol.
const zvolPrefix = "zvol/"

// volumeSep stands for "/" in a volume's name.
const volumeSep = "--"

// datasetVolume splits a dataset name into its pool and volume name.
func datasetVolume(name string) (pool, volume string, err error) {
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return "", "", fmt.Errorf("%q: a volume is POOL/NAME[/NAME...]", name)
	}
	for _, p := range parts[1:] {
		if p == "" || strings.Contains(p, volumeSep) {
			return "", "", fmt.Errorf("%q: every name after the pool must be non-empty and without %q", name, volumeSep)
		}
	}
	return parts[0], strings.Join(parts[1:], volumeSep), nil
}

// volumeName is the volume name an extent's file was allocated under.
func volumeName(e mgmt.Extent) string {
	return strings.TrimSuffix(filepath.Base(e.Path), ".img")
}

// datasetOf names the dataset of a volume extent ("" for other extents).
func datasetOf(e mgmt.Extent) string {
	if e.Pool == "" || e.Type != mgmt.ExtentFile {
		return ""
	}
	return e.Pool + "/" + strings.ReplaceAll(volumeName(e), volumeSep, "/")
}

// bareVolume reports whether e is a volume no extent.create took over.
func bareVolume(e mgmt.Extent) bool { return datasetOf(e) != "" && e.Name == volumeName(e) }

// findDataset returns the extent of a dataset.
func findDataset(cfg *mgmt.Config, name string) (mgmt.Extent, bool) {
	for _, e := range cfg.Extents {
		if datasetOf(e) == name {
			return e, true
		}
	}
	return mgmt.Extent{}, false
}

// datasetMethods are pool.dataset.create, .query and .delete over
// volumes.
func (a *adapter) datasetMethods() map[string]jsonrpc.Method {
	return map[string]jsonrpc.Method{
		"pool.dataset.create": a.datasetCreate,
		"pool.dataset.query":  a.datasetQuery,
		"pool.dataset.delete": a.datasetDelete,
	}
}

// datasetEntry is a volume as pool.dataset.query shows it.
func datasetEntry(e mgmt.Extent) map[string]any {
	name := datasetOf(e)
	size := strconv.FormatInt(e.Filesize, 10)
	prop := func(v any, raw string) map[string]any {
		return map[string]any{"parsed": v, "rawvalue": raw, "value": raw, "source": "LOCAL"}
	}
	return map[string]any{"id": name, "name": name, "pool": e.Pool, "type": "VOLUME", "encrypted": e.Encrypted,
		"mountpoint": nil, "children": []any{}, "volsize": prop(e.Filesize, size),
		"volblocksize": prop(16384, "16384"), "sparse": prop(true, "true"), "comments": prop("", "")}
}

func (a *adapter) datasetCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var req struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Volsize int64  `json:"volsize"`
		// Accepted because a zvol of a directory pool is always sparse
		// and its block size is the extent's.
		Sparse       *bool  `json:"sparse"`
		Volblocksize string `json:"volblocksize"`
		Comments     string `json:"comments"`
	}
	if err := createArg(params, &req); err != nil {
		return nil, err
	}
	if req.Type != "VOLUME" {
		return nil, fieldError("pool_dataset_create.type", fmt.Sprintf("%q: only VOLUME datasets (zvols) are served; filesystems are not", req.Type), errENOTSUP)
	}
	if req.Sparse != nil && !*req.Sparse {
		return nil, fieldError("pool_dataset_create.sparse", "volumes of a directory pool are sparse files; sparse false cannot be honoured", errENOTSUP)
	}
	if req.Volblocksize != "" {
		return nil, fieldError("pool_dataset_create.volblocksize", "set the block size on the extent (blocksize); volumes have none of their own", errENOTSUP)
	}
	pool, vol, err := datasetVolume(req.Name)
	if err != nil {
		return nil, fieldError("pool_dataset_create.name", err.Error(), errEINVAL)
	}
	if req.Volsize <= 0 {
		return nil, fieldError("pool_dataset_create.volsize", "a volume needs a positive volsize in bytes", errEINVAL)
	}
	if _, err := a.m.CreateVolume(ctx, pool, vol, req.Volsize); err != nil {
		return nil, err
	}
	e, _ := findDataset(a.m.Config(false), req.Name)
	return datasetEntry(e), nil
}

func (a *adapter) datasetQuery(_ context.Context, params json.RawMessage) (any, error) {
	list := []map[string]any{}
	for _, e := range a.m.Config(false).Extents {
		if datasetOf(e) != "" {
			list = append(list, datasetEntry(e))
		}
	}
	return query(params, list, "dataset")
}

// datasetDelete deletes a volume and its file; one an extent uses is
// refused (delete the extent first), as TrueNAS refuses a busy zvol.
func (a *adapter) datasetDelete(ctx context.Context, params json.RawMessage) (any, error) {
	args, err := atMost(params, 2)
	if err != nil {
		return nil, err
	}
	var name string
	if err := decodeArg(args, 0, "id", &name); err != nil {
		return nil, err
	}
	if len(args) == 2 {
		var opts struct {
			Recursive bool `json:"recursive"`
			Force     bool `json:"force"`
		}
		if err := jsonrpc.Decode(args[1], "options", &opts); err != nil {
			return nil, err
		}
	}
	e, ok := findDataset(a.m.Config(false), name)
	if !ok {
		return nil, &callError{errno: errENOENT, msg: name + ": dataset does not exist"}
	}
	if !bareVolume(e) {
		return nil, &callError{errno: errEBUSY, msg: fmt.Sprintf("%s is used by iSCSI extent %d (%s); delete the extent first", name, e.ID, e.Name)}
	}
	if err := a.m.DeleteExtent(ctx, e.ID, true, false); err != nil {
		return nil, err
	}
	return true, nil
}

// fieldError is a validation error of one field.
func fieldError(field, msg string, errno int) error {
	return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "[" + errnames[errno] + "] " + field + ": " + msg,
		Data: map[string]any{"error": errno, "errname": errnames[errno], "reason": msg, "trace": nil, "extra": [][]any{{field, msg, errno}}}}
}

// adoptZvol runs an iscsi.extent.create naming a zvol: the volume's
// extent takes the new extent's name and settings and keeps its storage.
func (a *adapter) adoptZvol(ctx context.Context, e mgmt.Extent) (mgmt.Extent, bool, error) {
	if e.Type != mgmt.ExtentDisk || !strings.HasPrefix(e.Disk, zvolPrefix) {
		return mgmt.Extent{}, false, nil
	}
	name := strings.TrimPrefix(e.Disk, zvolPrefix)
	vol, ok := findDataset(a.m.Config(false), name)
	if !ok {
		return mgmt.Extent{}, false, nil // a real zvol device, if the host has one
	}
	if !bareVolume(vol) {
		return mgmt.Extent{}, true, fieldError("iscsi_extent_create.disk", fmt.Sprintf("%s is already used by extent %d (%s)", e.Disk, vol.ID, vol.Name), errEEXIST)
	}
	out, err := a.m.UpdateExtent(ctx, vol.ID, func(cur *mgmt.Extent) error {
		n := e
		n.ID, n.Type, n.Path, n.Disk, n.Filesize, n.Pool, n.UUID = cur.ID, cur.Type, cur.Path, cur.Disk, cur.Filesize, cur.Pool, cur.UUID
		if n.Serial == "" {
			n.Serial = cur.Serial
		}
		if n.NAA == "" {
			n.NAA = cur.NAA
		}
		*cur = n
		return nil
	})
	return out, true, err
}

// releaseZvol runs an iscsi.extent.delete without remove of a zvol's
// extent: the LUN maps go (with force) and the volume goes back to its
// dataset.
func (a *adapter) releaseZvol(ctx context.Context, id int, force bool) (bool, error) {
	cfg := a.m.Config(false)
	var e mgmt.Extent
	found := false
	for _, x := range cfg.Extents {
		if x.ID == id && datasetOf(x) != "" && !bareVolume(x) {
			e, found = x, true
		}
	}
	if !found {
		return false, nil
	}
	err := a.m.Update(ctx, func(c *mgmt.Config) error {
		maps := c.TargetExtents[:0]
		for _, te := range c.TargetExtents {
			if te.Extent == id {
				if !force {
					return &callError{errno: errEBUSY, msg: fmt.Sprintf("extent %d is mapped to target %d as LUN %d; delete the map or pass force", id, te.Target, te.LunID)}
				}
				continue
			}
			maps = append(maps, te)
		}
		c.TargetExtents = maps
		for i := range c.Extents {
			if c.Extents[i].ID == id {
				bare := mgmt.NewExtent()
				bare.ID, bare.Name, bare.Type, bare.Path, bare.Filesize, bare.Pool, bare.UUID = id, volumeName(e), e.Type, e.Path, e.Filesize, e.Pool, e.UUID
				bare.Serial, bare.NAA = e.Serial, e.NAA
				c.Extents[i] = bare
			}
		}
		return nil
	})
	return true, err
}

// zvolView shows an extent as the TrueNAS dialect does: a volume's
// extent is DISK on its zvol.
func zvolView(e mgmt.Extent) mgmt.Extent {
	if d := datasetOf(e); d != "" {
		e.Type, e.Disk, e.Path = mgmt.ExtentDisk, zvolPrefix+d, ""
	}
	return e
}
