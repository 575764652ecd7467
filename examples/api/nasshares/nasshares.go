// Package nasshares serves a NAS box's iscsi_shares API (seed 002) on top
// of a mgmt.Manager. A share is one target with one LUN: the target, its
// size and the volume (pool) its storage is allocated from, its header and
// data digests, and its one-way and mutual CHAP. The service object is the
// iSCSI service: its port and iSNS settings.
//
//	GET    /index.php/iscsi_shares/api   every share
//	POST   /index.php/iscsi_shares/api   create a share (answers it with its new id)
//	PUT    /index.php/iscsi_shares/api   edit the share whose id the body names
//	DELETE /index.php/iscsi_shares/api   delete the share whose id the body names (answers it)
//	GET    /index.php/iscsi_service/api  the service object, in a list of one
//	PUT    /index.php/iscsi_service/api  change it
//
// The projection onto mgmt's model: a share's id is its target's id; its
// storage is a volume of the pool named by "volume" (a sparse file of
// "size", which takes bytes or "10GB"-style sizes); its target is reachable
// through every portal; its CHAP users are an auth group of its own; a
// digest that is enabled is required (CRC32C), one that is not is refused.
// A share's volume is destroyed with it. Passwords are taken and never
// returned. The service's port is the port of every portal; "enabled"
// false is refused (the service is the daemon itself); "isns" with
// "isns-address" (host or host:port) registers the targets with that iSNS
// server (mgmt's isns_servers).
//
// Errors answer {"error": "..."} with 400, 404, 409 or 501.
package nasshares

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// The resource paths.
const (
	SharesPath  = "/index.php/iscsi_shares/api"
	ServicePath = "/index.php/iscsi_service/api"
)

// Handler returns the seed 002 API served from m; log receives internal
// errors (nil discards them).
func Handler(m *mgmt.Manager, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &api{m: m, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+SharesPath, a.wrap(a.list))
	mux.HandleFunc("POST "+SharesPath, a.wrap(a.create))
	mux.HandleFunc("PUT "+SharesPath, a.wrap(a.edit))
	mux.HandleFunc("DELETE "+SharesPath, a.wrap(a.delete))
	mux.HandleFunc("GET "+ServicePath, a.wrap(a.getService))
	mux.HandleFunc("PUT "+ServicePath, a.wrap(a.putService))
	return mux
}

type api struct {
	m   *mgmt.Manager
	log *slog.Logger
}

func (a *api) wrap(h func(*http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status, body, err := h(r)
		if err != nil {
			var msg string
			status, msg = rest.StatusOf(rest.FromMerge(err))
			if status == http.StatusInternalServerError {
				a.log.Error("nas shares API", "err", err)
			}
			rest.WriteJSON(w, status, map[string]string{"error": msg})
			return
		}
		rest.WriteJSON(w, status, body)
	}
}

// chap is one direction of a share's CHAP.
type chap struct {
	Enabled  bool   `json:"enabled"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
}

// share is seed 002's iSCSI target (share) object.
type share struct {
	ID           int       `json:"id"`
	Target       string    `json:"target"`
	Size         sizeValue `json:"size"`
	Volume       string    `json:"volume"`
	HeaderDigest bool      `json:"header-digest"`
	DataDigest   bool      `json:"data-digest"`
	OneWayCHAP   chap      `json:"one-way-chap"`
	MutualCHAP   chap      `json:"mutual-chap"`
}

// sizeValue is a size given as a number of bytes or a string such as
// "10GB"; it is shown as the string.
type sizeValue string

// UnmarshalJSON takes a number or a string.
func (s *sizeValue) UnmarshalJSON(b []byte) error {
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		*s = sizeValue(n.String())
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return &merge.Error{Field: "size", Msg: "want a number of bytes or a size such as \"10GB\""}
	}
	*s = sizeValue(str)
	return nil
}

func (s sizeValue) bytes() (int64, error) {
	n, err := rest.ParseSize(string(s))
	if err != nil {
		return 0, rest.BadRequest("size", "%v", err)
	}
	return n, nil
}

// shareOf shows target t as a share: its LUN 0 gives size and volume,
// its group the CHAP users (without passwords).
func shareOf(cfg *mgmt.Config, t mgmt.Target) share {
	s := share{ID: t.ID, Target: t.Name, HeaderDigest: t.HeaderDigest == mgmt.DigestCRC32C, DataDigest: t.DataDigest == mgmt.DigestCRC32C}
	if e, ok := lun0(cfg, t.ID); ok {
		s.Size, s.Volume = sizeValue(rest.FormatSize(e.Filesize)), e.Pool
	}
	if len(t.Groups) == 1 && t.Groups[0].Auth != nil {
		for _, x := range cfg.Auths {
			if x.Tag == *t.Groups[0].Auth {
				s.OneWayCHAP = chap{Enabled: true, Username: x.User}
				if x.PeerUser != "" {
					s.MutualCHAP = chap{Enabled: true, Username: x.PeerUser}
				}
				break
			}
		}
	}
	return s
}

// lun0 returns the extent a target serves as LUN 0 to every initiator.
func lun0(cfg *mgmt.Config, target int) (mgmt.Extent, bool) {
	for _, te := range cfg.TargetExtents {
		if te.Target == target && te.LunID == 0 && te.Initiator == "" && te.InitiatorGroup == nil {
			for _, e := range cfg.Extents {
				if e.ID == te.Extent {
					return e, true
				}
			}
		}
	}
	return mgmt.Extent{}, false
}

func (a *api) list(*http.Request) (int, any, error) {
	cfg := a.m.Config(false)
	out := []share{}
	for _, t := range cfg.Targets {
		out = append(out, shareOf(cfg, t))
	}
	return http.StatusOK, out, nil
}

// digest maps a share's digest flag to a target's setting.
func digest(on bool) string {
	if on {
		return mgmt.DigestCRC32C
	}
	return mgmt.DigestNone
}

// applyShare sets target t (at index i of cfg) from s: name, digests and
// CHAP. The auth group is the target's own, made when first needed.
func applyShare(cfg *mgmt.Config, i int, s share) error {
	t := &cfg.Targets[i]
	if s.MutualCHAP.Enabled && !s.OneWayCHAP.Enabled {
		return rest.BadRequest("mutual-chap", "mutual CHAP needs one-way CHAP enabled")
	}
	t.Name, t.HeaderDigest, t.DataDigest = s.Target, digest(s.HeaderDigest), digest(s.DataDigest)
	if len(t.Groups) != 1 || t.Groups[0].Portal != mgmt.EveryPortal {
		return &rest.Error{Status: http.StatusConflict, Msg: fmt.Sprintf("target %s has portal groups of its own; edit it through a portal-aware API", t.Name)}
	}
	g := &t.Groups[0]
	var cur mgmt.Auth
	tag := 0
	if g.Auth != nil {
		tag = *g.Auth
		for _, x := range cfg.Auths {
			if x.Tag == tag {
				cur = x
				break
			}
		}
		cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag })
	}
	if !s.OneWayCHAP.Enabled {
		g.Auth, g.AuthMethod = nil, mgmt.AuthNone
		return nil
	}
	// A password left out of an edit keeps the one set before.
	next := mgmt.Auth{User: s.OneWayCHAP.Username, Secret: orKeep(s.OneWayCHAP.Password, cur.Secret, s.OneWayCHAP.Username == cur.User)}
	g.AuthMethod = mgmt.AuthCHAP
	if s.MutualCHAP.Enabled {
		next.PeerUser = s.MutualCHAP.Username
		next.PeerSecret = orKeep(s.MutualCHAP.Password, cur.PeerSecret, s.MutualCHAP.Username == cur.PeerUser)
		g.AuthMethod = mgmt.AuthMutualCHAP
	}
	if next.User == "" || next.Secret == "" {
		return rest.BadRequest("one-way-chap", "an enabled CHAP needs a username and a password")
	}
	if s.MutualCHAP.Enabled && (next.PeerUser == "" || next.PeerSecret == "") {
		return rest.BadRequest("mutual-chap", "an enabled mutual CHAP needs a username and a password")
	}
	if tag == 0 {
		tag = cfg.FreeAuthTag()
	}
	next.Tag, next.ID = tag, mgmt.NewID(cfg, cfg.Auths)
	cfg.Auths = append(cfg.Auths, next)
	g.Auth = &tag
	return nil
}

func orKeep(given, old string, sameUser bool) string {
	if given == "" && sameUser {
		return old
	}
	return given
}

func (a *api) create(r *http.Request) (int, any, error) {
	var s share
	body, err := readOne(r, "share")
	if err != nil {
		return 0, nil, err
	}
	if err := rest.DecodeJSON(body, &s); err != nil {
		return 0, nil, err
	}
	if s.ID != 0 {
		return 0, nil, rest.BadRequest("id", "assigned by the NAS; leave it out")
	}
	if s.Volume == "" {
		return 0, nil, rest.BadRequest("volume", "the volume to allocate the share from is required")
	}
	size, err := s.Size.bytes()
	if err != nil {
		return 0, nil, err
	}
	ctx := r.Context()
	if _, err := a.m.CreateVolume(ctx, s.Volume, s.Target, size); err != nil {
		return 0, nil, shareField(err)
	}
	id, err := a.createTarget(ctx, s)
	if err != nil {
		if derr := a.m.DestroyVolume(ctx, s.Volume, s.Target); derr != nil {
			a.log.Error("removing the volume of a share that could not be created", "volume", s.Target, "err", derr)
		}
		return 0, nil, err
	}
	cfg := a.m.Config(false)
	for _, t := range cfg.Targets {
		if t.ID == id {
			return http.StatusCreated, shareOf(cfg, t), nil
		}
	}
	return 0, nil, errors.New("the new share's target vanished")
}

// createTarget adds the share's target and LUN 0 in one change.
func (a *api) createTarget(ctx context.Context, s share) (int, error) {
	id := 0
	err := a.m.Update(ctx, func(cfg *mgmt.Config) error {
		var vol mgmt.Extent
		for _, e := range cfg.Extents {
			if e.Pool == s.Volume && e.Name == s.Target {
				vol = e
			}
		}
		t := mgmt.NewTarget()
		t.ID = mgmt.NewID(cfg, cfg.Targets)
		t.Groups = []mgmt.TargetGroup{{Portal: mgmt.EveryPortal, AuthMethod: mgmt.AuthNone}}
		cfg.Targets = append(cfg.Targets, t)
		if err := applyShare(cfg, len(cfg.Targets)-1, s); err != nil {
			return err
		}
		te := mgmt.TargetExtent{ID: mgmt.NewID(cfg, cfg.TargetExtents), Target: t.ID, Extent: vol.ID, LunID: 0}
		cfg.TargetExtents = append(cfg.TargetExtents, te)
		id = t.ID
		return nil
	})
	return id, shareField(err)
}

// shareField names a model refusal by the share's field.
func shareField(err error) error {
	var me *mgmt.Error
	if err == nil || !errors.As(err, &me) {
		return err
	}
	field := map[string]string{"name": "target", "filesize": "size", "size": "size", "secret": "one-way-chap.password",
		"user": "one-way-chap.username", "peersecret": "mutual-chap.password", "peeruser": "mutual-chap.username"}[me.Field]
	if me.Object == "pool" {
		field = "volume"
	}
	if field == "" {
		return err
	}
	status, _ := rest.StatusOf(err)
	return &rest.Error{Status: status, Field: field, Msg: me.Msg}
}

// idOf reads the id a PUT or DELETE body names.
func idOf(body []byte) (int, error) {
	var probe struct {
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(body, &probe); err != nil || probe.ID == nil {
		return 0, rest.BadRequest("id", "the share's id is required")
	}
	id, err := strconv.Atoi(string(probe.ID))
	if err != nil || id <= 0 {
		return 0, rest.BadRequest("id", "want a share id, got %s", probe.ID)
	}
	return id, nil
}

func findTarget(cfg *mgmt.Config, id int) (int, error) {
	for i, t := range cfg.Targets {
		if t.ID == id {
			return i, nil
		}
	}
	return -1, rest.NotFound("share %d does not exist", id)
}

func (a *api) edit(r *http.Request) (int, any, error) {
	body, err := readOne(r, "share")
	if err != nil {
		return 0, nil, err
	}
	id, err := idOf(body)
	if err != nil {
		return 0, nil, err
	}
	err = a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, id)
		if err != nil {
			return err
		}
		cur := shareOf(cfg, cfg.Targets[i])
		next := cur
		if err := merge.Patch(&next, body, "id", "volume"); err != nil {
			return err
		}
		if next.Size != cur.Size {
			size, err := next.Size.bytes()
			if err != nil {
				return err
			}
			old, ok := lun0(cfg, id)
			if !ok {
				return rest.Conflict("size", "the share has no storage to resize")
			}
			if size < old.Filesize {
				return rest.BadRequest("size", "a share can grow, not shrink (%s now)", rest.FormatSize(old.Filesize))
			}
			for j := range cfg.Extents {
				if cfg.Extents[j].ID == old.ID {
					cfg.Extents[j].Filesize = size
				}
			}
		}
		return applyShare(cfg, i, next)
	})
	if err != nil {
		return 0, nil, shareField(err)
	}
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, id)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, shareOf(cfg, cfg.Targets[i]), nil
}

func (a *api) delete(r *http.Request) (int, any, error) {
	body, err := readOne(r, "share")
	if err != nil {
		return 0, nil, err
	}
	id, err := idOf(body)
	if err != nil {
		return 0, nil, err
	}
	cfg := a.m.Config(false)
	i, err := findTarget(cfg, id)
	if err != nil {
		return 0, nil, err
	}
	gone := shareOf(cfg, cfg.Targets[i])
	vol, hasVol := lun0(cfg, id)
	err = a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		i, err := findTarget(cfg, id)
		if err != nil {
			return err
		}
		t := cfg.Targets[i]
		cfg.TargetExtents = slices.DeleteFunc(cfg.TargetExtents, func(te mgmt.TargetExtent) bool { return te.Target == id })
		if len(t.Groups) == 1 && t.Groups[0].Auth != nil {
			tag := *t.Groups[0].Auth
			cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag })
		}
		cfg.Targets = slices.Delete(cfg.Targets, i, i+1)
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	// The share's storage goes with it, unless something else maps it.
	if hasVol && vol.Pool != "" {
		if err := a.m.DestroyVolume(r.Context(), vol.Pool, vol.Name); err != nil && !errors.Is(err, mgmt.ErrInUse) {
			return 0, nil, err
		}
	}
	return http.StatusOK, gone, nil
}

// service is seed 002's iSCSI service object.
type service struct {
	ID          int    `json:"id"`
	Enabled     bool   `json:"enabled"`
	Port        string `json:"port"`
	ISNS        bool   `json:"isns"`
	ISNSAddress string `json:"isns-address"`
}

func serviceOf(cfg *mgmt.Config) service {
	s := service{ID: 1, Enabled: true, ISNS: len(cfg.Global.ISNSServers) > 0}
	if len(cfg.Portals) > 0 && len(cfg.Portals[0].Listen) > 0 {
		s.Port = strconv.Itoa(cfg.Portals[0].Listen[0].Port)
	}
	if s.ISNS {
		s.ISNSAddress = cfg.Global.ISNSServers[0]
	}
	return s
}

func (a *api) getService(*http.Request) (int, any, error) {
	return http.StatusOK, []service{serviceOf(a.m.Config(false))}, nil
}

func (a *api) putService(r *http.Request) (int, any, error) {
	body, err := readOne(r, "service")
	if err != nil {
		return 0, nil, err
	}
	err = a.m.Update(r.Context(), func(cfg *mgmt.Config) error {
		cur := serviceOf(cfg)
		next := cur
		if err := merge.Patch(&next, body, "id"); err != nil {
			return err
		}
		if !next.Enabled {
			return &rest.Error{Status: http.StatusNotImplemented, Field: "enabled", Msg: "the iSCSI service is the daemon itself; stop iscsid to turn it off"}
		}
		if next.Port != cur.Port {
			port, err := strconv.Atoi(next.Port)
			if next.Port == "" {
				port, err = 3260, nil
			}
			if err != nil || port < 1 || port > 65535 {
				return rest.BadRequest("port", "%q is not a TCP port", next.Port)
			}
			for i := range cfg.Portals {
				for j := range cfg.Portals[i].Listen {
					cfg.Portals[i].Listen[j].Port = port
				}
			}
		}
		cfg.Global.ISNSServers = []string{}
		if next.ISNS {
			if next.ISNSAddress == "" {
				return rest.BadRequest("isns-address", "iSNS needs the server's address")
			}
			cfg.Global.ISNSServers = []string{next.ISNSAddress}
		}
		return nil
	})
	if err != nil {
		var me *mgmt.Error
		if errors.As(err, &me) && strings.HasPrefix(me.Field, "isns_servers") {
			status, _ := rest.StatusOf(err)
			return 0, nil, &rest.Error{Status: status, Field: "isns-address", Msg: me.Msg}
		}
		return 0, nil, err
	}
	return http.StatusOK, []service{serviceOf(a.m.Config(false))}, nil
}

// readOne reads a body that must be one JSON object. The seed writes its
// objects inside a list ("[ { ... } ]", as GET answers them); a list sent
// back is refused saying so.
func readOne(r *http.Request, what string) ([]byte, error) {
	body, err := rest.ReadBody(r)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		return nil, rest.BadRequest("", "the body is a list; send one %s object, not a list of them", what)
	}
	if err := rest.DecodeJSON(body, new(map[string]json.RawMessage)); err != nil {
		return nil, err
	}
	return body, nil
}
