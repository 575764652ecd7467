package scsi

import (
	"strconv"
	"strings"
)

// UnitEventKind says what happened to a logical unit.
type UnitEventKind uint8

// Unit event kinds.
const (
	// UnitAttentionRaised: a unit attention condition was established
	// for an I_T nexus (Nexus, Sense).
	UnitAttentionRaised UnitEventKind = iota + 1
	// UnitReservationChanged: a RESERVE, RELEASE or PERSISTENT RESERVE
	// OUT command succeeded (Nexus, Action).
	UnitReservationChanged
	// UnitOffline: the unit stopped serving media access (Reason): it
	// was closed, or its observer was set while it is configured
	// offline.
	UnitOffline
)

// String names the kind.
func (k UnitEventKind) String() string {
	switch k {
	case UnitAttentionRaised:
		return "unit attention"
	case UnitReservationChanged:
		return "reservation changed"
	case UnitOffline:
		return "unit offline"
	}
	return "unknown"
}

// UnitEvent is something that happened to a logical unit.
type UnitEvent struct {
	Kind UnitEventKind
	// Unit is the logical unit.
	Unit *LogicalUnit
	// Nexus is the I_T nexus concerned (the target port fields hold what
	// the unit knows: for a unit attention, its target name and relative
	// port). Empty for UnitOffline.
	Nexus Nexus
	// Sense is the unit attention (UnitAttentionRaised).
	Sense Sense
	// Action names the reservation command (UnitReservationChanged),
	// for example "PERSISTENT RESERVE OUT REGISTER".
	Action string
	// Reason says why the unit went offline (UnitOffline).
	Reason string
}

// UnitObserver receives a unit's events. It is called synchronously,
// sometimes with the unit's lock held (a unit attention is raised under
// it): it must return quickly and must not call the unit. A transport
// that forwards events to an application queues them (iscsi's
// Server.UnitObserver does).
type UnitObserver func(UnitEvent)

// SetObserver makes o receive the unit's events from now on; nil stops
// them. A unit configured offline reports UnitOffline at once.
func (lu *LogicalUnit) SetObserver(o UnitObserver) {
	if o == nil {
		lu.telemetry.observer.Store(nil)
		return
	}
	lu.telemetry.observer.Store(&o)
	if lu.cfg.Offline {
		o(UnitEvent{Kind: UnitOffline, Unit: lu, Reason: "configured offline"})
	}
}

// notify hands e to the observer, if any.
func (u *unitTelemetry) notify(e UnitEvent) {
	if o := u.observer.Load(); o != nil {
		(*o)(e)
	}
}

// unitAttention reports that ua was established for the nexus key.
// Called with lu.mu held.
func (lu *LogicalUnit) unitAttention(key string, ua *Sense) {
	if lu.telemetry.observer.Load() == nil {
		return
	}
	lu.telemetry.notify(UnitEvent{Kind: UnitAttentionRaised, Unit: lu, Nexus: nexusOfKey(key), Sense: *ua})
}

// nexusOfKey turns a nexus key back into the nexus it names (the target
// port name is not part of the key and stays empty).
func nexusOfKey(key string) Nexus {
	port, rest, _ := strings.Cut(key, "\x00")
	target, rel, _ := strings.Cut(rest, "\x00")
	id, _ := strconv.Atoi(rel)
	return Nexus{InitiatorPort: port, TargetName: target, RelativePortID: uint16(id)}
}

// offline reports that the unit went offline.
func (lu *LogicalUnit) offline(reason string) {
	lu.telemetry.notify(UnitEvent{Kind: UnitOffline, Unit: lu, Reason: reason})
}
