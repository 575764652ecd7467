package mgmt

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/iscsikit/iscsikit/scsi"
)

// Asymmetric access states of a portal (Portal.ALUAState), in effect
// while Global.ALUA is on.
const (
	ALUAActiveOptimized    = "ACTIVE_OPTIMIZED"
	ALUAActiveNonOptimized = "ACTIVE_NON_OPTIMIZED"
	ALUAStandby            = "STANDBY"
	ALUAUnavailable        = "UNAVAILABLE"
	ALUATransitioning      = "TRANSITIONING"
)

// aluaStates maps Portal.ALUAState to the SCSI access state; "" is
// active/optimized.
var aluaStates = map[string]scsi.AccessState{
	"":                     scsi.AccessActiveOptimized,
	ALUAActiveOptimized:    scsi.AccessActiveOptimized,
	ALUAActiveNonOptimized: scsi.AccessActiveNonOptimized,
	ALUAStandby:            scsi.AccessStandby,
	ALUAUnavailable:        scsi.AccessUnavailable,
	ALUATransitioning:      scsi.AccessTransitioning,
}

// portalALUA checks a portal's ALUA state: a known one, and one other
// than active/optimized only while ALUA is on.
func (v *validator) portalALUA(p Portal, add func(kind Kind, field, format string, args ...any)) {
	st, ok := aluaStates[p.ALUAState]
	switch {
	case !ok:
		add(KindInvalid, "alua_state", "%q is not ACTIVE_OPTIMIZED, ACTIVE_NON_OPTIMIZED, STANDBY, UNAVAILABLE or TRANSITIONING", p.ALUAState)
	case st != scsi.AccessActiveOptimized && !v.cfg.Global.ALUA:
		add(KindInvalid, "alua_state", "%s needs ALUA on (global alua)", p.ALUAState)
	}
}

// remotePortal checks a portal another gateway serves: ALUA on, listen
// addresses (if any, for SendTargets) that name the other gateway's
// real address and port, and no discovery authentication here.
func (v *validator) remotePortal(p Portal, add func(kind Kind, field, format string, args ...any)) {
	if !v.cfg.Global.ALUA {
		add(KindInvalid, "remote", "a remote portal is a target port group of another gateway and needs ALUA on (global alua)")
	}
	for i, l := range p.Listen {
		field := fmt.Sprintf("listen[%d]", i)
		if ip, err := netip.ParseAddr(l.IP); err == nil && ip.IsUnspecified() {
			add(KindInvalid, field+".ip", "%s is a wildcard: a remote portal lists the addresses initiators reach the other gateway at", l.IP)
		}
		if l.Port == 0 {
			add(KindInvalid, field+".port", "a remote portal needs the port the other gateway listens on, not 0")
		}
	}
	if p.DiscoveryAuthMethod != AuthNone || p.DiscoveryAuthGroup != nil {
		add(KindInvalid, "discovery_authmethod", "a remote portal serves no discovery here: NONE, without discovery_authgroup")
	}
}

// aluaApplied is what the applier last gave the units: the port groups
// (nil while ALUA is off) and the units that have them.
type aluaApplied struct {
	groups []scsi.PortGroup
	units  map[*scsi.LogicalUnit]bool
}

// portGroups are cfg's target port groups: one per portal, numbered by
// its tag, holding the one relative target port iscsi numbers by the
// same tag (scsi.Nexus.RelativePortID), remote for a Remote portal; nil
// while ALUA is off.
func portGroups(cfg *Config) []scsi.PortGroup {
	if !cfg.Global.ALUA {
		return nil
	}
	var out []scsi.PortGroup
	for _, p := range cfg.Portals {
		out = append(out, scsi.PortGroup{ID: uint16(p.Tag), Ports: []uint16{uint16(p.Tag)}, State: aluaStates[p.ALUAState], Remote: p.Remote})
	}
	slices.SortFunc(out, func(a, b scsi.PortGroup) int { return int(a.ID) - int(b.ID) })
	return out
}

// applyALUA brings every open unit's target port groups to cfg. A unit
// that is new, or meets portals that came, went or became remote or
// local, or ALUA turned on or off, gets the groups whole; the others
// only see the groups whose configured state changed move (an implicit
// transition, with its unit attention), so a state an initiator set with SET TARGET PORT GROUPS
// stands until the portal's configured state changes.
func (a *applier) applyALUA(cfg *Config) {
	want := portGroups(cfg)
	prev := a.alua.groups
	sameLayout := len(prev) == len(want) && slices.EqualFunc(prev, want, func(x, y scsi.PortGroup) bool {
		return x.ID == y.ID && x.Remote == y.Remote && slices.Equal(x.Ports, y.Ports)
	})
	units := map[*scsi.LogicalUnit]bool{}
	for _, u := range a.units {
		units[u.lu] = true
		if !sameLayout || !a.alua.units[u.lu] {
			if err := u.lu.SetPortGroups(want); err != nil {
				a.log.Error("setting target port groups failed", "extent", u.ext.Name, "err", err)
			}
			continue
		}
		for i, g := range want {
			if prev[i].State == g.State {
				continue
			}
			if err := u.lu.SetAccessState(g.ID, g.State); err != nil {
				a.log.Error("setting an access state failed", "extent", u.ext.Name, "group", g.ID, "err", err)
			}
		}
	}
	a.alua = aluaApplied{groups: want, units: units}
}
