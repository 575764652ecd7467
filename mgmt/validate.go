package mgmt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/iscsikit/iscsikit/chap"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// validator collects every problem of a configuration.
type validator struct {
	cfg         *Config
	allowedDirs []string
	open        openers
	errs        []error
}

func (v *validator) add(kind Kind, object string, id int, name, field, format string, args ...any) {
	v.errs = append(v.errs, &Error{Kind: kind, Object: object, ID: id, Name: name, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks a whole configuration: every field of every object, the
// references between them and the uniqueness rules. It returns nil or the
// joined *Error values, each naming its object and field. Extent paths
// must lie under one of allowedDirs unless allowedDirs is empty. Extent
// types are those of DefaultOpeners; a Manager validates with its own
// Options.Openers.
func Validate(cfg *Config, allowedDirs []string) error {
	return validate(cfg, allowedDirs, newOpeners(nil))
}

func validate(cfg *Config, allowedDirs []string, open openers) error {
	v := &validator{cfg: cfg, allowedDirs: allowedDirs, open: open}
	if cfg.Version != ConfigVersion {
		v.add(KindInvalid, "config", 0, "", "version", "is %d; this build reads version %d", cfg.Version, ConfigVersion)
	}
	v.global()
	v.ids()
	v.portals()
	v.initiators()
	v.auths()
	v.targets()
	v.extents()
	v.targetExtents()
	v.pools()
	return errors.Join(v.errs...)
}

// ids requires every object to have a unique positive id.
func (v *validator) ids() {
	check := func(object string, ids []int) {
		seen := map[int]bool{}
		for _, id := range ids {
			switch {
			case id <= 0:
				v.add(KindInvalid, object, id, "", "id", "must be a positive number")
			case seen[id]:
				v.add(KindExists, object, id, "", "id", "is used by another %s", object)
			}
			seen[id] = true
		}
	}
	check("portal", idsOf(v.cfg.Portals))
	check("initiator", idsOf(v.cfg.Initiators))
	check("auth", idsOf(v.cfg.Auths))
	check("target", idsOf(v.cfg.Targets))
	check("extent", idsOf(v.cfg.Extents))
	check("targetextent", idsOf(v.cfg.TargetExtents))
	check("pool", idsOf(v.cfg.Pools))
}

func (v *validator) global() {
	g := v.cfg.Global
	if err := iscsi.ValidateName(g.Basename); err != nil {
		v.add(KindInvalid, "global", 0, "", "basename", "%v", err)
	}
	if dd := g.ISNSDiscoveryDomain; len(dd) > 255 || strings.ContainsFunc(dd, unicode.IsControl) {
		v.add(KindInvalid, "global", 0, "", "isns_discovery_domain", "%q is not a name of at most 255 bytes without control characters", dd)
	}
	for i, s := range g.ISNSServers {
		if err := validISNSServer(s); err != nil {
			v.add(KindInvalid, "global", 0, "", fmt.Sprintf("isns_servers[%d]", i), "%v", err)
		}
	}
	if t := g.PoolAvailThreshold; t != nil && (*t < 1 || *t > 99) {
		v.add(KindInvalid, "global", 0, "", "pool_avail_threshold", "%d is not a percentage from 1 to 99", *t)
	}
	if g.MaxConnections < 0 || g.MaxConnections > MaxConnectionsLimit {
		v.add(KindInvalid, "global", 0, "", "max_connections", "%d is not from 1 to %d (0 keeps the default)", g.MaxConnections, MaxConnectionsLimit)
	}
}

// checkNewDisks requires the device of every DISK extent that next adds
// or points elsewhere to exist and be a block device. It runs on changes
// only, not in Validate: a stored configuration whose disk is missing at
// boot still loads (that unit fails to open and says why), and an edit of
// anything else does not trip over it.
func checkNewDisks(prev, next *Config) error {
	old := map[int]string{}
	for _, e := range prev.Extents {
		if e.Type == ExtentDisk {
			old[e.ID] = DiskPath(e.Disk)
		}
	}
	var errs []error
	for _, e := range next.Extents {
		if e.Type != ExtentDisk || e.Disk == "" {
			continue
		}
		path := DiskPath(e.Disk)
		if was, ok := old[e.ID]; ok && was == path {
			continue
		}
		if err := blockDevice(path); err != nil {
			errs = append(errs, &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "disk", Msg: err.Error()})
		}
	}
	return errors.Join(errs...)
}

// checkShrinks refuses a FILE extent's filesize, new or changed, below
// the size of its file, served or not: the file is never cut (its data
// would go), so the size could never take effect, and a FILE extent
// serves its whole file. 0 keeps the file's size.
func checkShrinks(prev, next *Config) error {
	var errs []error
	for _, e := range next.Extents {
		if e.Type != ExtentFile || e.Filesize == 0 {
			continue
		}
		if old, ok := find(prev.Extents, e.ID); ok && old.Filesize == e.Filesize && old.Path == e.Path {
			continue
		}
		fi, err := os.Stat(e.Path)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() <= e.Filesize {
			continue
		}
		errs = append(errs, &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "filesize",
			Msg: fmt.Sprintf("%d is smaller than the %d bytes of %s: an extent may grow, not shrink (0 keeps the file's size)", e.Filesize, fi.Size(), e.Path)})
	}
	return errors.Join(errs...)
}

// checkVolumeNames refuses an edit that would rename a pool volume: its
// name (VolumeName) is how pools, front-ends and DestroyVolume find it;
// a volume that is not a file of a directory pool is named by its
// extent, which then keeps that name.
func checkVolumeNames(prev, next *Config) error {
	var errs []error
	for _, e := range next.Extents {
		old, ok := find(prev.Extents, e.ID)
		if !ok || old.Pool == "" || (old.Pool == e.Pool && VolumeName(old) == VolumeName(e)) {
			continue
		}
		errs = append(errs, &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "name",
			Msg: fmt.Sprintf("extent %d is volume %s/%s, which keeps its name and pool", e.ID, old.Pool, VolumeName(old))})
	}
	return errors.Join(errs...)
}

// blockDevice says why path is not an existing block device, or nil.
func blockDevice(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s does not exist", path)
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeDevice == 0 || fi.Mode()&fs.ModeCharDevice != 0 {
		return fmt.Errorf("%s is not a block device (a %s); use a FILE extent for a file", path, kindOfFile(fi.Mode()))
	}
	return nil
}

func kindOfFile(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	}
	return m.Type().String()
}

func authMethodValid(m string) bool {
	return m == AuthNone || m == AuthCHAP || m == AuthMutualCHAP
}

func (v *validator) portals() {
	type owner struct {
		id   int
		addr netip.AddrPort
	}
	var taken []owner
	tags := map[int]int{}
	for _, p := range v.cfg.Portals {
		add := func(kind Kind, field, format string, args ...any) {
			v.add(kind, "portal", p.ID, "", field, format, args...)
		}
		if p.Tag < 1 || p.Tag > 65535 {
			add(KindInvalid, "tag", "%d is not a portal group tag from 1 to 65535", p.Tag)
		} else if other, dup := tags[p.Tag]; dup {
			add(KindExists, "tag", "%d is also the tag of portal %d", p.Tag, other)
		}
		tags[p.Tag] = p.ID
		v.portalALUA(p, add)
		if !authMethodValid(p.DiscoveryAuthMethod) {
			add(KindInvalid, "discovery_authmethod", "%q is not NONE, CHAP or MUTUAL_CHAP", p.DiscoveryAuthMethod)
		} else {
			v.authUse(p.DiscoveryAuthMethod, p.DiscoveryAuthGroup, "discovery_authgroup", add)
		}
		switch {
		case p.Remote:
			v.remotePortal(p, add)
		case len(p.Listen) == 0:
			add(KindInvalid, "listen", "a portal needs at least one address")
		}
		for i, l := range p.Listen {
			field := fmt.Sprintf("listen[%d]", i)
			ip, err := netip.ParseAddr(l.IP)
			if err != nil || ip.Zone() != "" {
				add(KindInvalid, field+".ip", "%q is not an IPv4 or IPv6 address", l.IP)
				continue
			}
			if l.Port < 0 || l.Port > 65535 {
				add(KindInvalid, field+".port", "%d is not a TCP port from 1 to 65535 (or 0 for a free one)", l.Port)
				continue
			}
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(l.Port))
			if p.Remote {
				continue // another host's address: nothing listens on it here
			}
			for _, o := range taken {
				if o.addr.Port() == ap.Port() && (o.addr.Addr() == ap.Addr() || o.addr.Addr().IsUnspecified() || ap.Addr().IsUnspecified()) {
					if o.id == p.ID {
						add(KindExists, field, "%s overlaps another address of this portal (%s)", ap, o.addr)
					} else {
						add(KindExists, field, "%s overlaps %s of portal %d", ap, o.addr, o.id)
					}
				}
			}
			taken = append(taken, owner{p.ID, ap})
		}
	}
}

func (v *validator) initiators() {
	names := map[string]int{}
	for _, g := range v.cfg.Initiators {
		if g.Name != "" {
			if !validName(g.Name) {
				v.add(KindInvalid, "initiator", g.ID, g.Name, "name", "must be letters, digits, '_' and '-'")
			} else if other, dup := names[g.Name]; dup {
				v.add(KindExists, "initiator", g.ID, g.Name, "name", "initiator group %d has the same name", other)
			}
			names[g.Name] = g.ID
		}
		for i, name := range g.Initiators {
			if err := iscsi.ValidateName(name); err != nil {
				v.add(KindInvalid, "initiator", g.ID, "", fmt.Sprintf("initiators[%d]", i), "%v", err)
			}
		}
		for i, n := range g.AuthNetwork {
			if _, err := parseNetwork(n); err != nil {
				v.add(KindInvalid, "initiator", g.ID, "", fmt.Sprintf("auth_network[%d]", i), "%v", err)
			}
		}
	}
}

// parseNetwork reads a CIDR prefix or a single address.
func parseNetwork(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network in CIDR form (192.168.1.0/24)", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a network in CIDR form", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// CHAP secret length limits in characters, as TrueNAS (seed 000) has
// them: at least the 96 bits RFC 7143 §9.2.1 asks of secrets used without
// IPsec (chap.MinSecretLen), at most 16.
const (
	MinSecretLen = chap.MinSecretLen
	MaxSecretLen = 16
)

// authUse checks how a portal (discovery) or target group uses an auth
// group: CHAP and MUTUAL_CHAP need one, with no outgoing-only credential
// in it, MUTUAL_CHAP needs a peer user on every credential of it, and
// NONE takes none (it would be ignored) unless all of its credentials
// are outgoing-only: tgt keeps a target's outgoing user without incoming
// ones, for when they come.
func (v *validator) authUse(method string, group *int, field string, add func(Kind, string, string, ...any)) {
	if method == AuthNone {
		if group != nil && !v.outgoingOnlyGroup(*group) {
			add(KindInvalid, field, "an auth group is only used with CHAP or MUTUAL_CHAP; set it to null or choose a method")
		}
		return
	}
	if group == nil {
		add(KindInvalid, field, "%s needs an auth group", method)
		return
	}
	if !v.authGroupExists(*group) {
		add(KindNotFound, field, "no auth group with tag %d", *group)
		return
	}
	for _, a := range v.cfg.Auths {
		if a.Tag == *group && a.OutgoingOnly() {
			add(KindInvalid, field, "%s needs users to authenticate initiators; auth %d of group %d has only an outgoing user (%s)", method, a.ID, *group, a.PeerUser)
			return
		}
	}
	if method == AuthMutualCHAP {
		for _, a := range v.cfg.Auths {
			if a.Tag == *group && a.PeerUser == "" {
				add(KindInvalid, field, "MUTUAL_CHAP needs peeruser and peersecret on every credential of auth group %d; auth %d (user %q) has none", *group, a.ID, a.User)
			}
		}
	}
}

func (v *validator) auths() {
	users := map[[3]string]int{}
	for _, a := range v.cfg.Auths {
		add := func(field, format string, args ...any) {
			v.add(KindInvalid, "auth", a.ID, a.User, field, format, args...)
		}
		if a.Tag < 1 {
			add("tag", "%d is not a positive group tag", a.Tag)
		}
		if a.User == "" && !a.OutgoingOnly() {
			add("user", "a CHAP user name is required (or only peeruser and peersecret, for an outgoing-only credential)")
		}
		key := [3]string{strconv.Itoa(a.Tag), a.User, a.Initiator}
		if other, dup := users[key]; dup {
			v.add(KindExists, "auth", a.ID, a.User, "user", "auth %d of group %d has the same user", other, a.Tag)
		}
		users[key] = a.ID
		if a.Initiator != "" {
			if err := iscsi.ValidateName(a.Initiator); err != nil {
				add("initiator", "%v", err)
			}
		}
		if n := len(a.Secret); !a.OutgoingOnly() && (n < MinSecretLen || n > MaxSecretLen) {
			add("secret", "must be %d to %d characters, not %d", MinSecretLen, MaxSecretLen, n)
		}
		if (a.PeerUser == "") != (a.PeerSecret == "") {
			add("peersecret", "peeruser and peersecret go together")
		}
		if a.PeerSecret != "" {
			if n := len(a.PeerSecret); n < MinSecretLen || n > MaxSecretLen {
				add("peersecret", "must be %d to %d characters, not %d", MinSecretLen, MaxSecretLen, n)
			}
			if a.PeerSecret == a.Secret {
				add("peersecret", "must differ from secret, or mutual CHAP proves nothing")
			}
		}
	}
}

// outgoingOnlyGroup reports whether auth group tag exists and holds only
// outgoing-only credentials.
func (v *validator) outgoingOnlyGroup(tag int) bool {
	found := false
	for _, a := range v.cfg.Auths {
		if a.Tag == tag {
			if !a.OutgoingOnly() {
				return false
			}
			found = true
		}
	}
	return found
}

func (v *validator) authGroupExists(tag int) bool {
	for _, a := range v.cfg.Auths {
		if a.Tag == tag {
			return true
		}
	}
	return false
}

func (v *validator) targets() {
	names := map[string]int{}
	for _, t := range v.cfg.Targets {
		add := func(kind Kind, field, format string, args ...any) {
			v.add(kind, "target", t.ID, t.Name, field, format, args...)
		}
		if t.Name == "" {
			add(KindInvalid, "name", "a target name is required")
		} else {
			full := v.cfg.Global.FullName(t.Name)
			if err := checkTargetName(v.cfg.Global, t.Name); err != nil {
				add(KindInvalid, "name", "%v", err)
			} else if other, dup := names[full]; dup {
				add(KindExists, "name", "%s is also the name of target %d", full, other)
			}
			names[full] = t.ID
		}
		if len(t.Alias) > 255 {
			add(KindInvalid, "alias", "is longer than 255 bytes")
		}
		switch t.Mode {
		case "ISCSI":
		case "FC", "BOTH":
			add(KindUnsupported, "mode", "Fibre Channel is not supported; use ISCSI")
		default:
			add(KindInvalid, "mode", "%q is not ISCSI, FC or BOTH", t.Mode)
		}
		if t.State != StateReady && t.State != StateOffline {
			add(KindInvalid, "state", "%q is not ready or offline", t.State)
		}
		if t.QueueDepth < 0 || t.QueueDepth > MaxQueueDepth {
			add(KindInvalid, "queue_depth", "%d is not from 1 to %d (0 keeps the daemon's)", t.QueueDepth, MaxQueueDepth)
		}
		for field, d := range map[string]string{"header_digest": t.HeaderDigest, "data_digest": t.DataDigest} {
			if _, ok := digestPolicies[d]; !ok {
				add(KindInvalid, field, "%q is not Auto, CRC32C or None", d)
			}
		}
		portals := map[int]bool{}
		for i, g := range t.Groups {
			field := fmt.Sprintf("groups[%d]", i)
			if g.Portal == EveryPortal {
				if len(t.Groups) > 1 {
					add(KindInvalid, field+".portal", "0 (every portal) must be the target's only group")
				}
			} else if _, ok := find(v.cfg.Portals, g.Portal); !ok {
				add(KindNotFound, field+".portal", "no portal %d", g.Portal)
			} else if portals[g.Portal] {
				add(KindExists, field+".portal", "portal %d is in another group of this target", g.Portal)
			}
			portals[g.Portal] = true
			if g.Initiator != nil {
				if _, ok := find(v.cfg.Initiators, *g.Initiator); !ok {
					add(KindNotFound, field+".initiator", "no initiator group %d", *g.Initiator)
				}
			}
			if !authMethodValid(g.AuthMethod) {
				add(KindInvalid, field+".authmethod", "%q is not NONE, CHAP or MUTUAL_CHAP", g.AuthMethod)
				continue
			}
			v.authUse(g.AuthMethod, g.Auth, field+".auth", add)
		}
	}
}

// checkTargetName checks the iSCSI name a target called name would be
// served under: its own characters, then the whole name by
// iscsi.ValidateName. Manager.ValidateName (seed 000's
// iscsi.target.validate_name) is its exported spelling.
func checkTargetName(g Global, name string) error {
	if name == "" {
		return errors.New("a target name is required")
	}
	if !IsISCSIName(name) {
		for _, r := range name {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':') {
				return fmt.Errorf("%q: character %q is not allowed (lower-case letters, digits, '-', '.', ':')", name, r)
			}
		}
	}
	return iscsi.ValidateName(g.FullName(name))
}

// maxSanitizeRateMiBps is the highest sanitize cap an extent takes (1
// TiB/s): beyond it a cap means nothing.
const maxSanitizeRateMiBps = 1 << 20

// rpmValues are the rotation rates an extent may report.
var rpmValues = map[string]uint16{"UNKNOWN": 0, "SSD": 1, "5400": 5400, "7200": 7200, "10000": 10000, "15000": 15000}

func (v *validator) extents() {
	names := map[string]int{}
	paths := map[string]int{}
	serials := map[string]int{}
	naas := map[string]int{}
	uuids := map[string]int{}
	for _, e := range v.cfg.Extents {
		add := func(kind Kind, field, format string, args ...any) {
			v.add(kind, "extent", e.ID, e.Name, field, format, args...)
		}
		if e.Name == "" {
			add(KindInvalid, "name", "an extent name is required")
		} else if other, dup := names[e.Name]; dup {
			add(KindExists, "name", "extent %d has the same name", other)
		}
		names[e.Name] = e.ID
		switch e.Blocksize {
		case 512, 1024, 2048, 4096:
		default:
			add(KindInvalid, "blocksize", "%d is not 512, 1024, 2048 or 4096", e.Blocksize)
		}
		switch e.Type {
		case ExtentFile:
			if e.Disk != "" {
				add(KindInvalid, "disk", "a FILE extent has a path, not a disk")
			}
			if !filepath.IsAbs(e.Path) {
				add(KindInvalid, "path", "%q is not an absolute file path", e.Path)
			} else if !v.allowed(e.Path) {
				add(KindInvalid, "path", "%s is outside the allowed directories %s", e.Path, strings.Join(v.allowedDirs, ", "))
			}
			if e.Filesize < 0 || (e.Blocksize > 0 && e.Filesize%int64(e.Blocksize) != 0) {
				add(KindInvalid, "filesize", "%d is not a whole number of %d-byte blocks", e.Filesize, e.Blocksize)
			}
		case ExtentDisk:
			if e.Path != "" {
				add(KindInvalid, "path", "a DISK extent has a disk, not a path")
			}
			if e.Disk == "" {
				add(KindInvalid, "disk", "a DISK extent needs a block device")
			} else if !v.allowed(DiskPath(e.Disk)) && !strings.HasPrefix(DiskPath(e.Disk), "/dev/") {
				add(KindInvalid, "disk", "%s is neither under /dev nor in the allowed directories", DiskPath(e.Disk))
			}
		default:
			if v.open[e.Type] == nil {
				add(KindInvalid, "type", "%q is not one of %s", e.Type, v.open.types())
			}
		}
		v.errs = append(v.errs, v.open.check(e)...)
		if p := v.open.storage(e); p != "" {
			if other, dup := paths[p]; dup {
				add(KindExists, "path", "%s is also the storage of extent %d", p, other)
			}
			paths[p] = e.ID
		}
		if e.SanitizeRateMiBps < 0 || e.SanitizeRateMiBps > maxSanitizeRateMiBps {
			add(KindInvalid, "sanitize_rate_mibps", "%d is not from 0 (no cap) to %d", e.SanitizeRateMiBps, maxSanitizeRateMiBps)
		}
		if len(e.Serial) > 252 || !printable(e.Serial) {
			add(KindInvalid, "serial", "must be at most 252 printable ASCII characters")
		} else if other, dup := serials[e.Serial]; dup && e.Serial != "" {
			add(KindExists, "serial", "extent %d has the same serial: initiators would take the two for one unit", other)
		}
		serials[e.Serial] = e.ID
		if e.NAA != "" {
			if n, err := parseNAA(e.NAA); err != nil {
				add(KindInvalid, "naa", "%v", err)
			} else if other, dup := naas[string(n)]; dup {
				add(KindExists, "naa", "extent %d has the same NAA: initiators would take the two for one unit", other)
			} else {
				naas[string(n)] = e.ID
			}
		}
		if e.UUID != "" {
			if !canonicalUUID(e.UUID) {
				add(KindInvalid, "uuid", "%q is not a UUID in canonical form (8-4-4-4-12 lower-case hex digits)", e.UUID)
			} else if other, dup := uuids[e.UUID]; dup {
				add(KindExists, "uuid", "extent %d has the same UUID", other)
			} else {
				uuids[e.UUID] = e.ID
			}
		}
		if _, ok := rpmValues[e.RPM]; !ok {
			add(KindInvalid, "rpm", "%q is not UNKNOWN, SSD, 5400, 7200, 10000 or 15000", e.RPM)
		}
		if t := e.AvailThreshold; t != nil && (*t < 1 || *t > 99) {
			add(KindInvalid, "avail_threshold", "%d is not a percentage from 1 to 99", *t)
		}
		for _, f := range []struct {
			field, value string
			max          int
		}{{"vendor", e.Vendor, 8}, {"product", e.Product, 16}, {"revision", e.Revision, 4}} {
			if len(f.value) > f.max || !printable(f.value) {
				add(KindInvalid, f.field, "must be at most %d printable ASCII characters", f.max)
			}
		}
	}
}

// allowed reports whether path lies in one of the allowed directories or
// in a directory pool.
func (v *validator) allowed(path string) bool {
	if len(v.allowedDirs) == 0 {
		return true
	}
	clean := filepath.Clean(path)
	dirs := slices.Clone(v.allowedDirs)
	for _, p := range v.cfg.Pools {
		if p.Type == PoolFS && filepath.IsAbs(p.Path) {
			dirs = append(dirs, p.Path)
		}
	}
	for _, d := range dirs {
		rel, err := filepath.Rel(filepath.Clean(d), clean)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
			return true
		}
	}
	return false
}

// DiskPath resolves a DISK extent's disk to a device path: absolute paths
// stay, others are relative to /dev.
func DiskPath(disk string) string {
	if filepath.IsAbs(disk) {
		return filepath.Clean(disk)
	}
	return filepath.Join("/dev", disk)
}

// devicePath is where the extent's data lives.
func (e *Extent) devicePath() string {
	switch e.Type {
	case ExtentFile:
		if e.Path == "" {
			return ""
		}
		return filepath.Clean(e.Path)
	case ExtentDisk:
		if e.Disk == "" {
			return ""
		}
		return DiskPath(e.Disk)
	}
	return ""
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseNAA reads an NAA designator written as 0x followed by 16 hex
// digits (type 5, IEEE Registered) or 32 (type 6, IEEE Registered
// Extended), returning its bytes.
func parseNAA(s string) ([]byte, error) {
	h, ok := strings.CutPrefix(strings.ToLower(s), "0x")
	b, err := hex.DecodeString(h)
	if !ok || err != nil || (len(h) != 16 && len(h) != 32) {
		return nil, fmt.Errorf("%q is not 0x followed by 16 or 32 hex digits", s)
	}
	if err := scsi.CheckNAA(b); err != nil {
		return nil, fmt.Errorf("%q: %v", s, err)
	}
	return b, nil
}

func (v *validator) targetExtents() {
	// A LUN number is taken per initiator; a general map takes it for
	// every initiator of the target.
	type lunKey struct {
		target    int
		initiator string
		lun       int
	}
	luns := map[lunKey]int{}
	pairs := map[lunKey]int{}
	for _, m := range v.cfg.TargetExtents {
		add := func(kind Kind, field, format string, args ...any) {
			v.add(kind, "targetextent", m.ID, "", field, format, args...)
		}
		if _, ok := find(v.cfg.Targets, m.Target); !ok {
			add(KindNotFound, "target", "no target %d", m.Target)
		}
		if _, ok := find(v.cfg.Extents, m.Extent); !ok {
			add(KindNotFound, "extent", "no extent %d", m.Extent)
		}
		if m.LunID < 0 || m.LunID > MaxLUN {
			add(KindInvalid, "lunid", "%d is not a LUN from 0 to %d", m.LunID, MaxLUN)
		}
		if m.Initiator != "" {
			if err := iscsi.ValidateName(m.Initiator); err != nil {
				add(KindInvalid, "initiator", "%v", err)
			}
		}
		if g := m.InitiatorGroup; g != nil {
			if m.Initiator != "" {
				add(KindInvalid, "initiator_group", "a LUN is masked to one initiator or to an initiator group, not both")
			}
			if _, ok := find(v.cfg.Initiators, *g); !ok {
				add(KindNotFound, "initiator_group", "no initiator group %d", *g)
			}
		}
		who := m.maskedTo(v.cfg)
		if who == nil {
			who = []string{""}
		}
		for _, name := range who {
			k := lunKey{m.Target, name, m.LunID}
			if other, dup := luns[k]; dup && other != m.ID {
				add(KindExists, "lunid", "LUN %d of target %d is already mapped%s by targetextent %d", m.LunID, m.Target, forWhom(name), other)
			}
			luns[k] = m.ID
			pk := lunKey{m.Target, name, m.Extent}
			if other, dup := pairs[pk]; dup && other != m.ID {
				add(KindExists, "extent", "extent %d is already mapped into target %d%s by targetextent %d", m.Extent, m.Target, forWhom(name), other)
			}
			pairs[pk] = m.ID
		}
	}
	// A masked LUN may not hide under a general one.
	for _, m := range v.cfg.TargetExtents {
		if m.maskedTo(v.cfg) == nil {
			continue
		}
		if other, dup := luns[lunKey{m.Target, "", m.LunID}]; dup {
			v.add(KindExists, "targetextent", m.ID, "", "lunid", "LUN %d of target %d is mapped for every initiator by targetextent %d", m.LunID, m.Target, other)
		}
	}
}

// forWhom words the initiator a LUN is masked to, for messages.
func forWhom(initiator string) string {
	if initiator == "" {
		return ""
	}
	return " for " + initiator
}

// canonicalUUID reports whether s is a UUID in its canonical text form,
// lower-case hex digits grouped 8-4-4-4-12 (RFC 9562 §4), as newUUID
// writes it. An extent's UUID names its state files, so nothing else is
// accepted.
func canonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range []byte(s) {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// validName reports whether a pool or volume name uses only the
// characters seed 003 allows: [a-zA-Z0-9_-].
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (v *validator) pools() {
	names := map[string]int{}
	for _, p := range v.cfg.Pools {
		add := func(kind Kind, field, format string, args ...any) {
			v.add(kind, "pool", p.ID, p.Name, field, format, args...)
		}
		if !validName(p.Name) {
			add(KindInvalid, "name", "%q must be letters, digits, '_' and '-'", p.Name)
		} else if other, dup := names[p.Name]; dup {
			add(KindExists, "name", "pool %d has the same name", other)
		}
		names[p.Name] = p.ID
		switch {
		case p.Type == PoolFS || p.Type == PoolBlock:
			if !filepath.IsAbs(p.Path) {
				add(KindInvalid, "path", "%q is not an absolute path", p.Path)
			}
			if len(p.Params) > 0 {
				add(KindInvalid, "params", "a pool of type %s takes none", p.Type)
			}
		case v.open.maker(p.Type) != nil:
		default:
			add(KindInvalid, "type", "%q is not fs, block or an extent type that makes volumes", p.Type)
		}
	}
	for _, e := range v.cfg.Extents {
		if e.Pool == "" {
			continue
		}
		if _, ok := names[e.Pool]; !ok {
			v.add(KindNotFound, "extent", e.ID, e.Name, "pool", "no pool %q", e.Pool)
		}
	}
}
