//go:build ceph

package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/backend/rbd"
	"github.com/iscsikit/iscsikit/mgmt"
	"github.com/iscsikit/iscsikit/scsi"
)

// extentRBD is the extent type of a Ceph RBD image, compiled in with the
// build tag ceph.
const extentRBD = "RBD"

func init() {
	openerBuilds[extentRBD] = func() mgmt.Opener { return rbdOpener{space: &poolSpaceCache{}} }
}

// rbdParams are the Params an RBD extent takes: pool and image are
// required; conf (a ceph.conf, default /etc/ceph/ceph.conf unless
// mon_host is given), mon_host, user (without "client."), keyring,
// timeout (seconds per request, default 30) and cache ("true", the
// default, or "false": librbd's cache off, for an image that two
// gateways export) are optional.
var rbdParams = []string{"pool", "image", "conf", "mon_host", "user", "keyring", "timeout", "cache"}

// rbdOpener opens RBD extents with backend/rbd. An image that does not
// exist is created of the extent's Filesize when that is set. It is also
// a mgmt.VolumeMaker: a pool of type RBD makes its volumes as images, and a
// mgmt.PoolSizer: such a pool's size and free space are its Ceph pool's.
type rbdOpener struct{ space *poolSpaceCache }

var (
	_ mgmt.VolumeMaker = rbdOpener{}
	_ mgmt.PoolSizer   = rbdOpener{}
)

// poolSpaceFresh is how long a Ceph pool's space, once asked for, is
// reported again without asking: each ask connects to the cluster.
const poolSpaceFresh = 10 * time.Second

// poolSpaceCache holds the space of the Ceph pools asked for lately.
type poolSpaceCache struct {
	mu      sync.Mutex
	entries map[rbd.Options]poolSpace
}

type poolSpace struct {
	size, free int64
	at         time.Time
}

// PoolSpace reports the space of the Ceph pool an RBD pool's params name,
// as ceph df does (size: stored plus MAX AVAIL; free: MAX AVAIL), asked
// of the cluster at most every poolSpaceFresh.
func (r rbdOpener) PoolSpace(p mgmt.Pool) (size, free int64, err error) {
	o := rbdOptions(mgmt.Extent{Params: p.Params})
	r.space.mu.Lock()
	defer r.space.mu.Unlock()
	if e, ok := r.space.entries[o]; ok && time.Since(e.at) < poolSpaceFresh {
		return e.size, e.free, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*max(o.Timeout, rbd.DefaultTimeout))
	defer cancel()
	size, free, err = rbd.PoolSpace(ctx, o)
	if err != nil {
		return 0, 0, err
	}
	if r.space.entries == nil {
		r.space.entries = map[rbd.Options]poolSpace{}
	}
	r.space.entries[o] = poolSpace{size: size, free: free, at: time.Now()}
	return size, free, nil
}

// Check validates an RBD extent's Params.
func (rbdOpener) Check(e mgmt.Extent) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &mgmt.Error{Field: "params." + field, Msg: fmt.Sprintf(format, a...)})
	}
	for k := range e.Params {
		if !slices.Contains(rbdParams, k) {
			bad(k, "not a setting of an RBD extent (%s)", strings.Join(rbdParams, ", "))
		}
	}
	if e.Path != "" || e.Disk != "" {
		errs = append(errs, &mgmt.Error{Field: "path", Msg: "an RBD extent names its image in params, not a path or disk"})
	}
	for _, k := range []string{"pool", "image"} {
		v := e.Params[k]
		switch {
		case v == "":
			bad(k, "required")
		case strings.ContainsAny(v, "/@ \t\n") || len(v) > 255:
			bad(k, "%q is not a valid RBD %s name (no '/', '@' or spaces, at most 255 bytes)", v, k)
		}
	}
	for _, k := range []string{"conf", "keyring"} {
		if v := e.Params[k]; v != "" && !filepath.IsAbs(v) {
			bad(k, "%q is not an absolute path", v)
		}
	}
	if u := e.Params["user"]; strings.HasPrefix(u, "client.") || strings.ContainsAny(u, " \t\n") {
		bad("user", "%q: give the name without \"client.\" and without spaces", u)
	}
	if v := e.Params["cache"]; v != "" && v != "true" && v != "false" {
		bad("cache", "%q is not true or false", v)
	}
	if v := e.Params["timeout"]; v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 3600 {
			bad("timeout", "%q is not a number of seconds from 1 to 3600", v)
		}
	}
	return errors.Join(errs...)
}

// Storage names the image: "rbd:pool/image".
func (rbdOpener) Storage(e mgmt.Extent) string {
	return "rbd:" + e.Params["pool"] + "/" + e.Params["image"]
}

// options turns an extent's Params into backend/rbd's Options.
func rbdOptions(e mgmt.Extent) rbd.Options {
	o := rbd.Options{
		ConfigFile: e.Params["conf"], Monitors: e.Params["mon_host"], User: e.Params["user"],
		Keyring: e.Params["keyring"], Pool: e.Params["pool"], Image: e.Params["image"], ReadOnly: e.RO,
		NoCache: e.Params["cache"] == "false",
	}
	if o.ConfigFile == "" && o.Monitors == "" {
		o.ConfigFile = "/etc/ceph/ceph.conf"
	}
	if n, err := strconv.Atoi(e.Params["timeout"]); err == nil {
		o.Timeout = time.Duration(n) * time.Second
	}
	return o
}

// Open opens the image, creating it of Filesize bytes when it is missing
// and Filesize is set.
func (rbdOpener) Open(e mgmt.Extent) (backend.Device, error) {
	o := rbdOptions(e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*max(o.Timeout, rbd.DefaultTimeout))
	defer cancel()
	d, err := rbd.Open(ctx, o)
	if errors.Is(err, syscall.ENOENT) && e.Filesize > 0 && !e.RO {
		if err := rbd.Create(ctx, o, e.Filesize); err != nil {
			return nil, err
		}
		d, err = rbd.Open(ctx, o)
	}
	if err != nil {
		return nil, err
	}
	if e.Filesize > d.Size() {
		if err := d.Resize(ctx, e.Filesize); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// MakeVolume makes the volume of an RBD pool: an image named after the
// volume in the Ceph pool the pool's params name, of the volume's size.
func (rbdOpener) MakeVolume(p mgmt.Pool, e *mgmt.Extent) error {
	if e.Params == nil {
		e.Params = map[string]string{}
	}
	if e.Params["pool"] == "" {
		return fmt.Errorf("pool %s: its params name no Ceph pool (\"pool\")", p.Name)
	}
	e.Params["image"] = e.Name
	if err := (rbdOpener{}).Check(*e); err != nil {
		return err
	}
	o := rbdOptions(*e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*max(o.Timeout, rbd.DefaultTimeout))
	defer cancel()
	return rbd.Create(ctx, o, e.Filesize)
}

// DeleteVolume removes a volume's image and its data.
func (rbdOpener) DeleteVolume(e mgmt.Extent) error {
	o := rbdOptions(e)
	ctx, cancel := context.WithTimeout(context.Background(), 2*max(o.Timeout, rbd.DefaultTimeout))
	defer cancel()
	return rbd.Remove(ctx, o)
}

var _ mgmt.ReservationSharer = rbdOpener{}

// ReservationStore gives an RBD extent's unit the image's shared
// reservation store (backend/rbd's ReservationStore, a RADOS object with
// watch/notify), so every gateway exporting the image sees one set of
// registrations and one reservation.
func (rbdOpener) ReservationStore(e mgmt.Extent, dev backend.Device) (scsi.SharedStateStore, error) {
	d, ok := dev.(*rbd.Device)
	if !ok {
		return nil, fmt.Errorf("extent %s: the device is a %T, not an RBD image", e.Name, dev)
	}
	return d.ReservationStore()
}
