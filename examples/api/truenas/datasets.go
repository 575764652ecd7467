package truenas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Volumes (zvols) are mgmt volumes of a directory pool (iscsid's --pool
// NAME=DIR) or of a pool whose Opener makes volumes (mgmt.VolumeMaker, an
// RBD pool): dataset "tank/iscsi/lun0" is volume "iscsi--lun0" of pool
// "tank", the sparse file DIR/iscsi--lun0.img or the RBD image the opener
// names. A VolumeMaker's volume is named by its extent (mgmt.AdoptVolume),
// so iscsi.extent.create over its zvol must name the extent as the volume. In mgmt a volume is an
// extent; until iscsi.extent.create names it (type DISK, disk
// "zvol/tank/iscsi/lun0") it is not shown by iscsi.extent.*, as a zvol is
// not an extent in TrueNAS. That create takes the volume's extent over
// (its name, comment and SCSI settings; mgmt marks it Adopted), and
// iscsi.extent.delete, remove or not, gives it back to the dataset.

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
	// With no part empty, holding "--" or starting or ending with '-',
	// the "--" between parts are the only ones in the volume name, which
	// so names one dataset ("a-/b" and "a/-b" would both be "a---b").
	for _, p := range parts[1:] {
		if p == "" || strings.Contains(p, volumeSep) || strings.HasPrefix(p, "-") || strings.HasSuffix(p, "-") {
			return "", "", fmt.Errorf("%q: every name after the pool must be non-empty, without %q, and neither start nor end with '-'", name, volumeSep)
		}
	}
	return parts[0], strings.Join(parts[1:], volumeSep), nil
}

// datasetOf names the dataset of a volume extent: a directory pool's file
// or a VolumeMaker pool's volume (an RBD image); "" for other extents and
// for a block pool's one DISK volume, which is a device, not a zvol.
func datasetOf(e mgmt.Extent) string {
	if e.Pool == "" || e.Type == mgmt.ExtentDisk {
		return ""
	}
	return e.Pool + "/" + strings.ReplaceAll(mgmt.VolumeName(e), volumeSep, "/")
}

// bareVolume reports whether e is a volume no extent.create took over.
func bareVolume(e mgmt.Extent) bool { return datasetOf(e) != "" && !e.Adopted }

// noExtent is the error for an id that names no extent (a bare volume
// is a zvol, not an extent).
func noExtent(id int) error {
	return &mgmt.Error{Kind: mgmt.KindNotFound, Object: "extent", ID: id, Msg: "does not exist"}
}

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
		return nil, fieldError("pool_dataset_create.sparse", "pool volumes are thin (sparse files, thin RBD images); sparse false cannot be honoured", errENOTSUP)
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
	// DestroyVolume checks again under the Manager's lock: an extent
	// made on the zvol meanwhile keeps it.
	if err := a.m.DestroyVolume(ctx, e.Pool, mgmt.VolumeName(e)); err != nil {
		if errors.Is(err, mgmt.ErrInUse) {
			return nil, &callError{errno: errEBUSY, msg: fmt.Sprintf("%s is used by an iSCSI extent; delete the extent first", name)}
		}
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
// extent takes the new extent's name and settings and keeps its storage
// (mgmt.Manager.AdoptVolume). ok is false for a disk that names no
// volume of a pool (a real zvol device, if the host has one).
func (a *adapter) adoptZvol(ctx context.Context, e mgmt.Extent) (_ mgmt.Extent, ok bool, _ error) {
	if e.Type != mgmt.ExtentDisk || !strings.HasPrefix(e.Disk, zvolPrefix) {
		return mgmt.Extent{}, false, nil
	}
	name := strings.TrimPrefix(e.Disk, zvolPrefix)
	pool, vol, err := datasetVolume(name)
	if err != nil {
		return mgmt.Extent{}, false, nil
	}
	if _, ok := findDataset(a.m.Config(false), name); !ok {
		return mgmt.Extent{}, false, nil // not a pool volume: a real zvol device
	}
	out, err := a.m.AdoptVolume(ctx, pool, vol, func(cur *mgmt.Extent) error {
		serial, naa := cur.Serial, cur.NAA
		*cur = e
		if cur.Serial == "" {
			cur.Serial = serial
		}
		if cur.NAA == "" {
			cur.NAA = naa
		}
		return nil
	})
	var me *mgmt.Error
	switch {
	case errors.As(err, &me) && me.Kind == mgmt.KindNotFound && (me.Object == "volume" || me.Object == "pool"):
		return mgmt.Extent{}, false, nil
	case errors.Is(err, mgmt.ErrExists) && errors.As(err, &me) && me.Field == "disk":
		return mgmt.Extent{}, true, fieldError("iscsi_extent_create.disk", e.Disk+": "+me.Msg, errEEXIST)
	}
	return out, true, err
}

// zvolView shows an extent as the TrueNAS dialect does: a volume's
// extent is DISK on its zvol.
func zvolView(e mgmt.Extent) mgmt.Extent {
	if d := datasetOf(e); d != "" {
		e.Type, e.Disk, e.Path = mgmt.ExtentDisk, zvolPrefix+d, ""
	}
	return e
}
