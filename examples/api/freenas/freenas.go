// Package freenas serves the FreeNAS v1.0 REST API of seed 001
// (/api/v1.0/services/iscsi/...) on top of a mgmt.Manager: global
// configuration, extents, authorized initiators, auth credentials and
// targets, with the documented field names, offset/limit paging (default
// limit 30) and status codes (200 list, 201 created, 202 updated, 204
// deleted). Sizes take "10MB"-style suffixes, binary as istgt reads them.
//
// The seed has no resource that maps an extent into a target, so this
// package adds FreeNAS v1.0's targettoextent resource (iscsi_target,
// iscsi_extent, iscsi_lunid) beside them, and what the OpenStack Cinder
// driver iXsystems wrote for this API uses: targetgroup (a target's portal
// group, initiator group and auth), portal, Disk and ZVOL extents
// (iscsi_target_extent_disk, "zvol/POOL/NAME" naming a pool volume) and,
// under StoragePrefix, the --pool pools as volumes and their volumes as
// zvols. Deleting a target or an extent deletes its LUN maps, as
// FreeNAS's database cascades them. Repeated slashes in a path are read as
// one (the driver POSTs to "targetgroup//").
//
// The projection onto mgmt's model: an authorized initiator is an
// initiator group ("ALL" is the empty list, several names or networks are
// separated by spaces, commas or newlines, and the group's tag is its id);
// a target has one portal group, one initiator group and one auth group;
// the global discovery auth method applies to every portal. CHAP secrets
// are accepted and never returned. Settings this SDK does not have (istgt's
// logical unit controller) are refused with 400 rather than stored and
// ignored; istgt's fixed session parameters are reported as the daemon
// negotiates them and cannot be changed here. iscsi_maxconnect is mgmt's
// Global.MaxConnections: each target negotiates MaxConnections up to it;
// iscsi_maxconnect_in_effect (read-only) reports the limit in force.
//
// Errors are JSON objects mapping the field at fault to a list of messages
// ({"iscsi_target_extent_filesize": ["..."]}), or {"__all__": [...]} when
// no single field is; mgmt's refusals map to 400, 404, 409 and 501.
package freenas

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Prefix is where the resources live.
const Prefix = "/api/v1.0/services/iscsi/"

// defaultLimit is the page size of a listing without ?limit=.
const defaultLimit = 30

// SessionLimits are the session parameters the daemon negotiates, which
// globalconfiguration reports (istgt's fields of the same meaning).
type SessionLimits struct {
	MaxSessions       int // iscsi_maxsesh; 0 means no limit
	FirstBurst        int
	MaxBurst          int
	MaxRecvData       int
	MaxOutstandingR2T int
	DefaultTime2Wait  int
	DefaultTime2Keep  int
	NopInInterval     int // seconds
	IOTimeout         int // seconds an initiator may stay silent (NOP-In timeout)
	QueueDepth        int // commands a session may have outstanding
}

// Handler returns the seed 001 resources served from m. limits is what
// globalconfiguration reports for istgt's session parameters; log
// receives internal errors (nil discards them).
func Handler(m *mgmt.Manager, limits SessionLimits, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &api{m: m, limits: limits, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"globalconfiguration/", a.getGlobal)
	mux.HandleFunc("PUT "+Prefix+"globalconfiguration/", a.putGlobal)
	resources := []resource{extentResource(a), initiatorResource(a), authResource(a), targetResource(a), targetToExtentResource(a),
		targetGroupResource(a), portalResource(a)}
	for _, r := range resources {
		r := r
		mux.HandleFunc("GET "+Prefix+r.name+"/", func(w http.ResponseWriter, req *http.Request) { a.list(w, req, r) })
		mux.HandleFunc("POST "+Prefix+r.name+"/", func(w http.ResponseWriter, req *http.Request) { a.create(w, req, r) })
		mux.HandleFunc("GET "+Prefix+r.name+"/{id}/", func(w http.ResponseWriter, req *http.Request) { a.get(w, req, r) })
		mux.HandleFunc("PUT "+Prefix+r.name+"/{id}/", func(w http.ResponseWriter, req *http.Request) { a.update(w, req, r) })
		mux.HandleFunc("DELETE "+Prefix+r.name+"/{id}/", func(w http.ResponseWriter, req *http.Request) { a.delete(w, req, r) })
	}
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, req *http.Request) {
		a.fail(w, rest.NotFound("no resource %s", req.URL.Path), nil)
	})
	a.storageRoutes(mux)
	return rest.CollapseSlashes(mux)
}

type api struct {
	m      *mgmt.Manager
	limits SessionLimits
	log    *slog.Logger
}

// resource is one collection of seed 001, projected onto mgmt objects.
type resource struct {
	name string
	// fields maps mgmt's JSON field names to this resource's, to name
	// the field of a refusal.
	fields map[string]string
	list   func() ([]any, error)
	get    func(id int) (any, error)
	// create and update take the request body.
	create func(ctx context.Context, body []byte) (any, error)
	update func(ctx context.Context, id int, body []byte) (any, error)
	delete func(ctx context.Context, id int) error
}

func (a *api) list(w http.ResponseWriter, r *http.Request, res resource) {
	page, err := rest.ParsePage(r, defaultLimit)
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	items, err := res.list()
	if err != nil {
		a.fail(w, err, res.fields)
		return
	}
	rest.WriteJSON(w, http.StatusOK, rest.Apply(page, items))
}

func (a *api) get(w http.ResponseWriter, r *http.Request, res resource) {
	id, err := rest.ParseID(r.PathValue("id"))
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	v, err := res.get(id)
	if err != nil {
		a.fail(w, err, res.fields)
		return
	}
	rest.WriteJSON(w, http.StatusOK, v)
}

func (a *api) create(w http.ResponseWriter, r *http.Request, res resource) {
	body, err := readBody(r)
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	v, err := res.create(r.Context(), body)
	if err != nil {
		a.fail(w, err, res.fields)
		return
	}
	rest.WriteJSON(w, http.StatusCreated, v)
}

func (a *api) update(w http.ResponseWriter, r *http.Request, res resource) {
	id, err := rest.ParseID(r.PathValue("id"))
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	body, err := readBody(r)
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	v, err := res.update(r.Context(), id, body)
	if err != nil {
		a.fail(w, err, res.fields)
		return
	}
	rest.WriteJSON(w, http.StatusAccepted, v)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request, res resource) {
	id, err := rest.ParseID(r.PathValue("id"))
	if err != nil {
		a.fail(w, err, nil)
		return
	}
	if err := res.delete(r.Context(), id); err != nil {
		a.fail(w, err, res.fields)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func readBody(r *http.Request) ([]byte, error) { return rest.ReadObject(r) }

// fail answers err in seed 001's error shape, renaming mgmt's field names
// to the resource's.
func (a *api) fail(w http.ResponseWriter, err error, fields map[string]string) {
	status, msg := rest.StatusOf(rest.FromMerge(err))
	if status == http.StatusInternalServerError {
		a.log.Error("freenas API", "err", err)
	}
	field := "__all__"
	if f := fieldOf(err); f != "" {
		field = f
		if name, ok := fields[baseField(f)]; ok {
			field = name
		}
	}
	rest.WriteJSON(w, status, map[string][]string{field: {msg}})
}

// splitList reads seed 001's "ALL" or a list separated by spaces, commas
// or newlines.
func splitList(s string) []string {
	if strings.EqualFold(strings.TrimSpace(s), "ALL") {
		return []string{}
	}
	return append([]string{}, strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })...)
}

// joinList writes a list the way splitList reads it.
func joinList(l []string) string {
	if len(l) == 0 {
		return "ALL"
	}
	return strings.Join(l, "\n")
}

// notFound is the 404 of an object that does not exist.
func notFound(what string, id int) error { return rest.NotFound("%s %d does not exist", what, id) }

// authMethods maps seed 001's auth method names to mgmt's.
var authMethods = map[string]string{"None": mgmt.AuthNone, "CHAP": mgmt.AuthCHAP, "CHAP Mutual": mgmt.AuthMutualCHAP}

func authMethodIn(field, v string, group *int) (string, error) {
	if v == "Auto" {
		// istgt's Auto lets the initiator choose between none and CHAP;
		// this SDK requires what the target says, so Auto is taken as
		// None only where no auth group would make CHAP possible.
		if group != nil {
			return "", rest.BadRequest(field, `"Auto" with an auth group is not supported: choose "CHAP", "CHAP Mutual" or "None"`)
		}
		return mgmt.AuthNone, nil
	}
	m, ok := authMethods[v]
	if !ok {
		return "", rest.BadRequest(field, `%q is not "None", "Auto", "CHAP" or "CHAP Mutual"`, v)
	}
	return m, nil
}

func authMethodOut(v string) string {
	for k, m := range authMethods {
		if m == v {
			return k
		}
	}
	return v
}

// fieldOf returns the field an error names, if any.
func fieldOf(err error) string {
	var re *rest.Error
	var me *mgmt.Error
	var pe *merge.Error
	switch {
	case errors.As(err, &re):
		return re.Field
	case errors.As(err, &pe):
		return pe.Field
	case errors.As(err, &me):
		return me.Field
	}
	return ""
}

// baseField reduces a mgmt field path to the key of a resource's field
// map: "groups[0].portal" stays whole (a target's one group has a field of
// its own in seed 001), "listen[1].ip" becomes "listen".
func baseField(f string) string {
	if strings.HasPrefix(f, "groups[0].") {
		return f
	}
	if i := strings.IndexAny(f, "[."); i > 0 {
		return f[:i]
	}
	return f
}

// views shows every object of list.
func views[T, V any](list []T, out func(T) V) []any {
	res := make([]any, len(list))
	for i, x := range list {
		res[i] = out(x)
	}
	return res
}

// findView shows the object of list with id, or a 404.
func findView[T, V any](list []T, id int, what string, idOf func(T) int, out func(T) V) (any, error) {
	for _, x := range list {
		if idOf(x) == id {
			return out(x), nil
		}
	}
	return nil, notFound(what, id)
}

// decodeNew decodes a create request over the defaults in v, refusing an
// id (the server assigns it).
func decodeNew[V any](body []byte, v *V) error {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err == nil {
		if _, ok := probe["id"]; ok {
			return rest.BadRequest("id", "assigned by the server; leave it out")
		}
	}
	return merge.Strict(body, v)
}

// jsonFields renders a view's fields as JSON texts, to compare them.
func jsonFields(v any) map[string]string {
	b, _ := json.Marshal(v)
	var raw map[string]json.RawMessage
	json.Unmarshal(b, &raw)
	out := make(map[string]string, len(raw))
	for k, x := range raw {
		out[k] = string(x)
	}
	return out
}

// asMgmt is errors.As for *mgmt.Error.
func asMgmt(err error, target **mgmt.Error) bool { return errors.As(err, target) }
