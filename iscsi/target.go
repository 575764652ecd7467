package iscsi

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// Target is an iSCSI target: a name, an optional alias and the SCSI target
// device whose logical units it exports.
type Target struct {
	// Name is the iSCSI name (iqn., eui. or naa. form).
	Name string
	// Alias is the optional TargetAlias announced at login.
	Alias string
	// Device holds the target's logical units.
	Device *scsi.Target
	// Allow decides whether an initiator may discover and log in to the
	// target through a portal group; nil admits everyone. Access control
	// policies (initiator groups, networks) plug in here. A login it
	// refuses fails with "authorization failure" (0x0202), and SendTargets
	// does not list the target to that initiator.
	Allow func(info LoginInfo) bool
	// PortalGroups lists the target portal group tags through which the
	// target can be reached; empty means every portal of the server.
	PortalGroups []uint16
	// DeviceFor, when set, picks the LUN view a session of initiatorName
	// uses instead of Device (LUN masking: each initiator sees only the
	// units mapped to it, under its own LUN numbers). A nil result means
	// Device.
	DeviceFor func(initiatorName string) *scsi.Target
	// HeaderDigest and DataDigest, when not DigestOptional, replace the
	// server's digest policy (Options.Negotiation) for logins to this
	// target: DigestRequired insists on CRC32C, DigestRefused on None.
	HeaderDigest, DataDigest negotiate.DigestPolicy
	// QueueDepth, when positive, replaces Options.QueueDepth for sessions
	// of this target: the commands each may have outstanding (its CmdSN
	// window) and so the data buffers it may hold.
	QueueDepth int
	// MaxConnections, when positive, replaces
	// Options.Negotiation.MaxConnections for sessions of this target: the
	// most connections one session may have (negotiated, minimum rule).
	MaxConnections int
}

// queueDepth returns the CmdSN window of this target's sessions.
func (t *Target) queueDepth(serverDefault int) int {
	if t != nil && t.QueueDepth > 0 {
		return t.QueueDepth
	}
	return serverDefault
}

// negotiation returns the operational-key configuration for logins to t.
func (t *Target) negotiation(base negotiate.Config) negotiate.Config {
	if t.HeaderDigest != negotiate.DigestOptional {
		base.HeaderDigest = t.HeaderDigest
	}
	if t.DataDigest != negotiate.DigestOptional {
		base.DataDigest = t.DataDigest
	}
	if t.MaxConnections > 0 {
		base.MaxConnections = uint32(min(t.MaxConnections, 65535))
	}
	return base
}

// deviceFor returns the SCSI target device a session of initiator uses.
func (t *Target) deviceFor(initiator string) *scsi.Target {
	if t.DeviceFor != nil {
		if d := t.DeviceFor(initiator); d != nil {
			return d
		}
	}
	return t.Device
}

// allows reports whether the login described by info may reach t.
func (t *Target) allows(info LoginInfo) bool {
	return t.Allow == nil || t.Allow(info)
}

// servedBy reports whether the target is reachable through portal group tag.
func (t *Target) servedBy(tag uint16) bool {
	return len(t.PortalGroups) == 0 || slices.Contains(t.PortalGroups, tag)
}

// ValidateName checks an iSCSI name against RFC 7143 §4.2.7: the iqn., eui.
// and naa. formats, at most 223 bytes, and the characters allowed after
// stringprep (lower-case letters, digits, '-', '.', ':').
func ValidateName(name string) error {
	if name == "" {
		return nameError("empty")
	}
	if len(name) > 223 {
		return nameError("%q is longer than 223 bytes", name)
	}
	switch {
	case strings.HasPrefix(name, "iqn."):
		// iqn.yyyy-mm.reversed.domain[:identifier]
		rest := name[4:]
		if len(rest) < 8 || rest[4] != '-' || !digits(rest[:4]) || !digits(rest[5:7]) {
			return nameError("%q: iqn names start with iqn.yyyy-mm and a dot", name)
		}
		if len(rest) > 7 && rest[7] != '.' {
			return nameError("%q: the date must be followed by '.' and a naming authority", name)
		}
		for _, r := range rest {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':') {
				return nameError("%q: character %q is not allowed (lower-case letters, digits, '-', '.', ':')", name, r)
			}
		}
	case strings.HasPrefix(name, "eui."):
		if len(name) != 20 || !hexDigits(name[4:]) {
			return nameError("%q: eui names are eui. followed by 16 hex digits", name)
		}
	case strings.HasPrefix(name, "naa."):
		if n := len(name) - 4; (n != 16 && n != 32) || !hexDigits(name[4:]) {
			return nameError("%q: naa names are naa. followed by 16 or 32 hex digits", name)
		}
	default:
		return nameError("%q must start with iqn, eui or naa and a dot", name)
	}
	return nil
}

// ErrInvalidName is wrapped by the errors of ValidateName (and so of
// AddTarget given a bad name), for errors.Is.
var ErrInvalidName = errors.New("iscsi: invalid iSCSI name")

func nameError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidName}, args...)...)
}

func digits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func hexDigits(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return s != ""
}
