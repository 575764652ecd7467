package mgmt

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"strings"

	"github.com/iscsikit/iscsikit/scsi"
)

// ConfigVersion is the version of the configuration format this package
// writes. Load migrates older versions and refuses newer ones. Version 2
// marks adopted pool volumes (Extent.Adopted); version 1 told them by
// name, and is migrated so.
const ConfigVersion = 2

// Config is the whole management model, shaped like the API of seed 000
// (TrueNAS iscsi.*) so that operators can write DIR/config.json by hand:
// every object carries its id and the field names of the create calls.
type Config struct {
	Version       int            `json:"version"`
	Global        Global         `json:"global"`
	Portals       []Portal       `json:"portals"`
	Initiators    []Initiator    `json:"initiators"`
	Auths         []Auth         `json:"auths"`
	Targets       []Target       `json:"targets"`
	Extents       []Extent       `json:"extents"`
	TargetExtents []TargetExtent `json:"targetextents"`
	// Pools (extension, seed 003) are storage the host provides for
	// volumes: a directory of sparse files or a block device.
	Pools []Pool `json:"pools,omitempty"`
	// NextIDs (kept by the Manager) are the ids the next object of each
	// kind gets. They only grow, so an id once given is never given to
	// another object, and a caller holding an old id cannot act on a
	// newer object by mistake. A file without them (or with counters
	// behind its ids) starts them above the largest id of each kind.
	NextIDs IDCounters `json:"next_ids"`
}

// IDCounters hold the next id of each kind of object (Config.NextIDs).
type IDCounters struct {
	Portal       int `json:"portal"`
	Initiator    int `json:"initiator"`
	Auth         int `json:"auth"`
	Target       int `json:"target"`
	Extent       int `json:"extent"`
	TargetExtent int `json:"targetextent"`
	Pool         int `json:"pool"`
}

// atLeast raises every counter of n to at least o's.
func (n *IDCounters) atLeast(o IDCounters) {
	for _, p := range []struct {
		n *int
		o int
	}{
		{&n.Portal, o.Portal}, {&n.Initiator, o.Initiator}, {&n.Auth, o.Auth}, {&n.Target, o.Target},
		{&n.Extent, o.Extent}, {&n.TargetExtent, o.TargetExtent}, {&n.Pool, o.Pool},
	} {
		*p.n = max(*p.n, p.o)
	}
}

// Pool types.
const (
	PoolFS    = "fs"    // a directory; volumes are sparse files in it
	PoolBlock = "block" // a block device; its one volume is the device
)

// Pool is storage configured on the host for volumes (seed 003). Pools
// are set in the configuration file, not created through the API.
//
// Type is fs, block, or the extent type of an Opener that makes volumes
// (a VolumeMaker, such as iscsid's RBD under the tag ceph): its volumes
// are extents of that type, made in its storage, with Params as their
// starting settings.
type Pool struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path,omitempty"`
	// Params (extension) are the settings every volume of a pool of an
	// Opener's type starts with (for RBD: the Ceph pool, conf, user).
	Params map[string]string `json:"params,omitempty"`
}

// Global holds the settings shared by every target.
type Global struct {
	// Basename prefixes target names that are not already iSCSI names:
	// target "disk0" is served as Basename + ":disk0".
	Basename string `json:"basename"`
	// ISNSServers lists iSNS servers to register with (host or host:port).
	ISNSServers []string `json:"isns_servers"`
	// ISNSDiscoveryDomain (extension) names an iSNS discovery domain
	// the targets are registered as members of; empty leaves them to
	// the servers' default domain.
	ISNSDiscoveryDomain string `json:"isns_discovery_domain,omitempty"`
	// PoolAvailThreshold is the percentage of pool space in use above
	// which the product warns; nil disables it.
	PoolAvailThreshold *int `json:"pool_avail_threshold"`
	// ALUA turns on asymmetric logical unit access: every portal (a
	// Remote one included) is a target port group, in the state its
	// ALUAState gives it.
	ALUA bool `json:"alua"`
	// MaxConnections (extension, seed 001's iscsi_maxconnect) is the
	// connections per session a product allows, 1 to MaxConnectionsLimit;
	// 0 means 1. Each target negotiates MaxConnections up to it
	// (iscsi.Target.MaxConnections); a change ends the targets' sessions,
	// like a change of their digests, and initiators log in again under
	// the new limit.
	MaxConnections int `json:"max_connections,omitempty"`
}

// MaxConnectionsLimit is the largest Global.MaxConnections (RFC 7143's
// MaxConnections range).
const MaxConnectionsLimit = 65535

// DefaultBasename is the basename of a new configuration.
const DefaultBasename = "iqn.2026-11.io.iscsikit"

// Listen is one address a portal listens on.
type Listen struct {
	IP string `json:"ip"`
	// Port 0 listens on a free port the system picks (tests, ephemeral
	// setups); Manager.PortalAddrs tells which.
	Port int `json:"port"`
}

// Portal is a target portal group: a tag and the addresses it listens on.
type Portal struct {
	ID int `json:"id"`
	// Tag is the target portal group tag; 0 on create means the id.
	Tag     int    `json:"tag"`
	Comment string `json:"comment"`
	// DiscoveryAuthMethod is NONE, CHAP or MUTUAL_CHAP for discovery
	// sessions through this portal, with credentials from the auth group
	// DiscoveryAuthGroup (an Auth tag).
	DiscoveryAuthMethod string   `json:"discovery_authmethod"`
	DiscoveryAuthGroup  *int     `json:"discovery_authgroup"`
	Listen              []Listen `json:"listen"`
	// ALUAState (extension) is the asymmetric access state of the
	// portal's target port group for every logical unit while
	// Global.ALUA is on: ACTIVE_OPTIMIZED (also "", the default),
	// ACTIVE_NON_OPTIMIZED, STANDBY, UNAVAILABLE or TRANSITIONING.
	ALUAState string `json:"alua_state,omitempty"`
	// Remote (extension) makes the portal a target port group that
	// another gateway serves: a second daemon exporting the same extents
	// (same serial and NAA, same storage) under the same target names,
	// where the portal is local. This daemon does not listen on it (its
	// Listen, optional, names the addresses the other gateway listens on,
	// which SendTargets lists with the tag for the targets mapped to it;
	// no wildcards, no port 0; no discovery authentication here) and reports
	// it, in its ALUAState, to REPORT TARGET PORT GROUPS for every
	// logical unit. It needs Global.ALUA; while any portal is remote the
	// units offer implicit ALUA only (no SET TARGET PORT GROUPS), since a
	// state set on one gateway would not reach the other. The tag is the
	// group's number and its relative target port on both gateways, so
	// tags must be unique across the gateways.
	Remote bool `json:"remote,omitempty"`
}

// Initiator is an initiator group: who may log in. Empty lists mean
// everyone.
type Initiator struct {
	ID int `json:"id"`
	// Name (extension, seed 003's access groups) optionally names the
	// group; names are unique.
	Name    string `json:"name,omitempty"`
	Comment string `json:"comment"`
	// Initiators lists the iSCSI names allowed.
	Initiators []string `json:"initiators"`
	// AuthNetwork lists the networks (CIDR or single addresses) allowed.
	AuthNetwork []string `json:"auth_network"`
}

// Auth is one CHAP credential of an auth group; entries sharing a tag
// form the group, and a login may authenticate as any user of the group
// its portal (discovery) or target group names. Seed 004's incoming users
// are the users of a group, its outgoing user the peer user; seed 003's
// per-initiator credentials are entries with Initiator set.
type Auth struct {
	ID  int `json:"id"`
	Tag int `json:"tag"`
	// User and Secret are what the initiator answers the target's
	// challenge with (CHAP_N, and the secret behind CHAP_R). The secret
	// has 12 to 16 characters.
	User   string `json:"user"`
	Secret string `json:"secret,omitempty"`
	// PeerUser and PeerSecret are what the target answers the initiator's
	// challenge with in mutual CHAP; the peer secret has 12 to 16
	// characters and differs from Secret.
	PeerUser   string `json:"peeruser"`
	PeerSecret string `json:"peersecret,omitempty"`
	// Initiator (extension, seed 003) restricts the credential to the
	// initiator of this iSCSI name; empty accepts it from any initiator.
	Initiator string `json:"initiator,omitempty"`
}

// OutgoingOnly reports whether a is an outgoing-only credential: a peer
// user and secret (what the target answers an initiator's challenge
// with) and no user or secret, as tgt keeps a target's outgoing user
// while it has no incoming one. It authenticates no initiator, so its
// auth group serves no CHAP login until users are added to it; a target
// group may name that group with NONE meanwhile.
func (a Auth) OutgoingOnly() bool {
	return a.User == "" && a.Secret == "" && a.PeerUser != "" && a.PeerSecret != ""
}

// Auth methods of portals and target groups.
const (
	AuthNone       = "NONE"
	AuthCHAP       = "CHAP"
	AuthMutualCHAP = "MUTUAL_CHAP"
)

// TargetGroup binds a target to a portal, with who may log in there and
// how they authenticate. An initiator refused by the initiator group gets
// "authorization failure" at login and does not see the target in
// discovery; a login that fails CHAP gets "authentication failure".
type TargetGroup struct {
	// Portal is a portal id, or EveryPortal.
	Portal int `json:"portal"`
	// Initiator is an initiator group id; nil admits everyone.
	Initiator *int `json:"initiator"`
	// Auth is the tag of the auth group whose users may log in with CHAP
	// and MUTUAL_CHAP; it must be null with NONE.
	Auth *int `json:"auth"`
	// AuthMethod is NONE, CHAP (the initiator proves itself; it may also
	// ask the target to, which answers when the credential has a peer
	// user) or MUTUAL_CHAP (both prove themselves).
	AuthMethod string `json:"authmethod"`
}

// EveryPortal as a group's portal (an extension) makes the target
// reachable through every portal, present and future, with that group's
// initiators and authentication. It is how targets made through APIs that
// have no portal objects (seeds 002, 003 and 004) are served; it must be
// the target's only group.
const EveryPortal = 0

// Target states (an extension from seed 004).
const (
	StateReady   = "ready"
	StateOffline = "offline"
)

// Target is an iSCSI target.
type Target struct {
	ID int `json:"id"`
	// Name is appended to the global basename unless it is already an
	// iSCSI name (iqn., eui., naa.).
	Name  string `json:"name"`
	Alias string `json:"alias"`
	// Mode is ISCSI (FC and BOTH are seed 000 values this SDK refuses).
	Mode   string        `json:"mode"`
	Groups []TargetGroup `json:"groups"`
	// State is ready or offline (extension): an offline target is not
	// served and its sessions end.
	State string `json:"state"`
	// HeaderDigest and DataDigest (extension, seed 002's shares) say
	// which digests logins to the target may use: Auto (whatever the
	// initiator prefers), CRC32C (required) or None (refused).
	HeaderDigest string `json:"header_digest"`
	DataDigest   string `json:"data_digest"`
	// QueueDepth (extension, seed 001's per-target queue depth) is the
	// commands each session of the target may have outstanding, 1 to
	// MaxQueueDepth; 0 keeps the daemon's.
	QueueDepth int `json:"queue_depth,omitempty"`
}

// MaxQueueDepth is the largest per-target queue depth accepted.
const MaxQueueDepth = 4096

// Digest settings of a target.
const (
	DigestAuto   = "Auto"
	DigestCRC32C = "CRC32C"
	DigestNone   = "None"
)

// Extent types.
const (
	ExtentDisk = "DISK"
	ExtentFile = "FILE"
)

// Extent is a logical unit's storage and SCSI identity.
type Extent struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
	// Type is DISK (a block device, Disk), FILE (a regular file, Path)
	// or a type the Manager's Options.Openers add.
	Type string `json:"type"`
	// Disk is a block device: an absolute path or one relative to /dev
	// (seed 000's "zvol/tank/lun0"). A change that sets it requires the
	// device to exist and be a block device (a stored configuration is
	// not checked for this when it is loaded).
	Disk string `json:"disk,omitempty"`
	// Path is the file of a FILE extent, created sparse of Filesize if
	// missing. Filesize may grow while the extent is served: the file
	// grows and initiators hear CAPACITY DATA HAS CHANGED; a smaller
	// size than the extent serves is refused. 0 keeps the file's size.
	Path     string `json:"path,omitempty"`
	Filesize int64  `json:"filesize,omitempty"`
	// Params (extension) are the settings of an extent of a type added
	// through Options.Openers (an RBD image's pool, image, user and
	// conf), checked by that type's Opener. FILE and DISK take none.
	Params map[string]string `json:"params,omitempty"`
	// Blocksize is the logical block size: 512, 1024, 2048 or 4096.
	Blocksize int `json:"blocksize"`
	// HidePhysicalBlocksize (seed 000's pblocksize) disables physical
	// block size reporting: when false a 4096-byte physical block is
	// reported under smaller logical blocks.
	HidePhysicalBlocksize bool `json:"pblocksize"`
	// AvailThreshold is a percentage of space in use above which the
	// product warns; nil disables it.
	AvailThreshold *int   `json:"avail_threshold"`
	Comment        string `json:"comment"`
	// Serial is the unit serial number (VPD page 80), reported as given.
	// Left empty, the Manager generates a random one (16 hex digits) when
	// it first stores the extent, and keeps it.
	Serial string `json:"serial"`
	// NAA is the NAA designator (VPD page 83), reported as given: 0x and
	// 16 hex digits (type 5, IEEE Registered) or 32 (type 6, IEEE
	// Registered Extended). Left empty, the Manager generates a random
	// type 6 one (scsi.NewNAA) when it first stores the extent, and keeps
	// it. No two extents share a serial or an NAA.
	NAA string `json:"naa"`
	// InsecureTPC offers third-party copy (EXTENDED COPY, VMware's XCOPY)
	// between this extent and the other extents of the same target that
	// offer it, without further authentication of the initiator.
	InsecureTPC bool `json:"insecure_tpc"`
	Xen         bool `json:"xen"`
	// RPM is the reported rotation rate: UNKNOWN, SSD, 5400, 7200,
	// 10000 or 15000.
	RPM     string `json:"rpm"`
	RO      bool   `json:"ro"`
	Enabled bool   `json:"enabled"`

	// Extensions (seeds 003 and 004).

	// WriteCache reports and honours a volatile write cache (WCE).
	WriteCache bool `json:"write_cache"`
	// Direct opens the file or device with O_DIRECT, bypassing the host's
	// page cache (unaligned I/O goes through aligned bounce buffers).
	// Off by default: buffered I/O is faster for reads that hit the cache.
	Direct bool `json:"direct,omitempty"`
	// Online false keeps the LUN in its targets but offline: INQUIRY and
	// REPORT LUNS see it, media access fails with NOT READY, LOGICAL UNIT
	// NOT READY, OFFLINE.
	Online bool `json:"online"`
	// Removable marks the medium removable: initiators may prevent its
	// removal and eject and load it (PREVENT ALLOW MEDIUM REMOVAL, START
	// STOP UNIT with LOEJ).
	Removable bool `json:"removable"`
	// Thin enables thin provisioning (UNMAP, WRITE SAME unmap, GET LBA
	// STATUS).
	Thin bool `json:"thin"`
	// Encrypted stores the extent's blocks encrypted (AES-256-XTS, in
	// 512-byte sectors) under a key of its own kept in Options.KeyDir,
	// named after the extent, and offers SANITIZE CRYPTOGRAPHIC ERASE,
	// which replaces the key. The key is created with the extent while
	// its storage is known to hold no data (a thin FILE extent with
	// nothing allocated); for storage that cannot tell (a block device)
	// the key file must be put in place first. Losing the key file loses
	// the data. It cannot be switched on or off, nor the extent renamed,
	// while the storage is in use, and an unencrypted extent whose key
	// file exists is refused.
	Encrypted bool `json:"encrypted,omitempty"`
	// SanitizeRateMiBps caps how fast a SANITIZE OVERWRITE writes, in MiB
	// per second, so that sanitizing one extent leaves the pool's
	// bandwidth to the others; 0 means no cap.
	SanitizeRateMiBps int `json:"sanitize_rate_mibps,omitempty"`
	// Vendor, Product and Revision override the standard INQUIRY data.
	Vendor   string `json:"vendor,omitempty"`
	Product  string `json:"product,omitempty"`
	Revision string `json:"revision,omitempty"`
	// Pool names the pool a volume extent was allocated from (seed 003);
	// UUID identifies that volume, unique even when a name is reused.
	Pool string `json:"pool,omitempty"`
	UUID string `json:"uuid,omitempty"`
	// Adopted (kept by the Manager) marks a pool volume that a front-end
	// where volumes and extents are apart (TrueNAS's and FreeNAS's zvols)
	// made an extent of: Manager.AdoptVolume sets it with the extent's
	// name and settings, Manager.ReleaseVolume clears it.
	Adopted bool `json:"adopted,omitempty"`
}

// TargetExtent maps an extent into a target as a LUN.
type TargetExtent struct {
	ID     int `json:"id"`
	Target int `json:"target"`
	Extent int `json:"extent"`
	LunID  int `json:"lunid"`
	// Initiator (extension, seed 003's exports) masks the LUN: only the
	// initiator of this iSCSI name sees it, under LunID. Empty means
	// every initiator admitted to the target.
	Initiator string `json:"initiator,omitempty"`
	// InitiatorGroup (extension, seed 003's access group maps) masks the
	// LUN to the initiators an initiator group names: each of them sees
	// it under LunID, as if mapped for it alone. The group's networks do
	// not apply here, and a group naming nobody shows the LUN to nobody.
	InitiatorGroup *int `json:"initiator_group,omitempty"`
}

// maskedTo lists the initiators a LUN map is masked to, nil for a map
// every initiator of the target sees.
func (m TargetExtent) maskedTo(cfg *Config) []string {
	if m.InitiatorGroup != nil {
		g, _ := find(cfg.Initiators, *m.InitiatorGroup)
		if g.Initiators == nil {
			return []string{}
		}
		return g.Initiators
	}
	if m.Initiator != "" {
		return []string{m.Initiator}
	}
	return nil
}

// MaxLUN is the largest LUN id accepted: 1023, the limit of TrueNAS's
// lunid, which seed 000's clients expect; scsi.MaxLUN (16383, what flat
// space addressing can carry) is what the SCSI layer itself takes, for
// embedders that use it without mgmt.
const MaxLUN = 1023

// Defaults are applied to fields an object's JSON leaves out, so a
// hand-written file only states what differs. Go callers get the same
// values from NewPortal, NewTarget, NewExtent and friends.

// NewPortal returns a portal with the defaults of a create call.
func NewPortal() Portal { return Portal{DiscoveryAuthMethod: AuthNone} }

// NewTarget returns a target with the defaults of a create call.
func NewTarget() Target {
	return Target{Mode: "ISCSI", State: StateReady, HeaderDigest: DigestAuto, DataDigest: DigestAuto}
}

// NewExtent returns an extent with the defaults of a create call.
func NewExtent() Extent {
	return Extent{Type: ExtentFile, Blocksize: 512, RPM: "SSD", Enabled: true, WriteCache: true, Online: true, Thin: true, InsecureTPC: true}
}

// UnmarshalJSON fills fields the JSON leaves out with NewPortal's values.
func (p *Portal) UnmarshalJSON(b []byte) error {
	type plain Portal
	v := plain(NewPortal())
	if err := strictUnmarshal(b, &v); err != nil {
		return err
	}
	*p = Portal(v)
	return nil
}

// UnmarshalJSON fills fields the JSON leaves out with NewTarget's values.
func (t *Target) UnmarshalJSON(b []byte) error {
	type plain Target
	v := plain(NewTarget())
	if err := strictUnmarshal(b, &v); err != nil {
		return err
	}
	*t = Target(v)
	return nil
}

// UnmarshalJSON fills fields the JSON leaves out with NewExtent's values.
func (e *Extent) UnmarshalJSON(b []byte) error {
	type plain Extent
	v := plain(NewExtent())
	if err := strictUnmarshal(b, &v); err != nil {
		return err
	}
	*e = Extent(v)
	return nil
}

// UnmarshalJSON defaults a group's auth method to NONE.
func (g *TargetGroup) UnmarshalJSON(b []byte) error {
	type plain TargetGroup
	v := plain{AuthMethod: AuthNone}
	if err := strictUnmarshal(b, &v); err != nil {
		return err
	}
	*g = TargetGroup(v)
	return nil
}

// strictUnmarshal decodes b into v refusing unknown fields, so that a typo
// in a hand-written file or an API request is reported, not ignored.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// IsISCSIName reports whether name already has an iSCSI name prefix and
// so is used as given rather than appended to the basename. It does not
// check the rest of the name: Manager.ValidateName (a target's name) and
// iscsi.ValidateName (any iSCSI name) do.
func IsISCSIName(name string) bool {
	return strings.HasPrefix(name, "iqn.") || strings.HasPrefix(name, "eui.") || strings.HasPrefix(name, "naa.")
}

// FullName returns the iSCSI name a target named name is served under.
func (g Global) FullName(name string) string {
	if IsISCSIName(name) {
		return name
	}
	return g.Basename + ":" + name
}

// normalize turns missing lists into empty ones, so the file and API
// answers show [] rather than null, raises the id counters above the ids
// in use, and gives settings left empty (the
// zero value of an object made in Go rather than with NewExtent and
// friends) their defaults: an extent's type FILE, block size 512 and
// rotation rate SSD, a target's mode ISCSI, state ready and digests
// Auto, auth methods NONE. Booleans cannot tell "left out" from false:
// an Extent{} is disabled, offline and without write cache; NewExtent
// gives the defaults of a create call.
func (c *Config) normalize() {
	for i := range c.Portals {
		orDefault(&c.Portals[i].DiscoveryAuthMethod, AuthNone)
	}
	for i := range c.Targets {
		t := &c.Targets[i]
		orDefault(&t.Mode, "ISCSI")
		orDefault(&t.State, StateReady)
		orDefault(&t.HeaderDigest, DigestAuto)
		orDefault(&t.DataDigest, DigestAuto)
		for j := range t.Groups {
			orDefault(&t.Groups[j].AuthMethod, AuthNone)
		}
	}
	for i := range c.Extents {
		e := &c.Extents[i]
		orDefault(&e.Type, ExtentFile)
		orDefault(&e.RPM, "SSD")
		if e.Blocksize == 0 {
			e.Blocksize = 512
		}
	}
	orEmpty(&c.Global.ISNSServers)
	orEmpty(&c.Portals)
	orEmpty(&c.Initiators)
	orEmpty(&c.Auths)
	orEmpty(&c.Targets)
	orEmpty(&c.Extents)
	orEmpty(&c.TargetExtents)
	orEmpty(&c.Pools)
	for i := range c.Portals {
		orEmpty(&c.Portals[i].Listen)
	}
	for i := range c.Initiators {
		orEmpty(&c.Initiators[i].Initiators)
		orEmpty(&c.Initiators[i].AuthNetwork)
	}
	for i := range c.Targets {
		orEmpty(&c.Targets[i].Groups)
	}
	c.NextIDs.atLeast(IDCounters{
		Portal: NextID(c.Portals), Initiator: NextID(c.Initiators), Auth: NextID(c.Auths), Target: NextID(c.Targets),
		Extent: NextID(c.Extents), TargetExtent: NextID(c.TargetExtents), Pool: NextID(c.Pools),
	})
}

func orDefault(s *string, def string) {
	if *s == "" {
		*s = def
	}
}

func orEmpty[T any](s *[]T) {
	if *s == nil {
		*s = []T{}
	}
}

// fillIdentity gives every extent without a serial or NAA a new random
// one, and reports whether it gave any. The Manager runs it before it
// validates and stores a configuration, so identities are made once, at
// create time (or the first time an older file is loaded), and kept.
func (c *Config) fillIdentity() bool {
	filled := false
	for i := range c.Extents {
		e := &c.Extents[i]
		if e.Serial == "" {
			e.Serial, filled = scsi.NewSerial(), true
		}
		if e.NAA == "" {
			e.NAA, filled = "0x"+hex.EncodeToString(scsi.NewNAA()), true
		}
	}
	return filled
}

// clone returns a deep copy of c, so that a caller's mutations never
// reach the Manager's state.
func (c *Config) clone() *Config {
	b, err := json.Marshal(c)
	if err != nil {
		panic("mgmt: config does not marshal: " + err.Error())
	}
	var out Config
	if err := json.Unmarshal(b, &out); err != nil {
		panic("mgmt: config does not unmarshal: " + err.Error())
	}
	return &out
}
