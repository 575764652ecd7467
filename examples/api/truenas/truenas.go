// Package truenas serves the TrueNAS-style iscsi.* middleware methods of
// seed 000 (`midclt call iscsi.portal.create '{...}'`) on top of a
// mgmt.Manager. Handler serves them as JSON-RPC 2.0 over HTTP POST; a
// Server (New) serves them with the rest of what TrueNAS clients call
// (core.*, auth.*, api_key.*, pool.dataset.*, service.*) over every
// transport they use: JSON-RPC 2.0 over HTTP POST and over a WebSocket at
// /api/current, the legacy message protocol at /websocket, and the REST
// twin under /api/v2.0/iscsi. It is a thin adapter: every object, field
// name and rule is mgmt's; this package only maps calls, query filters,
// sessions, jobs and errors.
//
// Calls take positional parameters exactly as midclt passes them:
//
//	{"jsonrpc": "2.0", "id": 1, "method": "iscsi.portal.update",
//	 "params": [1, {"listen": [{"ip": "0.0.0.0", "port": 3260}]}]}
//
// *.query methods take an optional filter list ([["id", "=", 1]], with the
// operators = != > >= < <= in nin rin rnin ^ !^ $ !$ ~ and ["OR", [...]])
// and an optional options object (get, count, limit, offset, order_by,
// select). Updates change only the fields they name.
//
// Errors: a request the model refuses (a field's value, an unsupported
// setting) is JSON-RPC -32602 with data {"errname": "EINVAL" or "ENOTSUP",
// "extra": [[field, message, errno], ...]} naming every field at fault; a
// missing object, a taken name or an object in use is -32001 with errname
// ENOENT, EEXIST or EBUSY. CHAP secrets are accepted on create and update
// and never returned.
package truenas

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Path is where iscsid mounts the handler, as in TrueNAS.
const Path = "/api/current"

// CodeCallError is the JSON-RPC error code of a call the model refused
// for a reason other than its parameters (ENOENT, EEXIST, EBUSY).
const CodeCallError = -32001

// errno values carried in error data, as the middleware reports them.
const (
	errENOENT  = 2
	errEBUSY   = 16
	errEEXIST  = 17
	errEINVAL  = 22
	errENOTSUP = 95
)

var errnames = map[int]string{errENOENT: "ENOENT", errEBUSY: "EBUSY", errEEXIST: "EEXIST", errEINVAL: "EINVAL", errENOTSUP: "ENOTSUP"}

// callError is a refusal with an errno, before it is shaped for the wire.
type callError struct {
	errno int
	msg   string
}

func (e *callError) Error() string { return e.msg }

// Handler returns the JSON-RPC handler for m's iscsi.* methods; log
// receives internal errors (nil discards them).
func Handler(m *mgmt.Manager, log *slog.Logger) http.Handler {
	return jsonrpc.NewServer(Methods(m), nil, log)
}

// Methods returns the iscsi.* methods served from m, keyed by name.
func Methods(m *mgmt.Manager) map[string]jsonrpc.Method {
	a := &adapter{m: m}
	methods := map[string]jsonrpc.Method{
		"iscsi.global.config":   a.globalConfig,
		"iscsi.global.update":   a.globalUpdate,
		"iscsi.global.sessions": a.sessions,

		"iscsi.portal.query":             a.portalQuery,
		"iscsi.portal.create":            a.portalCreate,
		"iscsi.portal.update":            a.portalUpdate,
		"iscsi.portal.delete":            a.portalDelete,
		"iscsi.portal.listen_ip_choices": a.listenIPChoices,

		"iscsi.initiator.query":  a.initiatorQuery,
		"iscsi.initiator.create": a.initiatorCreate,
		"iscsi.initiator.update": a.initiatorUpdate,
		"iscsi.initiator.delete": a.initiatorDelete,

		"iscsi.auth.query":  a.authQuery,
		"iscsi.auth.create": a.authCreate,
		"iscsi.auth.update": a.authUpdate,
		"iscsi.auth.delete": a.authDelete,

		"iscsi.target.query":         a.targetQuery,
		"iscsi.target.create":        a.targetCreate,
		"iscsi.target.update":        a.targetUpdate,
		"iscsi.target.delete":        a.targetDelete,
		"iscsi.target.validate_name": a.validateName,

		"iscsi.extent.query":        a.extentQuery,
		"iscsi.extent.create":       a.extentCreate,
		"iscsi.extent.update":       a.extentUpdate,
		"iscsi.extent.delete":       a.extentDelete,
		"iscsi.extent.disk_choices": a.diskChoices,

		"iscsi.targetextent.query":  a.targetExtentQuery,
		"iscsi.targetextent.create": a.targetExtentCreate,
		"iscsi.targetextent.update": a.targetExtentUpdate,
		"iscsi.targetextent.delete": a.targetExtentDelete,
	}
	for name, fn := range a.datasetMethods() {
		methods[name] = fn
	}
	for name, fn := range methods {
		methods[name] = withErrors(name, fn)
	}
	return methods
}

type adapter struct{ m *mgmt.Manager }

// withErrors shapes what fn returns into the middleware's error objects,
// naming fields after the method's schema ("iscsi_portal_create.listen").
func withErrors(method string, fn jsonrpc.Method) jsonrpc.Method {
	schema := strings.ReplaceAll(method, ".", "_")
	return func(ctx context.Context, params json.RawMessage) (any, error) {
		res, err := fn(ctx, params)
		if err == nil {
			return res, nil
		}
		return nil, wireError(schema, err)
	}
}

func wireError(schema string, err error) error {
	var rpc *jsonrpc.Error
	if errors.As(err, &rpc) {
		return rpc
	}
	var ce *callError
	if errors.As(err, &ce) {
		return &jsonrpc.Error{Code: CodeCallError, Message: "[" + errnames[ce.errno] + "] " + ce.msg,
			Data: map[string]any{"error": ce.errno, "errname": errnames[ce.errno], "reason": ce.msg}}
	}
	var me *mgmt.Error
	if !errors.As(err, &me) {
		return err
	}
	// A validation of the whole model joins several errors: report each.
	var all []*mgmt.Error
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range joined.Unwrap() {
			var one *mgmt.Error
			if errors.As(e, &one) {
				all = append(all, one)
			}
		}
	}
	if len(all) == 0 {
		all = []*mgmt.Error{me}
	}
	errno := errnoOf(me.Kind)
	var extra [][]any
	var lines []string
	for _, e := range all {
		field := schema
		if e.Field != "" {
			field += "." + e.Field
		}
		extra = append(extra, []any{field, e.Error(), errnoOf(e.Kind)})
		lines = append(lines, "["+errnames[errnoOf(e.Kind)]+"] "+field+": "+e.Error())
	}
	// A field's value at fault, including a reference to an object that
	// does not exist, is a parameter error; a missing object named by the
	// call, a taken name or an object in use is a call error.
	code := CodeCallError
	if errno == errEINVAL || errno == errENOTSUP || me.Field != "" && errno == errENOENT {
		code = jsonrpc.CodeInvalidParams
	}
	return &jsonrpc.Error{Code: code, Message: strings.Join(lines, "; "),
		Data: map[string]any{"error": errno, "errname": errnames[errno], "reason": me.Error(), "extra": extra}}
}

func errnoOf(k mgmt.Kind) int {
	switch k {
	case mgmt.KindNotFound:
		return errENOENT
	case mgmt.KindExists:
		return errEEXIST
	case mgmt.KindInUse:
		return errEBUSY
	case mgmt.KindUnsupported:
		return errENOTSUP
	}
	return errEINVAL
}

// query answers a *.query call over list.
func query[T any](params json.RawMessage, list []T, what string) (any, error) {
	filters, opts, err := parseQuery(params)
	if err != nil {
		return nil, err
	}
	items, err := objects(list)
	if err != nil {
		return nil, err
	}
	return runQuery(items, filters, opts, what)
}

// createArg decodes a create call's one object parameter into v, which
// holds the create call's defaults.
func createArg(params json.RawMessage, v any) error {
	args, err := jsonrpc.Positional(params, 1)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		return jsonrpc.InvalidParams("create takes one object parameter")
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(args[0], &probe); err != nil {
		return jsonrpc.InvalidParams("the parameter must be an object: %v", merge.Describe(err))
	}
	if _, ok := probe["id"]; ok {
		return jsonrpc.InvalidParams("id: assigned by the server; leave it out")
	}
	return jsonrpc.Decode(args[0], "the new object", v)
}

// idArg reads the object id of an update or delete call (the first
// positional parameter) and returns the parameters after it.
func idArg(params json.RawMessage, max int) (int, []json.RawMessage, error) {
	args, err := jsonrpc.Positional(params, max)
	if err != nil {
		return 0, nil, err
	}
	if len(args) == 0 {
		return 0, nil, jsonrpc.InvalidParams("the first parameter must be the object id")
	}
	var id int
	if err := json.Unmarshal(args[0], &id); err != nil || id <= 0 {
		return 0, nil, jsonrpc.InvalidParams("id: want a positive integer, got %s", args[0])
	}
	return id, args[1:], nil
}

// patch applies the fields of an update's object parameter to cur: the
// fields it names change, the others keep their values.
func patch[T any](cur *T, raw json.RawMessage) error {
	if err := merge.Patch(cur, raw, "id"); err != nil {
		return jsonrpc.InvalidParams("%v", err)
	}
	return nil
}

// update runs an update call: id, then the fields to change.
func update[T any](ctx context.Context, params json.RawMessage, apply func(context.Context, int, func(*T) error) (T, error)) (any, error) {
	id, rest, err := idArg(params, 2)
	if err != nil {
		return nil, err
	}
	if len(rest) != 1 {
		return nil, jsonrpc.InvalidParams("update takes the id and an object of the fields to change")
	}
	return apply(ctx, id, func(cur *T) error { return patch(cur, rest[0]) })
}

// deleteByID runs a delete call whose only parameter is the id.
func deleteByID(ctx context.Context, params json.RawMessage, del func(context.Context, int) error) (any, error) {
	id, _, err := idArg(params, 1)
	if err != nil {
		return nil, err
	}
	if err := del(ctx, id); err != nil {
		return nil, err
	}
	return true, nil
}

func noParams(params json.RawMessage) error {
	args, err := jsonrpc.Positional(params, 1<<10)
	if err == nil && len(args) > 0 {
		err = jsonrpc.InvalidParams("this method takes no parameters")
	}
	return err
}

// Global configuration and sessions.

func (a *adapter) globalConfig(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams(params); err != nil {
		return nil, err
	}
	return a.m.Global(), nil
}

func (a *adapter) globalUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	args, err := jsonrpc.Positional(params, 1)
	if err != nil {
		return nil, err
	}
	if len(args) != 1 {
		return nil, jsonrpc.InvalidParams("update takes one object of the fields to change")
	}
	return a.m.UpdateGlobal(ctx, func(g *mgmt.Global) error { return patch(g, args[0]) })
}

func (a *adapter) sessions(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Sessions(), "session")
}

// Portals.

func (a *adapter) portalQuery(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Config(false).Portals, "portal")
}

func (a *adapter) portalCreate(ctx context.Context, params json.RawMessage) (any, error) {
	p := mgmt.NewPortal()
	if err := createArg(params, &p); err != nil {
		return nil, err
	}
	return a.m.CreatePortal(ctx, p)
}

func (a *adapter) portalUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	return update(ctx, params, a.m.UpdatePortal)
}

func (a *adapter) portalDelete(ctx context.Context, params json.RawMessage) (any, error) {
	return deleteByID(ctx, params, func(ctx context.Context, id int) error { return a.m.DeletePortal(ctx, id, false) })
}

func (a *adapter) listenIPChoices(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams(params); err != nil {
		return nil, err
	}
	ips, err := a.m.ListenIPChoices()
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ips))
	for _, ip := range ips {
		out[ip] = ip
	}
	return out, nil
}

// Initiator groups.

func (a *adapter) initiatorQuery(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Config(false).Initiators, "initiator")
}

func (a *adapter) initiatorCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var i mgmt.Initiator
	if err := createArg(params, &i); err != nil {
		return nil, err
	}
	return a.m.CreateInitiator(ctx, i)
}

func (a *adapter) initiatorUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	return update(ctx, params, a.m.UpdateInitiator)
}

func (a *adapter) initiatorDelete(ctx context.Context, params json.RawMessage) (any, error) {
	return deleteByID(ctx, params, func(ctx context.Context, id int) error { return a.m.DeleteInitiator(ctx, id, false) })
}

// CHAP credentials.

func (a *adapter) authQuery(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Config(false).Auths, "auth")
}

func (a *adapter) authCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var x mgmt.Auth
	if err := createArg(params, &x); err != nil {
		return nil, err
	}
	return a.m.CreateAuth(ctx, x)
}

func (a *adapter) authUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	return update(ctx, params, a.m.UpdateAuth)
}

func (a *adapter) authDelete(ctx context.Context, params json.RawMessage) (any, error) {
	return deleteByID(ctx, params, func(ctx context.Context, id int) error { return a.m.DeleteAuth(ctx, id, false) })
}

// Targets.

func (a *adapter) targetQuery(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Config(false).Targets, "target")
}

func (a *adapter) targetCreate(ctx context.Context, params json.RawMessage) (any, error) {
	t := mgmt.NewTarget()
	if err := createArg(params, &t); err != nil {
		return nil, err
	}
	return a.m.CreateTarget(ctx, t)
}

func (a *adapter) targetUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	return update(ctx, params, a.m.UpdateTarget)
}

// targetDelete takes the id and, as in the middleware, an optional force
// flag that also drops the target's LUN maps.
func (a *adapter) targetDelete(ctx context.Context, params json.RawMessage) (any, error) {
	id, rest, err := idArg(params, 2)
	if err != nil {
		return nil, err
	}
	var force bool
	if len(rest) == 1 {
		if err := jsonrpc.Decode(rest[0], "force", &force); err != nil {
			return nil, err
		}
	}
	if err := a.m.DeleteTarget(ctx, id, force); err != nil {
		return nil, err
	}
	return true, nil
}

// validateName answers null for a name a target can take, and the reason
// otherwise, as the middleware does.
func (a *adapter) validateName(_ context.Context, params json.RawMessage) (any, error) {
	args, err := jsonrpc.Positional(params, 1)
	if err != nil {
		return nil, err
	}
	var name string
	if len(args) != 1 || json.Unmarshal(args[0], &name) != nil {
		return nil, jsonrpc.InvalidParams("validate_name takes the name as one string parameter")
	}
	if err := a.m.ValidateName(name); err != nil {
		var me *mgmt.Error
		if errors.As(err, &me) {
			return me.Msg, nil
		}
		return err.Error(), nil
	}
	return nil, nil
}

// Extents.

// extentQuery lists the extents; volumes no extent was made on are
// zvols, not extents, and a volume's extent shows as DISK on its zvol.
func (a *adapter) extentQuery(_ context.Context, params json.RawMessage) (any, error) {
	var list []mgmt.Extent
	for _, e := range a.m.Config(false).Extents {
		if !bareVolume(e) {
			list = append(list, zvolView(e))
		}
	}
	return query(params, list, "extent")
}

// modelOnlyExtentFields are fields of mgmt.Extent that the middleware's
// iscsi.extent schema lacks (it forbids fields it does not know): the
// pool and UUID of a volume are the Manager's to set, and a UUID names
// the extent's state files.
var modelOnlyExtentFields = []string{"pool", "uuid"}

// refuseFields refuses a call whose object parameter (positional
// parameter arg) carries one of fields, as the middleware refuses an
// extra input of schema. Malformed parameters are left to the call's own
// decoding.
func refuseFields(params json.RawMessage, arg int, schema string, fields []string) error {
	args, err := jsonrpc.Positional(params, 1<<10)
	if err != nil || len(args) <= arg {
		return nil
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(args[arg], &probe) != nil {
		return nil
	}
	for _, f := range fields {
		if _, ok := probe[f]; ok {
			return fieldError(schema+"."+f, "Extra inputs are not permitted", errEINVAL)
		}
	}
	return nil
}

func (a *adapter) extentCreate(ctx context.Context, params json.RawMessage) (any, error) {
	if err := refuseFields(params, 0, "iscsi_extent_create", modelOnlyExtentFields); err != nil {
		return nil, err
	}
	e := mgmt.NewExtent()
	if err := createArg(params, &e); err != nil {
		return nil, err
	}
	if out, ok, err := a.adoptZvol(ctx, e); ok {
		return zvolView(out), err
	}
	return a.m.CreateExtent(ctx, e)
}

// extentUpdate patches an extent; a volume's extent keeps its zvol.
func (a *adapter) extentUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	if err := refuseFields(params, 1, "iscsi_extent_update", modelOnlyExtentFields); err != nil {
		return nil, err
	}
	out, err := update(ctx, params, func(ctx context.Context, id int, fn func(*mgmt.Extent) error) (mgmt.Extent, error) {
		return a.m.UpdateExtent(ctx, id, func(cur *mgmt.Extent) error {
			d := datasetOf(*cur)
			if d == "" {
				return fn(cur)
			}
			if bareVolume(*cur) {
				return noExtent(id)
			}
			view := zvolView(*cur)
			if err := fn(&view); err != nil {
				return err
			}
			if view.Type != mgmt.ExtentDisk || view.Disk != zvolPrefix+d || view.Path != "" {
				return fieldError("iscsi_extent_update.disk", "the extent of zvol "+d+" stays on it", errEINVAL)
			}
			view.Type, view.Disk, view.Path = cur.Type, cur.Disk, cur.Path
			*cur = view
			return nil
		})
	})
	if e, ok := out.(mgmt.Extent); ok {
		return zvolView(e), err
	}
	return out, err
}

// extentDelete takes the id and optionally {"remove": bool, "force":
// bool}: remove deletes a FILE extent's file, force drops its LUN maps.
// An extent over a zvol gives the zvol back (its data stays), remove or
// not.
func (a *adapter) extentDelete(ctx context.Context, params json.RawMessage) (any, error) {
	id, rest, err := idArg(params, 2)
	if err != nil {
		return nil, err
	}
	var opts struct {
		Remove bool `json:"remove"`
		Force  bool `json:"force"`
	}
	if len(rest) == 1 {
		if err := jsonrpc.Decode(rest[0], "options", &opts); err != nil {
			return nil, err
		}
	}
	// Whether an id is a zvol's never changes (a volume's pool and
	// storage stay), so it is safe to tell from a copy.
	for _, e := range a.m.Config(false).Extents {
		switch {
		case e.ID != id || datasetOf(e) == "":
		case bareVolume(e):
			return nil, noExtent(id)
		default:
			// remove is for a FILE extent's file: the middleware ignores
			// it for an extent over a zvol, which goes back to its
			// dataset, data and all.
			if _, err := a.m.ReleaseVolume(ctx, id, opts.Force); err != nil {
				return nil, err
			}
			return true, nil
		}
	}
	if err := a.m.DeleteExtent(ctx, id, opts.Remove, opts.Force); err != nil {
		return nil, err
	}
	return true, nil
}

func (a *adapter) diskChoices(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams(params); err != nil {
		return nil, err
	}
	disks, err := a.m.DiskChoices()
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(disks))
	for _, d := range disks {
		out[d] = d
	}
	return out, nil
}

// Target-extent (LUN) maps.

func (a *adapter) targetExtentQuery(_ context.Context, params json.RawMessage) (any, error) {
	return query(params, a.m.Config(false).TargetExtents, "targetextent")
}

func (a *adapter) targetExtentCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var te mgmt.TargetExtent
	if err := createArg(params, &te); err != nil {
		return nil, err
	}
	return a.m.CreateTargetExtent(ctx, te)
}

func (a *adapter) targetExtentUpdate(ctx context.Context, params json.RawMessage) (any, error) {
	return update(ctx, params, a.m.UpdateTargetExtent)
}

func (a *adapter) targetExtentDelete(ctx context.Context, params json.RawMessage) (any, error) {
	return deleteByID(ctx, params, a.m.DeleteTargetExtent)
}
