// Package storlever serves StorLever's SAN API over tgt (seed 004) under
// /storlever/api/v1/san/tgt/ on top of a mgmt.Manager: the global
// discovery users, targets by IQN with their state and initiator address
// and name lists, incoming and outgoing CHAP users, and LUNs 1 to 255.
// Successful calls answer 200 (201 with a Location header for creations);
// refusals answer {"error": "..."} with 400, 404, 409 or 501.
//
// The projection onto mgmt's model: a target made here is reachable on
// every portal (EveryPortal). Its initiator lists are one initiator group
// of its own (named sl-acl-ID); an initiator must match both lists, and
// an empty list does not restrict (tgt refuses every initiator until an
// address is bound; "ALL" is accepted for compatibility and means the
// same as an empty list). Its incoming users are one CHAP auth group of
// its own; tgt's single outgoing user is the peer credential of every
// incoming user, and is kept on its own (an outgoing-only credential of
// that group, which the target names with no authentication) while the
// target has no incoming user, as tgt allows. The discovery users work
// the same way. Each LUN is an
// extent of its own (named sl-TARGETID-lunN) over the path given; the
// file must exist and keeps its size. tgt's controller LUN 0 is not
// listed. Discovery users apply to every portal. Passwords are never
// returned: user lists and conf show user names only.
package storlever

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Prefix is where the API lives.
const Prefix = "/storlever/api/v1/san/tgt/"

// Handler returns the seed 004 API served from m; log receives internal
// errors (nil discards them).
func Handler(m *mgmt.Manager, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &api{m: m, log: log}
	mux := http.NewServeMux()
	route := func(pattern string, h func(*http.Request) (int, any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { a.serve(w, r, h) })
	}
	route("GET "+Prefix+"conf", a.getConf)
	route("PUT "+Prefix+"conf", a.putConf)
	route("GET "+Prefix+"target_list", a.listTargets)
	route("POST "+Prefix+"target_list", a.addTarget)
	route("GET "+Prefix+"target_list/{iqn}", a.getTarget)
	route("PUT "+Prefix+"target_list/{iqn}", a.putTarget)
	route("DELETE "+Prefix+"target_list/{iqn}", a.deleteTarget)
	for _, dir := range []string{"incoming", "outgoing"} {
		out := dir == "outgoing"
		route("GET "+Prefix+"target_list/{iqn}/"+dir+"user_list", func(r *http.Request) (int, any, error) { return a.listUsers(r, out) })
		route("POST "+Prefix+"target_list/{iqn}/"+dir+"user_list", func(r *http.Request) (int, any, error) { return a.addUser(r, out) })
		route("PUT "+Prefix+"target_list/{iqn}/"+dir+"user_list/{user}", func(r *http.Request) (int, any, error) { return a.setPassword(r, out) })
		route("DELETE "+Prefix+"target_list/{iqn}/"+dir+"user_list/{user}", func(r *http.Request) (int, any, error) { return a.deleteUser(r, out) })
	}
	route("GET "+Prefix+"target_list/{iqn}/lun_list", a.listLUNs)
	route("POST "+Prefix+"target_list/{iqn}/lun_list", a.addLUN)
	route("GET "+Prefix+"target_list/{iqn}/lun_list/{lun}", a.getLUN)
	route("PUT "+Prefix+"target_list/{iqn}/lun_list/{lun}", a.putLUN)
	route("DELETE "+Prefix+"target_list/{iqn}/lun_list/{lun}", a.deleteLUN)
	route(Prefix, func(r *http.Request) (int, any, error) {
		return 0, nil, rest.NotFound("no resource %s %s", r.Method, r.URL.Path)
	})
	return mux
}

type api struct {
	m   *mgmt.Manager
	log *slog.Logger
}

// created is the answer of a creation: 201 with a Location header.
type created struct{ location string }

// serve runs h and writes its answer: a body, a creation, or an error.
func (a *api) serve(w http.ResponseWriter, r *http.Request, h func(*http.Request) (int, any, error)) {
	status, body, err := h(r)
	if err != nil {
		status, msg := rest.StatusOf(rest.FromMerge(err))
		if status == http.StatusInternalServerError {
			a.log.Error("storlever API", "err", err)
		}
		rest.WriteJSON(w, status, map[string]string{"error": msg})
		return
	}
	if c, ok := body.(created); ok {
		w.Header().Set("Location", c.location)
		w.WriteHeader(http.StatusCreated)
		return
	}
	if body == nil {
		w.WriteHeader(status)
		return
	}
	rest.WriteJSON(w, status, body)
}

// decode reads a request body strictly.
func decode(r *http.Request, v any) error { return rest.DecodeBody(r, v) }

// Global configuration: discovery users.

type conf struct {
	IncomingDiscoveryUser *string `json:"incomingdiscoveryuser,omitempty"`
	OutgoingDiscoveryUser *string `json:"outgoingdiscoveryuser,omitempty"`
}

// discoveryAuth returns the auth group every portal uses for discovery.
func discoveryAuth(cfg *mgmt.Config) (tag int, users []mgmt.Auth) {
	for _, p := range cfg.Portals {
		if p.DiscoveryAuthGroup != nil {
			tag = *p.DiscoveryAuthGroup
			break
		}
	}
	if tag == 0 {
		return 0, nil
	}
	for _, x := range cfg.Auths {
		if x.Tag == tag {
			users = append(users, x)
		}
	}
	return tag, users
}

func (a *api) getConf(*http.Request) (int, any, error) {
	_, users := discoveryAuth(a.m.Config(false))
	in, out := "", ""
	if len(users) > 0 {
		in, out = users[0].User, users[0].PeerUser
	}
	return http.StatusOK, map[string]string{"incomingdiscoveryuser": in, "outgoingdiscoveryuser": out}, nil
}

// splitUser reads "username:passwd"; "" turns the direction off.
func splitUser(field, v string) (user, pass string, err error) {
	if v == "" {
		return "", "", nil
	}
	user, pass, ok := strings.Cut(v, ":")
	if !ok || user == "" || pass == "" {
		return "", "", rest.BadRequest(field, "want username:passwd, or empty to turn authentication off")
	}
	return user, pass, nil
}

func (a *api) putConf(r *http.Request) (int, any, error) {
	var c conf
	if err := decode(r, &c); err != nil {
		return 0, nil, err
	}
	err := a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		tag, users := discoveryAuth(cfg)
		var cur mgmt.Auth
		if len(users) > 0 {
			cur = users[0]
		}
		if c.IncomingDiscoveryUser != nil {
			u, p, err := splitUser("incomingdiscoveryuser", *c.IncomingDiscoveryUser)
			if err != nil {
				return err
			}
			cur.User, cur.Secret = u, p
		}
		if c.OutgoingDiscoveryUser != nil {
			u, p, err := splitUser("outgoingdiscoveryuser", *c.OutgoingDiscoveryUser)
			if err != nil {
				return err
			}
			cur.PeerUser, cur.PeerSecret = u, p
		}
		cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return tag != 0 && x.Tag == tag })
		method := mgmt.AuthNone
		var group *int
		if cur.User != "" || cur.PeerUser != "" {
			if tag == 0 {
				tag = cfg.FreeAuthTag()
			}
			cur.ID, cur.Tag = mgmt.NewID(cfg, cfg.Auths), tag
			cfg.Auths = append(cfg.Auths, cur)
			// An outgoing user alone is kept, as tgt keeps it, in a
			// group discovery names without authenticating (NONE).
			// With an incoming user, CHAP: the initiator proves itself
			// and may ask the target to answer with the outgoing user,
			// as tgt does; it is not required to.
			group = &tag
			if cur.User != "" {
				method = mgmt.AuthCHAP
			}
		}
		for i := range cfg.Portals {
			if cfg.Portals[i].Remote {
				continue // another gateway's discovery
			}
			cfg.Portals[i].DiscoveryAuthMethod, cfg.Portals[i].DiscoveryAuthGroup = method, group
		}
		return nil
	})
	return http.StatusOK, nil, err
}

// Targets.

// findTarget returns the target served under iqn.
func findTarget(cfg *mgmt.Config, iqn string) (int, error) {
	for i, t := range cfg.Targets {
		if cfg.Global.FullName(t.Name) == iqn {
			return i, nil
		}
	}
	return -1, rest.NotFound("target %s does not exist", iqn)
}

func (a *api) listTargets(*http.Request) (int, any, error) {
	cfg := a.m.Config(false)
	out := []string{}
	for _, t := range cfg.Targets {
		out = append(out, cfg.Global.FullName(t.Name))
	}
	return http.StatusOK, out, nil
}

func (a *api) addTarget(r *http.Request) (int, any, error) {
	var req struct {
		IQN string `json:"iqn"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if !mgmt.IsISCSIName(req.IQN) {
		return 0, nil, rest.BadRequest("iqn", "%q is not an iSCSI name (iqn., eui. or naa.)", req.IQN)
	}
	t := mgmt.NewTarget()
	t.Name = req.IQN
	t.Groups = []mgmt.TargetGroup{{Portal: mgmt.EveryPortal, AuthMethod: mgmt.AuthNone}}
	if _, err := a.m.CreateTarget(r.Context(), t); err != nil {
		return 0, nil, err
	}
	return 0, created{location: targetURL(req.IQN)}, nil
}

func targetURL(iqn string) string { return Prefix + "target_list/" + url.PathEscape(iqn) }

// targetInfo is a target as GET target_list/IQN shows it.
type targetInfo struct {
	IQN               string   `json:"iqn"`
	State             string   `json:"state"`
	InitiatorAddrList []string `json:"initiator_addr_list"`
	InitiatorNameList []string `json:"initiator_name_list"`
	IncomingUserList  []string `json:"incominguser_list"`
	OutgoingUserList  []string `json:"outgoinguser_list"`
	LUNList           []int    `json:"lun_list"`
}

func (a *api) getTarget(r *http.Request) (int, any, error) {
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, r.PathValue("iqn"))
	if err != nil {
		return 0, nil, err
	}
	t := cfg.Targets[i]
	info := targetInfo{IQN: cfg.Global.FullName(t.Name), State: t.State, InitiatorAddrList: []string{}, InitiatorNameList: []string{},
		IncomingUserList: userNames(cfg, t, false), OutgoingUserList: userNames(cfg, t, true), LUNList: []int{}}
	if g := aclGroup(cfg, t); g != nil {
		info.InitiatorAddrList, info.InitiatorNameList = g.AuthNetwork, g.Initiators
	}
	for _, te := range cfg.TargetExtents {
		if te.Target == t.ID {
			info.LUNList = append(info.LUNList, te.LunID)
		}
	}
	slices.Sort(info.LUNList)
	return http.StatusOK, info, nil
}

// group returns a target's one group, the one this API manages.
func group(t *mgmt.Target) (*mgmt.TargetGroup, error) {
	if len(t.Groups) != 1 || t.Groups[0].Portal != mgmt.EveryPortal {
		return nil, &rest.Error{Status: http.StatusConflict, Msg: fmt.Sprintf("target %s has portal groups of its own; manage it through the portal-aware APIs", t.Name)}
	}
	return &t.Groups[0], nil
}

// aclGroup returns the initiator group holding a target's lists.
func aclGroup(cfg *mgmt.Config, t mgmt.Target) *mgmt.Initiator {
	if len(t.Groups) != 1 || t.Groups[0].Initiator == nil {
		return nil
	}
	for i := range cfg.Initiators {
		if cfg.Initiators[i].ID == *t.Groups[0].Initiator {
			return &cfg.Initiators[i]
		}
	}
	return nil
}

func (a *api) putTarget(r *http.Request) (int, any, error) {
	var req struct {
		State             *string   `json:"state"`
		InitiatorAddrList *[]string `json:"initiator_addr_list"`
		InitiatorNameList *[]string `json:"initiator_name_list"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	err := a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, r.PathValue("iqn"))
		if err != nil {
			return err
		}
		t := &cfg.Targets[i]
		if req.State != nil {
			if *req.State != mgmt.StateReady && *req.State != mgmt.StateOffline {
				return rest.BadRequest("state", "%q is not ready or offline", *req.State)
			}
			t.State = *req.State
		}
		if req.InitiatorAddrList == nil && req.InitiatorNameList == nil {
			return nil
		}
		g, err := group(t)
		if err != nil {
			return err
		}
		acl := aclGroup(cfg, *t)
		if acl == nil {
			cfg.Initiators = append(cfg.Initiators, mgmt.Initiator{ID: mgmt.NewID(cfg, cfg.Initiators), Name: fmt.Sprintf("sl-acl-%d", t.ID),
				Comment: "initiator lists of " + cfg.Global.FullName(t.Name), Initiators: []string{}, AuthNetwork: []string{}})
			acl = &cfg.Initiators[len(cfg.Initiators)-1]
			g.Initiator = &acl.ID
		}
		if req.InitiatorAddrList != nil {
			acl.AuthNetwork = withoutALL(*req.InitiatorAddrList)
		}
		if req.InitiatorNameList != nil {
			acl.Initiators = withoutALL(*req.InitiatorNameList)
		}
		return nil
	})
	return http.StatusOK, nil, err
}

// withoutALL reads tgt's "ALL" as no restriction.
func withoutALL(l []string) []string {
	out := []string{}
	for _, s := range l {
		if !strings.EqualFold(s, "ALL") {
			out = append(out, s)
		}
	}
	if len(out) < len(l) {
		return []string{}
	}
	return out
}

func (a *api) deleteTarget(r *http.Request) (int, any, error) {
	err := a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, r.PathValue("iqn"))
		if err != nil {
			return err
		}
		t := cfg.Targets[i]
		// The target goes with what this API made for it: its LUN maps and
		// their extents (not their files), its lists and its users.
		extents := map[int]bool{}
		cfg.TargetExtents = slices.DeleteFunc(cfg.TargetExtents, func(te mgmt.TargetExtent) bool {
			if te.Target == t.ID {
				extents[te.Extent] = true
				return true
			}
			return false
		})
		cfg.Extents = slices.DeleteFunc(cfg.Extents, func(e mgmt.Extent) bool {
			return extents[e.ID] && strings.HasPrefix(e.Name, lunPrefix(t.ID)) && !usedElsewhere(cfg, e.ID)
		})
		if acl := aclGroup(cfg, t); acl != nil && acl.Name == fmt.Sprintf("sl-acl-%d", t.ID) {
			id := acl.ID
			cfg.Initiators = slices.DeleteFunc(cfg.Initiators, func(x mgmt.Initiator) bool { return x.ID == id })
		}
		if len(t.Groups) == 1 && t.Groups[0].Auth != nil && !tagUsedElsewhere(cfg, *t.Groups[0].Auth, t.ID) {
			tag := *t.Groups[0].Auth
			cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag })
		}
		cfg.Targets = slices.Delete(cfg.Targets, i, i+1)
		return nil
	})
	return http.StatusOK, nil, err
}

func usedElsewhere(cfg *mgmt.Config, extent int) bool {
	return slices.ContainsFunc(cfg.TargetExtents, func(te mgmt.TargetExtent) bool { return te.Extent == extent })
}

func tagUsedElsewhere(cfg *mgmt.Config, tag, target int) bool {
	for _, p := range cfg.Portals {
		if p.DiscoveryAuthGroup != nil && *p.DiscoveryAuthGroup == tag {
			return true
		}
	}
	for _, t := range cfg.Targets {
		for _, g := range t.Groups {
			if t.ID != target && g.Auth != nil && *g.Auth == tag {
				return true
			}
		}
	}
	return false
}

// CHAP users.

// userNames lists a target's incoming user names, or its outgoing one.
func userNames(cfg *mgmt.Config, t mgmt.Target, outgoing bool) []string {
	out := []string{}
	if len(t.Groups) != 1 || t.Groups[0].Auth == nil {
		return out
	}
	for _, x := range cfg.Auths {
		if x.Tag != *t.Groups[0].Auth {
			continue
		}
		name := x.User
		if outgoing {
			name = x.PeerUser
		}
		if name != "" && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func (a *api) listUsers(r *http.Request, outgoing bool) (int, any, error) {
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, r.PathValue("iqn"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, userNames(cfg, cfg.Targets[i], outgoing), nil
}

// users edits a target's auth group with fn and sets its method from
// what is left: no incoming user NONE (an outgoing user alone stays in
// the group), incoming users CHAP, where an initiator may ask the target
// to prove itself with the outgoing user, as tgt lets it (tgt does not
// require mutual CHAP when it has an outgoing user).
func (a *api) users(ctx context.Context, iqn string, fn func(cfg *mgmt.Config, tag int, mine []*mgmt.Auth) error) error {
	return a.m.Update(ctx, func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, iqn)
		if err != nil {
			return err
		}
		g, err := group(&cfg.Targets[i])
		if err != nil {
			return err
		}
		tag := 0
		if g.Auth != nil && !tagUsedElsewhere(cfg, *g.Auth, cfg.Targets[i].ID) {
			tag = *g.Auth
		} else {
			tag = cfg.FreeAuthTag()
		}
		var mine []*mgmt.Auth
		for j := range cfg.Auths {
			if cfg.Auths[j].Tag == tag {
				mine = append(mine, &cfg.Auths[j])
			}
		}
		if err := fn(cfg, tag, mine); err != nil {
			return err
		}
		any, incoming := false, false
		for _, x := range cfg.Auths {
			if x.Tag == tag {
				any, incoming = true, incoming || x.User != ""
			}
		}
		switch {
		case !any:
			g.Auth, g.AuthMethod = nil, mgmt.AuthNone
		case !incoming:
			// An outgoing user alone (tgt allows it): kept in the
			// target's group, which authenticates nobody until an
			// incoming user comes.
			g.Auth, g.AuthMethod = &tag, mgmt.AuthNone
		default:
			g.Auth, g.AuthMethod = &tag, mgmt.AuthCHAP
		}
		return nil
	})
}

type userReq struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (a *api) addUser(r *http.Request, outgoing bool) (int, any, error) {
	var req userReq
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Username == "" || req.Password == "" {
		return 0, nil, rest.BadRequest("username", "username and password are required")
	}
	iqn := r.PathValue("iqn")
	err := a.users(r.Context(), iqn, func(cfg *mgmt.Config, tag int, mine []*mgmt.Auth) error {
		if outgoing {
			if len(mine) == 0 {
				cfg.Auths = append(cfg.Auths, mgmt.Auth{ID: mgmt.NewID(cfg, cfg.Auths), Tag: tag, PeerUser: req.Username, PeerSecret: req.Password})
				return nil
			}
			if mine[0].PeerUser != "" {
				return rest.Conflict("username", "the target has an outgoing user already (%s); tgt allows one", mine[0].PeerUser)
			}
			for _, x := range mine {
				x.PeerUser, x.PeerSecret = req.Username, req.Password
			}
			return nil
		}
		for _, x := range mine {
			if x.User == req.Username {
				return rest.Conflict("username", "incoming user %s exists", req.Username)
			}
		}
		if len(mine) == 1 && mine[0].OutgoingOnly() {
			// The first incoming user joins the outgoing one.
			mine[0].User, mine[0].Secret = req.Username, req.Password
			return nil
		}
		x := mgmt.Auth{ID: mgmt.NewID(cfg, cfg.Auths), Tag: tag, User: req.Username, Secret: req.Password}
		if len(mine) > 0 {
			x.PeerUser, x.PeerSecret = mine[0].PeerUser, mine[0].PeerSecret
		}
		cfg.Auths = append(cfg.Auths, x)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	dir := "incoming"
	if outgoing {
		dir = "outgoing"
	}
	return 0, created{location: targetURL(iqn) + "/" + dir + "user_list/" + url.PathEscape(req.Username)}, nil
}

func (a *api) setPassword(r *http.Request, outgoing bool) (int, any, error) {
	var req struct {
		Password string `json:"password"`
	}
	if err := decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Password == "" {
		return 0, nil, rest.BadRequest("password", "a password is required")
	}
	user := r.PathValue("user")
	err := a.users(r.Context(), r.PathValue("iqn"), func(_ *mgmt.Config, _ int, mine []*mgmt.Auth) error {
		found := false
		for _, x := range mine {
			switch {
			case outgoing && x.PeerUser == user:
				x.PeerSecret, found = req.Password, true
			case !outgoing && x.User == user:
				x.Secret, found = req.Password, true
			}
		}
		if !found {
			return rest.NotFound("user %s does not exist", user)
		}
		return nil
	})
	return http.StatusOK, nil, err
}

func (a *api) deleteUser(r *http.Request, outgoing bool) (int, any, error) {
	user := r.PathValue("user")
	err := a.users(r.Context(), r.PathValue("iqn"), func(cfg *mgmt.Config, tag int, mine []*mgmt.Auth) error {
		found := false
		for _, x := range mine {
			if outgoing && x.PeerUser == user {
				x.PeerUser, x.PeerSecret, found = "", "", true
			}
			if !outgoing && x.User == user {
				found = true
			}
		}
		if !found {
			return rest.NotFound("user %s does not exist", user)
		}
		if outgoing {
			// An outgoing-only credential has nothing left.
			cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag && x.User == "" && x.PeerUser == "" })
			return nil
		}
		if len(mine) == 1 && mine[0].PeerUser != "" {
			// The last incoming user goes; the outgoing user stays.
			mine[0].User, mine[0].Secret = "", ""
			return nil
		}
		cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag && x.User == user })
		return nil
	})
	return http.StatusOK, nil, err
}

// LUNs.

// lunConf is a LUN as seed 004 shows and takes it.
type lunConf struct {
	LUN        int    `json:"lun"`
	Path       string `json:"path"`
	DeviceType string `json:"device_type"`
	BSType     string `json:"bs_type"`
	DirectMap  bool   `json:"direct_map"`
	WriteCache bool   `json:"write_cache"`
	ReadOnly   bool   `json:"readonly"`
	Online     bool   `json:"online"`
	SCSIID     string `json:"scsi_id"`
	SCSISN     string `json:"scsi_sn"`
}

func lunPrefix(target int) string { return fmt.Sprintf("sl-%d-lun", target) }

func lunOut(te mgmt.TargetExtent, e mgmt.Extent) lunConf {
	path := e.Path
	if e.Type == mgmt.ExtentDisk {
		path = mgmt.DiskPath(e.Disk)
	}
	return lunConf{LUN: te.LunID, Path: path, DeviceType: "disk", BSType: "rdwr", WriteCache: e.WriteCache,
		ReadOnly: e.RO, Online: e.Online, SCSIID: e.NAA, SCSISN: e.Serial}
}

// lunIn checks a LUN's settings and sets e from them.
func lunIn(c lunConf, e *mgmt.Extent) error {
	switch {
	case c.LUN < 1 || c.LUN > 255:
		return rest.BadRequest("lun", "%d is not a LUN from 1 to 255", c.LUN)
	case c.DeviceType != "disk":
		return &rest.Error{Status: http.StatusNotImplemented, Field: "device_type", Msg: fmt.Sprintf("%q is not supported: this target emulates disks only", c.DeviceType)}
	case c.BSType != "rdwr":
		return &rest.Error{Status: http.StatusNotImplemented, Field: "bs_type", Msg: fmt.Sprintf("%q is not supported: the backing store is always file I/O (rdwr)", c.BSType)}
	case c.DirectMap:
		return &rest.Error{Status: http.StatusNotImplemented, Field: "direct_map", Msg: "direct-mapped (passthrough) LUNs are not supported"}
	case c.Path == "":
		return rest.BadRequest("path", "a path to a regular file or block device is required")
	}
	if strings.HasPrefix(c.Path, "/dev/") {
		e.Type, e.Disk, e.Path = mgmt.ExtentDisk, c.Path, ""
	} else {
		e.Type, e.Path, e.Disk = mgmt.ExtentFile, c.Path, ""
	}
	e.WriteCache, e.RO, e.Online, e.NAA, e.Serial = c.WriteCache, c.ReadOnly, c.Online, c.SCSIID, c.SCSISN
	return nil
}

// lunOf finds LUN n of the target at index i.
func lunOf(cfg *mgmt.Config, i int, n string) (*mgmt.TargetExtent, *mgmt.Extent, error) {
	lun, err := strconv.Atoi(n)
	if err != nil || lun < 1 || lun > 255 {
		return nil, nil, rest.NotFound("%q is not a LUN from 1 to 255", n)
	}
	for j := range cfg.TargetExtents {
		te := &cfg.TargetExtents[j]
		if te.Target != cfg.Targets[i].ID || te.LunID != lun || te.Initiator != "" || te.InitiatorGroup != nil {
			continue
		}
		for k := range cfg.Extents {
			if cfg.Extents[k].ID == te.Extent {
				return te, &cfg.Extents[k], nil
			}
		}
	}
	return nil, nil, rest.NotFound("LUN %d of %s does not exist", lun, cfg.Global.FullName(cfg.Targets[i].Name))
}

func (a *api) listLUNs(r *http.Request) (int, any, error) {
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, r.PathValue("iqn"))
	if err != nil {
		return 0, nil, err
	}
	out := []lunConf{}
	for _, te := range cfg.TargetExtents {
		if te.Target != cfg.Targets[i].ID || te.LunID == 0 {
			continue
		}
		for _, e := range cfg.Extents {
			if e.ID == te.Extent {
				out = append(out, lunOut(te, e))
			}
		}
	}
	slices.SortFunc(out, func(x, y lunConf) int { return x.LUN - y.LUN })
	return http.StatusOK, out, nil
}

func (a *api) getLUN(r *http.Request) (int, any, error) {
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, r.PathValue("iqn"))
	if err != nil {
		return 0, nil, err
	}
	te, e, err := lunOf(cfg, i, r.PathValue("lun"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, lunOut(*te, *e), nil
}

func (a *api) addLUN(r *http.Request) (int, any, error) {
	c := lunConf{DeviceType: "disk", BSType: "rdwr", WriteCache: true, Online: true}
	if err := decode(r, &c); err != nil {
		return 0, nil, err
	}
	iqn := r.PathValue("iqn")
	err := a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, iqn)
		if err != nil {
			return err
		}
		t := cfg.Targets[i]
		e := mgmt.NewExtent()
		if err := lunIn(c, &e); err != nil {
			return err
		}
		e.Name, e.ID = fmt.Sprintf("%s%d", lunPrefix(t.ID), c.LUN), mgmt.NewID(cfg, cfg.Extents)
		cfg.Extents = append(cfg.Extents, e)
		cfg.TargetExtents = append(cfg.TargetExtents, mgmt.TargetExtent{ID: mgmt.NewID(cfg, cfg.TargetExtents), Target: t.ID, Extent: e.ID, LunID: c.LUN})
		return nil
	})
	if err != nil {
		return 0, nil, renameLUNError(err)
	}
	return 0, created{location: targetURL(iqn) + "/lun_list/" + strconv.Itoa(c.LUN)}, nil
}

// renameLUNError words a refusal about a LUN's extent in this API's
// terms (the extent is this API's own detail).
func renameLUNError(err error) error {
	var me *mgmt.Error
	if errors.As(err, &me) && me.Object == "extent" {
		field := map[string]string{"path": "path", "disk": "path", "naa": "scsi_id", "serial": "scsi_sn", "name": "lun"}[me.Field]
		if me.Kind == mgmt.KindExists && me.Field == "name" {
			return rest.Conflict("lun", "the LUN exists")
		}
		status, _ := rest.StatusOf(err)
		return &rest.Error{Status: status, Field: field, Msg: me.Msg}
	}
	if errors.As(err, &me) && me.Object == "targetextent" && me.Field == "lunid" {
		return rest.Conflict("lun", "%s", me.Msg)
	}
	return err
}

func (a *api) putLUN(r *http.Request) (int, any, error) {
	body, err := rest.ReadObject(r)
	if err != nil {
		return 0, nil, err
	}
	err = a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, r.PathValue("iqn"))
		if err != nil {
			return err
		}
		te, e, err := lunOf(cfg, i, r.PathValue("lun"))
		if err != nil {
			return err
		}
		c := lunOut(*te, *e)
		if err := merge.Patch(&c, body, "lun"); err != nil {
			return err
		}
		return lunIn(c, e)
	})
	return http.StatusOK, nil, renameLUNError(err)
}

func (a *api) deleteLUN(r *http.Request) (int, any, error) {
	err := a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, r.PathValue("iqn"))
		if err != nil {
			return err
		}
		te, e, err := lunOf(cfg, i, r.PathValue("lun"))
		if err != nil {
			return err
		}
		teID, eID, own := te.ID, e.ID, strings.HasPrefix(e.Name, lunPrefix(cfg.Targets[i].ID))
		cfg.TargetExtents = slices.DeleteFunc(cfg.TargetExtents, func(x mgmt.TargetExtent) bool { return x.ID == teID })
		if own && !usedElsewhere(cfg, eID) {
			cfg.Extents = slices.DeleteFunc(cfg.Extents, func(x mgmt.Extent) bool { return x.ID == eID })
		}
		return nil
	})
	return http.StatusOK, nil, err
}
