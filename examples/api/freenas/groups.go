package freenas

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Target groups (FreeNAS 9.3's targetgroup): one portal group, initiator
// group and auth setting of a target, which may have several.

// groupIDBase spaces target group ids: the group of target t on portal
// p has id t*groupIDBase + p (a target has one group per portal, and
// portal ids are never reused), so an id names its group whatever
// happens to the target's other groups. A group moved to another portal
// takes the id of its new portal.
const groupIDBase = 1000000

// flexInt is an id sent as a number or as a string of digits: the
// Cinder driver sends its portal and initiator ids from string options.
type flexInt int

// UnmarshalJSON reads 1 or "1".
func (n *flexInt) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			// A type error, so that the decoder names the field.
			return &json.UnmarshalTypeError{Value: "string " + strconv.Quote(s), Type: reflect.TypeFor[int]()}
		}
		*n = flexInt(v)
		return nil
	}
	var v int
	if err := json.Unmarshal(b, &v); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[int]()}
	}
	*n = flexInt(v)
	return nil
}

type targetGroupView struct {
	ID             int      `json:"id"`
	Target         int      `json:"iscsi_target"`
	PortalGroup    flexInt  `json:"iscsi_target_portalgroup"`
	InitiatorGroup *flexInt `json:"iscsi_target_initiatorgroup"`
	AuthType       string   `json:"iscsi_target_authtype"`
	AuthGroup      *flexInt `json:"iscsi_target_authgroup"`
	InitialDigest  string   `json:"iscsi_target_initialdigest"`
}

var targetGroupFields = map[string]string{"groups[0].portal": "iscsi_target_portalgroup", "groups[0].initiator": "iscsi_target_initiatorgroup",
	"groups[0].auth": "iscsi_target_authgroup", "groups[0].authmethod": "iscsi_target_authtype", "groups": "iscsi_target_portalgroup"}

func intPtr(p *flexInt) *int {
	if p == nil {
		return nil
	}
	v := int(*p)
	return &v
}

func flexPtr(p *int) *flexInt {
	if p == nil {
		return nil
	}
	v := flexInt(*p)
	return &v
}

func targetGroupOut(t mgmt.Target, i int) targetGroupView {
	g := t.Groups[i]
	return targetGroupView{ID: t.ID*groupIDBase + g.Portal, Target: t.ID, PortalGroup: flexInt(g.Portal), InitiatorGroup: flexPtr(g.Initiator),
		AuthType: authMethodOut(g.AuthMethod), AuthGroup: flexPtr(g.Auth), InitialDigest: "Auto"}
}

// targetGroupIn turns a view into the model's group.
func targetGroupIn(v targetGroupView) (mgmt.TargetGroup, error) {
	if v.InitialDigest != "Auto" {
		return mgmt.TargetGroup{}, rest.BadRequest("iscsi_target_initialdigest", "%s", fixedTarget["iscsi_target_initialdigest"])
	}
	method, err := authMethodIn("iscsi_target_authtype", v.AuthType, intPtr(v.AuthGroup))
	if err != nil {
		return mgmt.TargetGroup{}, err
	}
	return mgmt.TargetGroup{Portal: int(v.PortalGroup), Initiator: intPtr(v.InitiatorGroup), Auth: intPtr(v.AuthGroup), AuthMethod: method}, nil
}

func allTargetGroups(cfg *mgmt.Config) []any {
	out := []any{}
	for _, t := range cfg.Targets {
		for i := range t.Groups {
			out = append(out, targetGroupOut(t, i))
		}
	}
	return out
}

// splitGroupID reads a target group id as its target and portal.
func splitGroupID(id int) (target, portal int) { return id / groupIDBase, id % groupIDBase }

// groupIndex is the place in t.Groups of the group on portal, or -1.
func groupIndex(t *mgmt.Target, portal int) int {
	for i, g := range t.Groups {
		if g.Portal == portal {
			return i
		}
	}
	return -1
}

// checkGroupPortal refuses a portal id past what group ids can hold.
func checkGroupPortal(g mgmt.TargetGroup) error {
	if g.Portal < 0 || g.Portal >= groupIDBase {
		return rest.BadRequest("iscsi_target_portalgroup", "portal %d is beyond the %d this API numbers target groups by", g.Portal, groupIDBase-1)
	}
	return nil
}

// groupField names a refusal of the model's group i by its targetgroup
// field, whatever i is.
func groupField(err error) error {
	var me *mgmt.Error
	if f := fieldOf(err); strings.HasPrefix(f, "groups[") && asMgmt(err, &me) {
		if _, rest, ok := strings.Cut(f, "]."); ok {
			if name, ok := targetGroupFields["groups[0]."+rest]; ok {
				e := *me
				e.Field = name
				return &e
			}
		}
	}
	return err
}

func targetGroupResource(a *api) resource {
	return resource{
		name:   "targetgroup",
		fields: targetGroupFields,
		list:   func() ([]any, error) { return allTargetGroups(a.m.Config(false)), nil },
		get: func(id int) (any, error) {
			tid, p := splitGroupID(id)
			for _, t := range a.m.Config(false).Targets {
				if i := groupIndex(&t, p); t.ID == tid && i >= 0 {
					return targetGroupOut(t, i), nil
				}
			}
			return nil, notFound("target group", id)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			v := targetGroupView{AuthType: "None", InitialDigest: "Auto"}
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			if v.Target == 0 {
				return nil, rest.BadRequest("iscsi_target", "the target's id is required")
			}
			g, err := targetGroupIn(v)
			if err == nil {
				err = checkGroupPortal(g)
			}
			if err != nil {
				return nil, err
			}
			var index int
			t, err := a.m.UpdateTarget(ctx, v.Target, func(t *mgmt.Target) error {
				index = len(t.Groups)
				t.Groups = append(t.Groups, g)
				return nil
			})
			if err != nil {
				if me := (*mgmt.Error)(nil); asMgmt(err, &me) && me.Kind == mgmt.KindNotFound && me.Field == "" {
					return nil, rest.BadRequest("iscsi_target", "target %d does not exist", v.Target)
				}
				return nil, groupField(err)
			}
			return targetGroupOut(t, index), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			tid, p := splitGroupID(id)
			var i int
			t, err := a.m.UpdateTarget(ctx, tid, func(t *mgmt.Target) error {
				if i = groupIndex(t, p); i < 0 {
					return notFound("target group", id)
				}
				v := targetGroupOut(*t, i)
				if err := merge.Patch(&v, body, "id", "iscsi_target"); err != nil {
					return err
				}
				g, err := targetGroupIn(v)
				if err == nil {
					err = checkGroupPortal(g)
				}
				if err != nil {
					return err
				}
				t.Groups[i] = g
				return nil
			})
			if err != nil {
				return nil, groupField(err)
			}
			return targetGroupOut(t, i), nil
		},
		delete: func(ctx context.Context, id int) error {
			tid, p := splitGroupID(id)
			_, err := a.m.UpdateTarget(ctx, tid, func(t *mgmt.Target) error {
				i := groupIndex(t, p)
				if i < 0 {
					return notFound("target group", id)
				}
				t.Groups = append(t.Groups[:i], t.Groups[i+1:]...)
				return nil
			})
			return err
		},
	}
}

// Portals (FreeNAS 9.3's portal): a portal group and its addresses.

type portalView struct {
	ID                  int      `json:"id"`
	Tag                 int      `json:"iscsi_target_portal_tag"`
	Comment             string   `json:"iscsi_target_portal_comment"`
	DiscoveryAuthMethod string   `json:"iscsi_target_portal_discoveryauthmethod"`
	DiscoveryAuthGroup  *int     `json:"iscsi_target_portal_discoveryauthgroup"`
	IPs                 []string `json:"iscsi_target_portal_ips"`
}

var portalFields = map[string]string{"tag": "iscsi_target_portal_tag", "comment": "iscsi_target_portal_comment",
	"discovery_authmethod": "iscsi_target_portal_discoveryauthmethod", "discovery_authgroup": "iscsi_target_portal_discoveryauthgroup",
	"listen": "iscsi_target_portal_ips"}

// defaultISCSIPort is the port of an address given without one.
const defaultISCSIPort = 3260

func portalOut(p mgmt.Portal) portalView {
	v := portalView{ID: p.ID, Tag: p.Tag, Comment: p.Comment, DiscoveryAuthMethod: authMethodOut(p.DiscoveryAuthMethod),
		DiscoveryAuthGroup: p.DiscoveryAuthGroup, IPs: []string{}}
	for _, l := range p.Listen {
		v.IPs = append(v.IPs, net.JoinHostPort(l.IP, strconv.Itoa(l.Port)))
	}
	return v
}

// portalIn sets p from v; "ip" and "ip:port" ("[v6]:port") are accepted.
func portalIn(v portalView, p *mgmt.Portal) error {
	method, err := authMethodIn("iscsi_target_portal_discoveryauthmethod", v.DiscoveryAuthMethod, v.DiscoveryAuthGroup)
	if err != nil {
		return err
	}
	listen := []mgmt.Listen{}
	for _, s := range v.IPs {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			addr, aerr := netip.ParseAddr(strings.Trim(s, "[]"))
			if aerr != nil {
				return rest.BadRequest("iscsi_target_portal_ips", "%q is not an address or address:port", s)
			}
			ap = netip.AddrPortFrom(addr, defaultISCSIPort)
		}
		listen = append(listen, mgmt.Listen{IP: ap.Addr().String(), Port: int(ap.Port())})
	}
	p.Tag, p.Comment, p.DiscoveryAuthMethod, p.DiscoveryAuthGroup, p.Listen = v.Tag, v.Comment, method, v.DiscoveryAuthGroup, listen
	return nil
}

func portalResource(a *api) resource {
	return resource{
		name:   "portal",
		fields: portalFields,
		list:   func() ([]any, error) { return views(a.m.Config(false).Portals, portalOut), nil },
		get: func(id int) (any, error) {
			return findView(a.m.Config(false).Portals, id, "portal", func(p mgmt.Portal) int { return p.ID }, portalOut)
		},
		create: func(ctx context.Context, body []byte) (any, error) {
			v := portalView{DiscoveryAuthMethod: "None"}
			if err := decodeNew(body, &v); err != nil {
				return nil, err
			}
			var p mgmt.Portal
			if err := portalIn(v, &p); err != nil {
				return nil, err
			}
			p, err := a.m.CreatePortal(ctx, p)
			if err != nil {
				return nil, err
			}
			return portalOut(p), nil
		},
		update: func(ctx context.Context, id int, body []byte) (any, error) {
			p, err := a.m.UpdatePortal(ctx, id, func(p *mgmt.Portal) error {
				v := portalOut(*p)
				if err := merge.Patch(&v, body, "id"); err != nil {
					return err
				}
				return portalIn(v, p)
			})
			if err != nil {
				return nil, err
			}
			return portalOut(p), nil
		},
		delete: func(ctx context.Context, id int) error { return a.m.DeletePortal(ctx, id, false) },
	}
}
