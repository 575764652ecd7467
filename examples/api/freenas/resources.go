package freenas

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Global configuration.

type globalView struct {
	ID                  int    `json:"id"`
	Basename            string `json:"iscsi_basename"`
	DiscoveryAuthMethod string `json:"iscsi_discoveryauthmethod"`
	DiscoveryAuthGroup  *int   `json:"iscsi_discoveryauthgroup"`
	IOTimeout           int    `json:"iscsi_iotimeout"`
	NopInInterval       int    `json:"iscsi_nopinint"`
	MaxSessions         int    `json:"iscsi_maxsesh"`
	MaxConnections      int    `json:"iscsi_maxconnect"`
	// MaxConnectionsInEffect is the MaxConnections each target offers
	// sessions now: iscsi_maxconnect (not a FreeNAS field).
	MaxConnectionsInEffect int    `json:"iscsi_maxconnect_in_effect"`
	R2T                    int    `json:"iscsi_r2t"`
	MaxOutstandingR2T      int    `json:"iscsi_maxoutstandingr2t"`
	FirstBurst             int    `json:"iscsi_firstburst"`
	MaxBurst               int    `json:"iscsi_maxburst"`
	MaxRecvData            int    `json:"iscsi_maxrecdata"`
	DefaultTime2Wait       int    `json:"iscsi_defaultt2w"`
	DefaultTime2Retain     int    `json:"iscsi_defaultt2r"`
	ToggleLUC              bool   `json:"iscsi_toggleluc"`
	LUCIP                  string `json:"iscsi_lucip"`
	LUCPort                int    `json:"iscsi_lucport"`
	LUCAuthNetwork         string `json:"iscsi_luc_authnetwork"`
	LUCAuthMethod          string `json:"iscsi_luc_authmethod"`
	LUCAuthGroup           *int   `json:"iscsi_luc_authgroup"`
}

// fixedGlobal says why each read-only global field cannot change.
var fixedGlobal = map[string]string{
	"iscsi_maxconnect_in_effect": "it follows iscsi_maxconnect; set that one",
	"iscsi_toggleluc":            "istgt's logical unit controller is not part of this target; manage it through this API instead",
	"iscsi_lucip":                "istgt's logical unit controller is not part of this target",
	"iscsi_lucport":              "istgt's logical unit controller is not part of this target",
	"iscsi_luc_authnetwork":      "istgt's logical unit controller is not part of this target",
	"iscsi_luc_authmethod":       "istgt's logical unit controller is not part of this target",
	"iscsi_luc_authgroup":        "istgt's logical unit controller is not part of this target",
	"iscsi_iotimeout":            "set in the daemon's session options; not changeable through this API",
	"iscsi_nopinint":             "set in the daemon's session options; not changeable through this API",
	"iscsi_maxsesh":              "set in the daemon's session options; not changeable through this API",
	"iscsi_r2t":                  "set in the daemon's session options; not changeable through this API",
	"iscsi_maxoutstandingr2t":    "set in the daemon's session options; not changeable through this API",
	"iscsi_firstburst":           "set in the daemon's session options; not changeable through this API",
	"iscsi_maxburst":             "set in the daemon's session options; not changeable through this API",
	"iscsi_maxrecdata":           "set in the daemon's session options; not changeable through this API",
	"iscsi_defaultt2w":           "set in the daemon's session options; not changeable through this API",
	"iscsi_defaultt2r":           "set in the daemon's session options; not changeable through this API",
}

func (a *api) globalView() globalView {
	cfg := a.m.Config(false)
	v := globalView{
		ID: 1, Basename: cfg.Global.Basename, DiscoveryAuthMethod: "None",
		IOTimeout: a.limits.IOTimeout, NopInInterval: a.limits.NopInInterval, MaxSessions: a.limits.MaxSessions,
		MaxConnections: cmp.Or(cfg.Global.MaxConnections, 1), MaxConnectionsInEffect: cmp.Or(cfg.Global.MaxConnections, 1), R2T: a.limits.MaxOutstandingR2T, MaxOutstandingR2T: a.limits.MaxOutstandingR2T,
		FirstBurst: a.limits.FirstBurst, MaxBurst: a.limits.MaxBurst, MaxRecvData: a.limits.MaxRecvData,
		DefaultTime2Wait: a.limits.DefaultTime2Wait, DefaultTime2Retain: a.limits.DefaultTime2Keep,
	}
	// Discovery authentication is per portal in the model; seed 001 has
	// one global setting, shown from the first portal and set on all.
	if len(cfg.Portals) > 0 {
		v.DiscoveryAuthMethod = authMethodOut(cfg.Portals[0].DiscoveryAuthMethod)
		v.DiscoveryAuthGroup = cfg.Portals[0].DiscoveryAuthGroup
	}
	return v
}

func (a *api) getGlobal(w http.ResponseWriter, r *http.Request) {
	rest.WriteJSON(w, http.StatusOK, a.globalView())
}

func (a *api) putGlobal(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	cur := a.globalView()
	next := cur
	if err := merge.Patch(&next, body, "id"); err != nil {
		a.fail(w, err, nil)
		return
	}
	if f, why := changedFixed(cur, next); f != "" {
		a.fail(w, rest.BadRequest(f, "%s", why), nil)
		return
	}
	if next.MaxConnections < 1 || next.MaxConnections > mgmt.MaxConnectionsLimit {
		a.fail(w, rest.BadRequest("iscsi_maxconnect", "%d is not from 1 to %d", next.MaxConnections, mgmt.MaxConnectionsLimit), nil)
		return
	}
	method, err := authMethodIn("iscsi_discoveryauthmethod", next.DiscoveryAuthMethod, next.DiscoveryAuthGroup)
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	err = a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		cfg.Global.Basename = next.Basename
		cfg.Global.MaxConnections = next.MaxConnections
		for i := range cfg.Portals {
			if cfg.Portals[i].Remote {
				continue // another gateway's discovery
			}
			cfg.Portals[i].DiscoveryAuthMethod = method
			cfg.Portals[i].DiscoveryAuthGroup = next.DiscoveryAuthGroup
		}
		return nil
	})
	if err != nil {
		a.fail(w, err, map[string]string{"basename": "iscsi_basename", "max_connections": "iscsi_maxconnect", "discovery_authmethod": "iscsi_discoveryauthmethod", "discovery_authgroup": "iscsi_discoveryauthgroup"})
		return
	}
	rest.WriteJSON(w, http.StatusAccepted, a.globalView())
}

// changedFixed names the first read-only global field next changes.
func changedFixed(cur, next globalView) (field, why string) {
	c, n := jsonFields(cur), jsonFields(next)
	for f, reason := range fixedGlobal {
		if c[f] != n[f] {
			return f, reason
		}
	}
	return "", ""
}

// Extents.

type extentView struct {
	ID       int    `json:"id"`
	Name     string `json:"iscsi_target_extent_name"`
	Type     string `json:"iscsi_target_extent_type"`
	Path     string `json:"iscsi_target_extent_path"`
	Disk     string `json:"iscsi_target_extent_disk"`
	Filesize string `json:"iscsi_target_extent_filesize"`
	Comment  string `json:"iscsi_target_extent_comment"`
}

var extentFields = map[string]string{"name": "iscsi_target_extent_name", "type": "iscsi_target_extent_type",
	"path": "iscsi_target_extent_path", "disk": "iscsi_target_extent_disk", "filesize": "iscsi_target_extent_filesize",
	"comment": "iscsi_target_extent_comment"}

// zvolPrefix starts a Disk extent's disk that names a volume of a --pool
// ("zvol/POOL/NAME"), as FreeNAS names its zvols.
const zvolPrefix = mgmt.ZvolPrefix

// zvolOf returns "zvol/POOL/NAME" for an extent that is a pool volume.
func zvolOf(e mgmt.Extent) string {
	if e.Pool == "" {
		return ""
	}
	return zvolPrefix + e.Pool + "/" + mgmt.VolumeName(e)
}

func extentOut(e mgmt.Extent) extentView {
	v := extentView{ID: e.ID, Name: e.Name, Type: "File", Path: e.Path, Filesize: rest.FormatSize(e.Filesize), Comment: e.Comment}
	switch {
	case e.Pool != "":
		// A pool volume: FreeNAS's zvol, shown with the file it is.
		v.Type, v.Disk, v.Path = "ZVOL", zvolOf(e), e.Path
		if e.Type == mgmt.ExtentDisk {
			v.Path = mgmt.DiskPath(e.Disk)
		}
	case e.Type == mgmt.ExtentDisk:
		v.Type, v.Disk, v.Path = "Disk", e.Disk, mgmt.DiskPath(e.Disk)
	}
	return v
}

// diskTypes are the extent types over a device or a zvol: the Cinder
// driver's and FreeNAS 9's names, and the seed's.
var diskTypes = map[string]bool{"Disk": true, "ZVOL": true, "Device": true, "ZFS Volume": true}

// extentIn sets the fields of e that the view carries, for an extent
// that is not a pool volume.
func extentIn(v extentView, e *mgmt.Extent) error {
	size, err := rest.ParseSize(v.Filesize)
	if err != nil {
		return rest.BadRequest("iscsi_target_extent_filesize", "%v", err)
	}
	e.Name, e.Comment, e.Filesize = v.Name, v.Comment, size
	switch {
	case v.Type == "File":
		if v.Disk != "" {
			return rest.BadRequest("iscsi_target_extent_disk", "a File extent has a path, not a disk")
		}
		e.Type, e.Path, e.Disk = mgmt.ExtentFile, v.Path, ""
	case diskTypes[v.Type]:
		disk := cmp.Or(v.Disk, v.Path)
		if disk == "" {
			return rest.BadRequest("iscsi_target_extent_disk", "a %s extent needs its device (e.g. \"da1\", \"/dev/sdb\") or zvol (\"zvol/POOL/NAME\")", v.Type)
		}
		if strings.HasPrefix(disk, zvolPrefix) {
			return rest.BadRequest("iscsi_target_extent_disk", "%s: an extent's storage cannot be changed to a zvol; delete it and make a new extent", disk)
		}
		if v.Type == "ZVOL" || v.Type == "ZFS Volume" {
			return rest.BadRequest("iscsi_target_extent_disk", "%q is not a zvol: want \"zvol/POOL/NAME\"", disk)
		}
		e.Type, e.Disk, e.Path = mgmt.ExtentDisk, disk, ""
	default:
		return rest.BadRequest("iscsi_target_extent_type", `%q is not "File", "Disk", "ZVOL", "Device" or "ZFS Volume"`, v.Type)
	}
	return nil
}

// exportZvol makes the extent v over a pool volume (disk
// "zvol/POOL/NAME"): the volume is already an extent of the model, which
// takes v's name and comment. A volume serves one extent at a time.
func (a *api) exportZvol(ctx context.Context, v extentView, disk string) (mgmt.Extent, error) {
	pool, name, ok := mgmt.ParseZvol(disk)
	if !ok {
		return mgmt.Extent{}, rest.BadRequest("iscsi_target_extent_disk", "%q is not \"zvol/POOL/NAME\"", disk)
	}
	if v.Filesize != "0" && v.Filesize != "" {
		return mgmt.Extent{}, rest.BadRequest("iscsi_target_extent_filesize", "a zvol extent has its zvol's size; change it with PUT /api/v1.0/storage/volume/%s/zvols/%s/", pool, name)
	}
	e, err := a.m.AdoptVolume(ctx, pool, name, func(e *mgmt.Extent) error {
		e.Name, e.Comment = v.Name, v.Comment
		return nil
	})
	var me *mgmt.Error
	switch {
	case errors.As(err, &me) && me.Kind == mgmt.KindNotFound && (me.Object == "volume" || me.Object == "pool"):
		return mgmt.Extent{}, rest.BadRequest("iscsi_target_extent_disk", "%s: volume %s has no zvol %s; make it with POST %s%s/zvols/", disk, pool, name, StoragePrefix, pool)
	case errors.As(err, &me) && me.Kind == mgmt.KindExists && me.Field == "disk":
		return mgmt.Extent{}, rest.Conflict("iscsi_target_extent_disk", "%s: %s", disk, me.Msg)
	}
	return e, err
}

// zvolExtentIn applies an update to an extent over a pool volume: only
// its name and comment can change.
func zvolExtentIn(cur, v extentView, e *mgmt.Extent) error {
	c, n := jsonFields(cur), jsonFields(v)
	for _, f := range []string{"iscsi_target_extent_type", "iscsi_target_extent_path", "iscsi_target_extent_disk", "iscsi_target_extent_filesize"} {
		if c[f] != n[f] {
			return rest.BadRequest(f, "extent %d is zvol %s: delete the extent to use other storage, or resize the zvol under %s", e.ID, cur.Disk, StoragePrefix)
		}
	}
	e.Name, e.Comment = v.Name, v.Comment
	return nil
}

func extentResource(a *api) resource {
	return resource{
		name:   "extent",
		fields: extentFields,
		list:   func() ([]any, error) { return views(a.m.Config(false).Extents, extentOut), nil },
		get: func(id int) (any, error) {
			return findView(a.m.Config(false).Extents, id, "extent", func(e mgmt.Extent) int { return e.ID }, extentOut)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			v := extentView{Type: "File", Filesize: "0"}
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			if disk := cmp.Or(v.Disk, v.Path); diskTypes[v.Type] && strings.HasPrefix(disk, zvolPrefix) {
				e, err := a.exportZvol(ctx, v, disk)
				if err != nil {
					return nil, err
				}
				return extentOut(e), nil
			}
			e := mgmt.NewExtent()
			if err := extentIn(v, &e); err != nil {
				return nil, err
			}
			e, err := a.m.CreateExtent(ctx, e)
			if err != nil {
				return nil, err
			}
			return extentOut(e), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			e, err := a.m.UpdateExtent(ctx, id, func(e *mgmt.Extent) error {
				cur := extentOut(*e)
				v := cur
				if err := merge.Patch(&v, body, "id"); err != nil {
					return err
				}
				if e.Pool != "" {
					return zvolExtentIn(cur, v, e)
				}
				return extentIn(v, e)
			})
			if err != nil {
				return nil, err
			}
			return extentOut(e), nil
		},
		delete: a.deleteExtent,
	}
}

// deleteExtent deletes an extent and its LUN maps, as FreeNAS's database
// cascades them. An extent over a pool volume is not deleted, since it
// is the zvol: it gives up its LUNs and takes the zvol's name again, and
// DELETE under /api/v1.0/storage/volume/ then destroys the zvol.
func (a *api) deleteExtent(ctx context.Context, id int) error {
	if released, err := a.m.ReleaseVolume(ctx, id, true); released || err != nil {
		return err
	}
	return a.m.DeleteExtent(ctx, id, false, true)
}

// Authorized initiators (initiator groups).

type initiatorView struct {
	ID          int    `json:"id"`
	Initiators  string `json:"iscsi_target_initiator_initiators"`
	AuthNetwork string `json:"iscsi_target_initiator_auth_network"`
	Comment     string `json:"iscsi_target_initiator_comment"`
	Tag         int    `json:"iscsi_target_initiator_tag"`
}

var initiatorFields = map[string]string{"initiators": "iscsi_target_initiator_initiators",
	"auth_network": "iscsi_target_initiator_auth_network", "comment": "iscsi_target_initiator_comment"}

func initiatorOut(i mgmt.Initiator) initiatorView {
	return initiatorView{ID: i.ID, Initiators: joinList(i.Initiators), AuthNetwork: joinList(i.AuthNetwork), Comment: i.Comment, Tag: i.ID}
}

func initiatorIn(v initiatorView, i *mgmt.Initiator) {
	i.Initiators, i.AuthNetwork, i.Comment = splitList(v.Initiators), splitList(v.AuthNetwork), v.Comment
}

func initiatorResource(a *api) resource {
	return resource{
		name:   "authorizedinitiator",
		fields: initiatorFields,
		list:   func() ([]any, error) { return views(a.m.Config(false).Initiators, initiatorOut), nil },
		get: func(id int) (any, error) {
			return findView(a.m.Config(false).Initiators, id, "authorized initiator", func(i mgmt.Initiator) int { return i.ID }, initiatorOut)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			v := initiatorView{Initiators: "ALL", AuthNetwork: "ALL"}
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			if v.Tag != 0 {
				return nil, rest.BadRequest("iscsi_target_initiator_tag", "the tag is the group's id, assigned by the server; leave it out")
			}
			var i mgmt.Initiator
			initiatorIn(v, &i)
			i, err := a.m.CreateInitiator(ctx, i)
			if err != nil {
				return nil, err
			}
			return initiatorOut(i), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			i, err := a.m.UpdateInitiator(ctx, id, func(i *mgmt.Initiator) error {
				v := initiatorOut(*i)
				if err := merge.Patch(&v, body, "id", "iscsi_target_initiator_tag"); err != nil {
					return err
				}
				initiatorIn(v, i)
				return nil
			})
			if err != nil {
				return nil, err
			}
			return initiatorOut(i), nil
		},
		delete: func(ctx context.Context, id int) error { return a.m.DeleteInitiator(ctx, id, false) },
	}
}

// Auth credentials.

type authView struct {
	ID         int    `json:"id"`
	Tag        int    `json:"iscsi_target_auth_tag"`
	User       string `json:"iscsi_target_auth_user"`
	Secret     string `json:"iscsi_target_auth_secret,omitempty"`
	PeerUser   string `json:"iscsi_target_auth_peeruser"`
	PeerSecret string `json:"iscsi_target_auth_peersecret,omitempty"`
}

var authFields = map[string]string{"tag": "iscsi_target_auth_tag", "user": "iscsi_target_auth_user",
	"secret": "iscsi_target_auth_secret", "peeruser": "iscsi_target_auth_peeruser", "peersecret": "iscsi_target_auth_peersecret"}

// authOut shows a credential without its secrets.
func authOut(x mgmt.Auth) authView {
	return authView{ID: x.ID, Tag: x.Tag, User: x.User, PeerUser: x.PeerUser}
}

func authResource(a *api) resource {
	return resource{
		name:   "authcredential",
		fields: authFields,
		list:   func() ([]any, error) { return views(a.m.Config(false).Auths, authOut), nil },
		get: func(id int) (any, error) {
			return findView(a.m.Config(false).Auths, id, "auth credential", func(x mgmt.Auth) int { return x.ID }, authOut)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			var v authView
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			x, err := a.m.CreateAuth(ctx, mgmt.Auth{Tag: v.Tag, User: v.User, Secret: v.Secret, PeerUser: v.PeerUser, PeerSecret: v.PeerSecret})
			if err != nil {
				return nil, err
			}
			return authOut(x), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			x, err := a.m.UpdateAuth(ctx, id, func(x *mgmt.Auth) error {
				v := authView{ID: x.ID, Tag: x.Tag, User: x.User, Secret: x.Secret, PeerUser: x.PeerUser, PeerSecret: x.PeerSecret}
				if err := merge.Patch(&v, body, "id"); err != nil {
					return err
				}
				x.Tag, x.User, x.Secret, x.PeerUser, x.PeerSecret = v.Tag, v.User, v.Secret, v.PeerUser, v.PeerSecret
				return nil
			})
			if err != nil {
				return nil, err
			}
			return authOut(x), nil
		},
		delete: func(ctx context.Context, id int) error { return a.m.DeleteAuth(ctx, id, false) },
	}
}

// Targets.

type targetView struct {
	ID               int     `json:"id"`
	Name             string  `json:"iscsi_target_name"`
	Alias            *string `json:"iscsi_target_alias"`
	Serial           string  `json:"iscsi_target_serial"`
	Flags            string  `json:"iscsi_target_flags"`
	PortalGroup      *int    `json:"iscsi_target_portalgroup"`
	InitiatorGroup   *int    `json:"iscsi_target_initiatorgroup"`
	AuthType         string  `json:"iscsi_target_authtype"`
	AuthGroup        *int    `json:"iscsi_target_authgroup"`
	InitialDigest    string  `json:"iscsi_target_initialdigest"`
	QueueDepth       int     `json:"iscsi_target_queue_depth"`
	LogicalBlocksize int     `json:"iscsi_target_logical_blocksize"`
	Type             string  `json:"iscsi_target_type"`
}

var targetFields = map[string]string{"name": "iscsi_target_name", "alias": "iscsi_target_alias",
	"groups[0].portal": "iscsi_target_portalgroup", "groups[0].initiator": "iscsi_target_initiatorgroup",
	"groups[0].auth": "iscsi_target_authgroup", "groups[0].authmethod": "iscsi_target_authtype", "groups": "iscsi_target_portalgroup"}

// fixedTarget says why each read-only target field cannot change: istgt
// kept them per target, the model keeps them per extent or per daemon.
var fixedTarget = map[string]string{
	"iscsi_target_serial":            "the serial number belongs to each extent (its LUN) here, not to the target",
	"iscsi_target_flags":             "read-only is set per extent here, not per target",
	"iscsi_target_logical_blocksize": "the block size belongs to each extent here, not to the target",
	"iscsi_target_initialdigest":     "digests are negotiated per connection: the target accepts None and CRC32C (Auto)",
	"iscsi_target_type":              "targets serve disks only",
}

// targetOut shows t; the LU fields come from its LUN 0 extent.
func (a *api) targetOut(cfg *mgmt.Config, t mgmt.Target) targetView {
	v := targetView{ID: t.ID, Name: t.Name, AuthType: "None", InitialDigest: "Auto", QueueDepth: cmp.Or(t.QueueDepth, a.limits.QueueDepth),
		LogicalBlocksize: 512, Flags: "rw", Type: "Disk"}
	if t.Alias != "" {
		alias := t.Alias
		v.Alias = &alias
	}
	if len(t.Groups) > 0 {
		g := t.Groups[0]
		portal := g.Portal
		v.PortalGroup, v.InitiatorGroup, v.AuthGroup, v.AuthType = &portal, g.Initiator, g.Auth, authMethodOut(g.AuthMethod)
	}
	for _, te := range cfg.TargetExtents {
		if te.Target != t.ID || te.LunID != 0 || te.Initiator != "" {
			continue
		}
		for _, e := range cfg.Extents {
			if e.ID == te.Extent {
				v.Serial, v.LogicalBlocksize = e.Serial, e.Blocksize
				if e.RO {
					v.Flags = "ro"
				}
			}
		}
	}
	return v
}

// targetIn sets t's name, alias and first group from the view, refusing
// changes to the fields the model keeps elsewhere.
func targetIn(cur, v targetView, t *mgmt.Target) error {
	c, n := jsonFields(cur), jsonFields(v)
	for f, why := range fixedTarget {
		if c[f] != n[f] {
			return rest.BadRequest(f, "%s", why)
		}
	}
	method, err := authMethodIn("iscsi_target_authtype", v.AuthType, v.AuthGroup)
	if err != nil {
		return err
	}
	if v.QueueDepth != cur.QueueDepth {
		// istgt's 0 turns command queuing off: one command at a time.
		if v.QueueDepth < 0 || v.QueueDepth > 255 {
			return rest.BadRequest("iscsi_target_queue_depth", "%d is not from 0 (queuing off) to 255", v.QueueDepth)
		}
		t.QueueDepth = max(v.QueueDepth, 1)
	}
	t.Name = v.Name
	t.Alias = ""
	if v.Alias != nil {
		t.Alias = *v.Alias
	}
	if v.PortalGroup == nil {
		// FreeNAS 9.3 and later give a target its groups through
		// targetgroup, as the Cinder driver does: no portal group here
		// means none (or no more) on the target itself.
		if v.InitiatorGroup != nil || v.AuthGroup != nil {
			return rest.BadRequest("iscsi_target_portalgroup", "an initiator or auth group needs a portal group (or use targetgroup)")
		}
		if len(t.Groups) > 0 {
			t.Groups = t.Groups[1:]
		}
		return nil
	}
	g := mgmt.TargetGroup{Portal: *v.PortalGroup, Initiator: v.InitiatorGroup, Auth: v.AuthGroup, AuthMethod: method}
	if len(t.Groups) == 0 {
		t.Groups = []mgmt.TargetGroup{g}
	} else {
		t.Groups[0] = g
	}
	return nil
}

func targetResource(a *api) resource {
	return resource{
		name:   "target",
		fields: targetFields,
		list: func() ([]any, error) {
			cfg := a.m.Config(false)
			return views(cfg.Targets, func(t mgmt.Target) targetView { return a.targetOut(cfg, t) }), nil
		},
		get: func(id int) (any, error) {
			cfg := a.m.Config(false)
			return findView(cfg.Targets, id, "target", func(t mgmt.Target) int { return t.ID }, func(t mgmt.Target) targetView { return a.targetOut(cfg, t) })
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			def := a.targetOut(&mgmt.Config{}, mgmt.NewTarget())
			v := def
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			t := mgmt.NewTarget()
			if err := targetIn(def, v, &t); err != nil {
				return nil, err
			}
			t, err := a.m.CreateTarget(ctx, t)
			if err != nil {
				return nil, err
			}
			return a.targetOut(a.m.Config(false), t), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			cfg := a.m.Config(false)
			t, err := a.m.UpdateTarget(ctx, id, func(t *mgmt.Target) error {
				cur := a.targetOut(cfg, *t)
				v := cur
				if err := merge.Patch(&v, body, "id"); err != nil {
					return err
				}
				return targetIn(cur, v, t)
			})
			if err != nil {
				return nil, err
			}
			return a.targetOut(a.m.Config(false), t), nil
		},
		// Deleting a target deletes its LUN maps and target groups, as
		// FreeNAS's database cascades them (the Cinder driver relies on
		// it); its extents stay.
		delete: func(ctx context.Context, id int) error { return a.m.DeleteTarget(ctx, id, true) },
	}
}

// Target-to-extent maps (FreeNAS v1.0's targettoextent, absent from the
// seed but needed to give a target a LUN).

type targetToExtentView struct {
	ID     int  `json:"id"`
	Target int  `json:"iscsi_target"`
	Extent int  `json:"iscsi_extent"`
	LunID  *int `json:"iscsi_lunid"`
}

var targetToExtentFields = map[string]string{"target": "iscsi_target", "extent": "iscsi_extent", "lunid": "iscsi_lunid"}

func targetToExtentOut(te mgmt.TargetExtent) targetToExtentView {
	lun := te.LunID
	return targetToExtentView{ID: te.ID, Target: te.Target, Extent: te.Extent, LunID: &lun}
}

// nextLUN is the lowest LUN the target does not use yet.
func nextLUN(cfg *mgmt.Config, target int) int {
	used := map[int]bool{}
	for _, te := range cfg.TargetExtents {
		if te.Target == target {
			used[te.LunID] = true
		}
	}
	n := 0
	for used[n] {
		n++
	}
	return n
}

func targetToExtentResource(a *api) resource {
	return resource{
		name:   "targettoextent",
		fields: targetToExtentFields,
		list:   func() ([]any, error) { return views(a.m.Config(false).TargetExtents, targetToExtentOut), nil },
		get: func(id int) (any, error) {
			return findView(a.m.Config(false).TargetExtents, id, "target-to-extent map", func(te mgmt.TargetExtent) int { return te.ID }, targetToExtentOut)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			var v targetToExtentView
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			te := mgmt.TargetExtent{Target: v.Target, Extent: v.Extent}
			if v.LunID != nil {
				te.LunID = *v.LunID
			} else {
				te.LunID = nextLUN(a.m.Config(false), v.Target)
			}
			te, err := a.m.CreateTargetExtent(ctx, te)
			if err != nil {
				return nil, err
			}
			return targetToExtentOut(te), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			te, err := a.m.UpdateTargetExtent(ctx, id, func(te *mgmt.TargetExtent) error {
				v := targetToExtentOut(*te)
				if err := merge.Patch(&v, body, "id"); err != nil {
					return err
				}
				if v.LunID == nil {
					return rest.BadRequest("iscsi_lunid", "a LUN number is required")
				}
				te.Target, te.Extent, te.LunID = v.Target, v.Extent, *v.LunID
				return nil
			})
			if err != nil {
				return nil, err
			}
			return targetToExtentOut(te), nil
		},
		delete: func(ctx context.Context, id int) error { return a.m.DeleteTargetExtent(ctx, id) },
	}
}
