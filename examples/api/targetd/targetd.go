// Package targetd serves targetd's block API (seed 003) as JSON-RPC 2.0
// on top of a mgmt.Manager: pools, volumes, exports, initiator CHAP and
// access groups, with targetd's named parameters and negative error codes.
//
// The projection onto mgmt's model: pools are mgmt pools (configured on
// the host, not through the API); a volume is an extent allocated from a
// pool; every export and access group map is a LUN of one target (Options
// .Target, created on first use, reachable through every portal) masked to
// its initiator (export_create) or to a named initiator group
// (access_group_*), so each initiator sees only what was exported to it.
// targetd's file-system and NFS calls are outside an iSCSI SDK and answer
// "method not found" (-32601) saying so. vol_copy takes the client's
// optional size, larger than the original's.
package targetd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Path is where targetd serves its API.
const Path = "/targetrpc"

// targetd's error codes (negative, as the seed requires).
const (
	CodeInvalid             = -1
	CodeNameConflict        = -50
	CodeExistsInitiator     = -52
	CodeNotFoundVolume      = -103
	CodeInvalidPool         = -110
	CodeNotFoundExport      = -151
	CodeNoSupport           = -153
	CodeNotFoundAccessGroup = -200
	CodeVolumeMasked        = -303
	CodeNoFreeHostLUN       = -1000
)

// maxHostLUN is the largest h_lun_id of an access group map.
const maxHostLUN = 255

// Options configure the adapter.
type Options struct {
	// Target is the name of the target exports are served from (a short
	// name gets the global basename, as every target does). Default
	// "targetd".
	Target string
	// Logger receives internal errors; nil discards them.
	Logger *slog.Logger
}

// Handler returns the JSON-RPC handler for m.
func Handler(m *mgmt.Manager, opt Options) http.Handler {
	return jsonrpc.NewServer(Methods(m, opt), mapError, opt.Logger)
}

// Methods returns targetd's block methods served from m, keyed by name.
func Methods(m *mgmt.Manager, opt Options) map[string]jsonrpc.Method {
	if opt.Target == "" {
		opt.Target = "targetd"
	}
	a := &adapter{m: m, target: opt.Target}
	methods := map[string]jsonrpc.Method{
		"pool_list":                a.poolList,
		"vol_list":                 a.volList,
		"vol_create":               a.volCreate,
		"vol_destroy":              a.volDestroy,
		"vol_copy":                 a.volCopy,
		"export_list":              a.exportList,
		"export_create":            a.exportCreate,
		"export_destroy":           a.exportDestroy,
		"initiator_set_auth":       a.initiatorSetAuth,
		"initiator_list":           a.initiatorList,
		"access_group_list":        a.accessGroupList,
		"access_group_create":      a.accessGroupCreate,
		"access_group_destroy":     a.accessGroupDestroy,
		"access_group_init_add":    a.accessGroupInitAdd,
		"access_group_init_del":    a.accessGroupInitDel,
		"access_group_map_list":    a.accessGroupMapList,
		"access_group_map_create":  a.accessGroupMapCreate,
		"access_group_map_destroy": a.accessGroupMapDestroy,
	}
	for _, name := range fileMethods {
		methods[name] = notServed(name)
	}
	return methods
}

// fileMethods are targetd's btrfs file-system and NFS calls (seed 003's
// second half), which an iSCSI target does not serve.
var fileMethods = []string{"fs_list", "fs_destroy", "fs_create", "fs_clone", "ss_list", "fs_snapshot", "fs_snapshot_delete",
	"nfs_export_auth_list", "nfs_export_list", "nfs_export_add", "nfs_export_remove"}

// notServed answers a file-system or NFS call with "method not found"
// (-32601, what targetd answers for a method it does not have), saying
// why.
func notServed(name string) jsonrpc.Method {
	return func(context.Context, json.RawMessage) (any, error) {
		return nil, fail(jsonrpc.CodeMethodNotFound, "%s: targetd's file-system and NFS calls are not served; this daemon is an iSCSI target (block calls only)", name)
	}
}

type adapter struct {
	m      *mgmt.Manager
	target string
}

// fail is a targetd error.
func fail(code int, format string, args ...any) error {
	return &jsonrpc.Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// mapError gives mgmt's refusals targetd's codes.
func mapError(err error) *jsonrpc.Error {
	var me *mgmt.Error
	if !errors.As(err, &me) {
		return nil
	}
	code := jsonrpc.CodeInvalidParams
	switch me.Kind {
	case mgmt.KindNotFound:
		switch me.Object {
		case "pool":
			code = CodeInvalidPool
		case "volume", "extent":
			code = CodeNotFoundVolume
		}
	case mgmt.KindExists:
		code = CodeNameConflict
	case mgmt.KindInUse:
		code = CodeVolumeMasked
	case mgmt.KindUnsupported:
		code = CodeNoSupport
	}
	return &jsonrpc.Error{Code: code, Message: err.Error()}
}

// args decodes named parameters into v; absent params decode nothing.
func args(params json.RawMessage, v any) error {
	if len(params) == 0 || string(params) == "null" {
		params = json.RawMessage("{}")
	}
	if params[0] != '{' {
		return jsonrpc.InvalidParams("targetd takes named parameters (a JSON object)")
	}
	return jsonrpc.Decode(params, "params", v)
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// checkName enforces targetd's naming convention.
func checkName(field, name string) error {
	if !nameRE.MatchString(name) {
		return jsonrpc.InvalidParams("%s: %q is illegal: names are letters, digits, '_' and '-'", field, name)
	}
	return nil
}

func required(field, v string) error {
	if v == "" {
		return jsonrpc.InvalidParams("%s is required", field)
	}
	return nil
}

// Pools and volumes.

// poolList reports the pools with the type targetd's domain has (block
// or fs, seed 003): a pool whose volumes are made by an extent type's
// opener (RBD) holds block volumes, so it is "block".
func (a *adapter) poolList(_ context.Context, params json.RawMessage) (any, error) {
	if err := args(params, &struct{}{}); err != nil {
		return nil, err
	}
	pools, err := a.m.Pools()
	if err != nil {
		return nil, err
	}
	for i := range pools {
		if pools[i].Type != mgmt.PoolFS {
			pools[i].Type = mgmt.PoolBlock
		}
	}
	return pools, nil
}

type volArgs struct {
	Pool string `json:"pool"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// volume is a volume as vol_list shows it.
type volume struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	UUID string `json:"uuid"`
}

func (a *adapter) volList(_ context.Context, params json.RawMessage) (any, error) {
	var p struct {
		Pool string `json:"pool"`
	}
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := required("pool", p.Pool); err != nil {
		return nil, err
	}
	vols, err := a.m.Volumes(p.Pool)
	if err != nil {
		return nil, err
	}
	out := make([]volume, len(vols))
	for i, v := range vols {
		out[i] = volume{Name: v.Name, Size: v.Size, UUID: v.UUID}
	}
	return out, nil
}

func (a *adapter) volCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p volArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := errors.Join(required("pool", p.Pool), checkName("name", p.Name)); err != nil {
		return nil, firstError(err)
	}
	if _, err := a.m.CreateVolume(ctx, p.Pool, p.Name, p.Size); err != nil {
		return nil, err
	}
	return nil, nil
}

func (a *adapter) volDestroy(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		Pool string `json:"pool"`
		Name string `json:"name"`
	}
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := errors.Join(required("pool", p.Pool), required("name", p.Name)); err != nil {
		return nil, firstError(err)
	}
	if err := a.m.DestroyVolume(ctx, p.Pool, p.Name); err != nil {
		if errors.Is(err, mgmt.ErrInUse) {
			return nil, fail(CodeVolumeMasked, "volume %s/%s is exported; remove its exports first", p.Pool, p.Name)
		}
		return nil, err
	}
	return nil, nil
}

func (a *adapter) volCopy(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		Pool    string `json:"pool"`
		VolOrig string `json:"vol_orig"`
		VolNew  string `json:"vol_new"`
		// Size (optional, as the targetd client sends it) makes the copy
		// larger than the original.
		Size    *int64 `json:"size"`
		Timeout int    `json:"timeout"`
	}
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := errors.Join(required("pool", p.Pool), required("vol_orig", p.VolOrig), checkName("vol_new", p.VolNew)); err != nil {
		return nil, firstError(err)
	}
	var size int64
	if p.Size != nil {
		vols, err := a.m.Volumes(p.Pool)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(vols, func(v mgmt.Volume) bool { return v.Name == p.VolOrig })
		if i < 0 {
			return nil, fail(CodeNotFoundVolume, "volume %s not found in pool %s", p.VolOrig, p.Pool)
		}
		// targetd's block.copy: the size must exceed the original's.
		if *p.Size <= vols[i].Size {
			return nil, jsonrpc.InvalidParams("size %d must be larger than the %d bytes of volume %s in pool %s", *p.Size, vols[i].Size, p.VolOrig, p.Pool)
		}
		size = *p.Size
	}
	if _, err := a.m.CopyVolumeSize(ctx, p.Pool, p.VolOrig, p.VolNew, size); err != nil {
		return nil, err
	}
	return nil, nil
}

// firstError unwraps errors.Join to its first error.
func firstError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()[0]
	}
	return err
}

// The export target.

// targetID returns the export target's id, creating the target (on
// every portal, open to every initiator: masking decides who sees what)
// when create is set. 0 means it does not exist.
func (a *adapter) targetID(ctx context.Context, create bool) (int, error) {
	ts, err := a.m.Targets(mgmt.Query{Filters: map[string]any{"name": a.target}})
	if err != nil {
		return 0, err
	}
	if len(ts) > 0 {
		return ts[0].ID, nil
	}
	if !create {
		return 0, nil
	}
	t := mgmt.NewTarget()
	t.Name, t.Alias = a.target, "targetd exports"
	t.Groups = []mgmt.TargetGroup{{Portal: mgmt.EveryPortal, AuthMethod: mgmt.AuthNone}}
	t, err = a.m.CreateTarget(ctx, t)
	return t.ID, err
}

// Exports.

type export struct {
	InitiatorWWN string `json:"initiator_wwn"`
	LUN          int    `json:"lun"`
	VolName      string `json:"vol_name"`
	VolSize      int64  `json:"vol_size"`
	VolUUID      string `json:"vol_uuid"`
	Pool         string `json:"pool"`
}

func (a *adapter) exportList(ctx context.Context, params json.RawMessage) (any, error) {
	if err := args(params, &struct{}{}); err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, false)
	if err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	out := []export{}
	for _, te := range cfg.TargetExtents {
		if te.Target != tid || te.Initiator == "" {
			continue
		}
		e := extentOf(cfg, te.Extent)
		out = append(out, export{InitiatorWWN: te.Initiator, LUN: te.LunID, VolName: mgmt.VolumeName(e), VolSize: e.Filesize, VolUUID: e.UUID, Pool: e.Pool})
	}
	return out, nil
}

func extentOf(cfg *mgmt.Config, id int) mgmt.Extent {
	for _, e := range cfg.Extents {
		if e.ID == id {
			return e
		}
	}
	return mgmt.Extent{}
}

// volumeID finds a volume's extent id.
func volumeID(cfg *mgmt.Config, pool, vol string) (int, error) {
	found := false
	for _, p := range cfg.Pools {
		found = found || p.Name == pool
	}
	if !found {
		return 0, fail(CodeInvalidPool, "pool %q does not exist", pool)
	}
	for _, e := range cfg.Extents {
		if e.Pool == pool && mgmt.VolumeName(e) == vol {
			return e.ID, nil
		}
	}
	return 0, fail(CodeNotFoundVolume, "volume %s/%s does not exist", pool, vol)
}

type exportArgs struct {
	Pool         string `json:"pool"`
	Vol          string `json:"vol"`
	InitiatorWWN string `json:"initiator_wwn"`
	LUN          *int   `json:"lun"`
}

func (a *adapter) exportCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p exportArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := errors.Join(required("pool", p.Pool), required("vol", p.Vol), required("initiator_wwn", p.InitiatorWWN)); err != nil {
		return nil, firstError(err)
	}
	if p.LUN == nil {
		return nil, jsonrpc.InvalidParams("lun is required")
	}
	vid, err := volumeID(a.m.Config(false), p.Pool, p.Vol)
	if err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, true)
	if err != nil {
		return nil, err
	}
	_, err = a.m.CreateTargetExtent(ctx, mgmt.TargetExtent{Target: tid, Extent: vid, LunID: *p.LUN, Initiator: p.InitiatorWWN})
	return nil, err
}

func (a *adapter) exportDestroy(ctx context.Context, params json.RawMessage) (any, error) {
	var p exportArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if p.LUN != nil {
		return nil, jsonrpc.InvalidParams("export_destroy takes pool, vol and initiator_wwn")
	}
	cfg := a.m.Config(false)
	vid, err := volumeID(cfg, p.Pool, p.Vol)
	if err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, false)
	if err != nil {
		return nil, err
	}
	for _, te := range cfg.TargetExtents {
		if te.Target == tid && te.Extent == vid && te.Initiator == p.InitiatorWWN {
			return nil, a.m.DeleteTargetExtent(ctx, te.ID)
		}
	}
	return nil, fail(CodeNotFoundExport, "volume %s/%s is not exported to %s", p.Pool, p.Vol, p.InitiatorWWN)
}

// Initiators.

func (a *adapter) initiatorSetAuth(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		InitiatorWWN string  `json:"initiator_wwn"`
		InUser       *string `json:"in_user"`
		InPass       *string `json:"in_pass"`
		OutUser      *string `json:"out_user"`
		OutPass      *string `json:"out_pass"`
	}
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := required("initiator_wwn", p.InitiatorWWN); err != nil {
		return nil, err
	}
	return nil, a.setInitiatorAuth(ctx, p.InitiatorWWN, deref(p.InUser), deref(p.InPass), deref(p.OutUser), deref(p.OutPass))
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

type initiatorInfo struct {
	InitID   string `json:"init_id"`
	InitType string `json:"init_type"`
}

func (a *adapter) initiatorList(ctx context.Context, params json.RawMessage) (any, error) {
	var p struct {
		StandaloneOnly bool `json:"standalone_only"`
	}
	if err := args(params, &p); err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, false)
	if err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	grouped := map[string]bool{}
	for _, g := range accessGroups(cfg) {
		for _, n := range g.Initiators {
			grouped[n] = true
		}
	}
	seen := map[string]bool{}
	for _, te := range cfg.TargetExtents {
		if te.Target == tid && te.Initiator != "" {
			seen[te.Initiator] = true
		}
	}
	for _, n := range initiatorsWithAuth(cfg, tid) {
		seen[n] = true
	}
	if !p.StandaloneOnly {
		for n := range grouped {
			seen[n] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		if !p.StandaloneOnly || !grouped[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]initiatorInfo, len(names))
	for i, n := range names {
		out[i] = initiatorInfo{InitID: n, InitType: "iscsi"}
	}
	return out, nil
}

// Access groups: named initiator groups.

// accessGroups lists the initiator groups that have a name.
func accessGroups(cfg *mgmt.Config) []mgmt.Initiator {
	var out []mgmt.Initiator
	for _, g := range cfg.Initiators {
		if g.Name != "" {
			out = append(out, g)
		}
	}
	return out
}

func findGroup(cfg *mgmt.Config, name string) (mgmt.Initiator, bool) {
	for _, g := range accessGroups(cfg) {
		if g.Name == name {
			return g, true
		}
	}
	return mgmt.Initiator{}, false
}

type accessGroup struct {
	Name     string   `json:"name"`
	InitIDs  []string `json:"init_ids"`
	InitType string   `json:"init_type"`
}

func (a *adapter) accessGroupList(_ context.Context, params json.RawMessage) (any, error) {
	if err := args(params, &struct{}{}); err != nil {
		return nil, err
	}
	out := []accessGroup{}
	for _, g := range accessGroups(a.m.Config(false)) {
		out = append(out, accessGroup{Name: g.Name, InitIDs: g.Initiators, InitType: "iscsi"})
	}
	return out, nil
}

type groupArgs struct {
	AgName   string `json:"ag_name"`
	InitID   string `json:"init_id"`
	InitType string `json:"init_type"`
}

// check validates an access group call's arguments.
func (p groupArgs) check(needInit bool) error {
	if err := checkName("ag_name", p.AgName); err != nil {
		return err
	}
	if !needInit {
		return nil
	}
	if err := required("init_id", p.InitID); err != nil {
		return err
	}
	if p.InitType != "iscsi" {
		return fail(CodeNoSupport, "init_type %q is not supported; use \"iscsi\"", p.InitType)
	}
	return nil
}

// inOtherGroup reports the access group an initiator already belongs to.
func inOtherGroup(cfg *mgmt.Config, initiator, except string) (string, bool) {
	for _, g := range accessGroups(cfg) {
		if g.Name != except && slices.Contains(g.Initiators, initiator) {
			return g.Name, true
		}
	}
	return "", false
}

func (a *adapter) accessGroupCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p groupArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := p.check(true); err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	if _, ok := findGroup(cfg, p.AgName); ok {
		return nil, fail(CodeNameConflict, "access group %q exists", p.AgName)
	}
	if other, ok := inOtherGroup(cfg, p.InitID, ""); ok {
		return nil, fail(CodeExistsInitiator, "initiator %s is in access group %q", p.InitID, other)
	}
	_, err := a.m.CreateInitiator(ctx, mgmt.Initiator{Name: p.AgName, Comment: "targetd access group", Initiators: []string{p.InitID}, AuthNetwork: []string{}})
	return nil, err
}

func (a *adapter) accessGroupDestroy(ctx context.Context, params json.RawMessage) (any, error) {
	var p groupArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := p.check(false); err != nil {
		return nil, err
	}
	g, ok := findGroup(a.m.Config(false), p.AgName)
	if !ok {
		return nil, nil // targetd: no error for a group that does not exist
	}
	// The group goes with its volume masking, as in targetd.
	return nil, a.m.DeleteInitiator(ctx, g.ID, true)
}

func (a *adapter) accessGroupInitAdd(ctx context.Context, params json.RawMessage) (any, error) {
	var p groupArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := p.check(true); err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	if other, ok := inOtherGroup(cfg, p.InitID, p.AgName); ok {
		return nil, fail(CodeExistsInitiator, "initiator %s is in access group %q", p.InitID, other)
	}
	g, ok := findGroup(cfg, p.AgName)
	if !ok {
		// targetd creates the group with the initiator.
		_, err := a.m.CreateInitiator(ctx, mgmt.Initiator{Name: p.AgName, Comment: "targetd access group", Initiators: []string{p.InitID}, AuthNetwork: []string{}})
		return nil, err
	}
	_, err := a.m.UpdateInitiator(ctx, g.ID, func(i *mgmt.Initiator) error {
		if !slices.Contains(i.Initiators, p.InitID) {
			i.Initiators = append(i.Initiators, p.InitID)
		}
		return nil
	})
	return nil, err
}

func (a *adapter) accessGroupInitDel(ctx context.Context, params json.RawMessage) (any, error) {
	var p groupArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	if err := p.check(true); err != nil {
		return nil, err
	}
	g, ok := findGroup(a.m.Config(false), p.AgName)
	if !ok {
		return nil, nil
	}
	_, err := a.m.UpdateInitiator(ctx, g.ID, func(i *mgmt.Initiator) error {
		i.Initiators = slices.DeleteFunc(i.Initiators, func(n string) bool { return n == p.InitID })
		return nil
	})
	return nil, err
}

type groupMap struct {
	AgName   string `json:"ag_name"`
	HLunID   int    `json:"h_lun_id"`
	PoolName string `json:"pool_name"`
	VolName  string `json:"vol_name"`
}

func (a *adapter) accessGroupMapList(ctx context.Context, params json.RawMessage) (any, error) {
	if err := args(params, &struct{}{}); err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, false)
	if err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	names := map[int]string{}
	for _, g := range accessGroups(cfg) {
		names[g.ID] = g.Name
	}
	out := []groupMap{}
	for _, te := range cfg.TargetExtents {
		if te.Target != tid || te.InitiatorGroup == nil || names[*te.InitiatorGroup] == "" {
			continue
		}
		e := extentOf(cfg, te.Extent)
		out = append(out, groupMap{AgName: names[*te.InitiatorGroup], HLunID: te.LunID, PoolName: e.Pool, VolName: mgmt.VolumeName(e)})
	}
	return out, nil
}

type mapArgs struct {
	PoolName string `json:"pool_name"`
	VolName  string `json:"vol_name"`
	AgName   string `json:"ag_name"`
	HLunID   *int   `json:"h_lun_id"`
}

func (a *adapter) accessGroupMapCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p mapArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	g, ok := findGroup(cfg, p.AgName)
	if !ok {
		return nil, fail(CodeNotFoundAccessGroup, "access group %q does not exist", p.AgName)
	}
	vid, err := volumeID(cfg, p.PoolName, p.VolName)
	if err != nil {
		return nil, err
	}
	tid, err := a.targetID(ctx, true)
	if err != nil {
		return nil, err
	}
	cfg = a.m.Config(false)
	lun := 0
	if p.HLunID != nil {
		lun = *p.HLunID
		if lun < 0 || lun > maxHostLUN {
			return nil, jsonrpc.InvalidParams("h_lun_id: %d is not from 0 to %d", lun, maxHostLUN)
		}
	} else if lun, ok = freeLUN(cfg, tid, g); !ok {
		return nil, fail(CodeNoFreeHostLUN, "no free host LUN id: 0 to %d are in use", maxHostLUN)
	}
	_, err = a.m.CreateTargetExtent(ctx, mgmt.TargetExtent{Target: tid, Extent: vid, LunID: lun, InitiatorGroup: &g.ID})
	return nil, err
}

// freeLUN finds the lowest LUN no member of g sees yet.
func freeLUN(cfg *mgmt.Config, tid int, g mgmt.Initiator) (int, bool) {
	used := map[int]bool{}
	for _, te := range cfg.TargetExtents {
		if te.Target != tid {
			continue
		}
		switch {
		case te.InitiatorGroup != nil && *te.InitiatorGroup == g.ID,
			te.Initiator == "" && te.InitiatorGroup == nil,
			slices.Contains(g.Initiators, te.Initiator):
			used[te.LunID] = true
		}
	}
	for lun := 0; lun <= maxHostLUN; lun++ {
		if !used[lun] {
			return lun, true
		}
	}
	return 0, false
}

func (a *adapter) accessGroupMapDestroy(ctx context.Context, params json.RawMessage) (any, error) {
	var p mapArgs
	if err := args(params, &p); err != nil {
		return nil, err
	}
	cfg := a.m.Config(false)
	g, ok := findGroup(cfg, p.AgName)
	if !ok {
		return nil, nil
	}
	vid, err := volumeID(cfg, p.PoolName, p.VolName)
	if err != nil {
		return nil, nil // targetd: revoking what does not exist is not an error
	}
	for _, te := range cfg.TargetExtents {
		if te.Extent == vid && te.InitiatorGroup != nil && *te.InitiatorGroup == g.ID {
			return nil, a.m.DeleteTargetExtent(ctx, te.ID)
		}
	}
	return nil, nil
}
