package mgmt

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

func intp(v int) *int { return &v }

// validConfig is a small configuration every rule test starts from.
func validConfig() *Config {
	c := EmptyConfig()
	c.Portals = []Portal{
		{ID: 1, Tag: 1, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: 3260}}},
		{ID: 2, Tag: 2, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "::1", Port: 3260}}},
	}
	c.Initiators = []Initiator{{ID: 1, Initiators: []string{"iqn.1998-01.com.vmware:esx1"}, AuthNetwork: []string{"192.168.1.0/24", "10.0.0.7"}}}
	c.Auths = []Auth{{ID: 1, Tag: 1, User: "chapuser", Secret: "secretpass123", PeerUser: "peer", PeerSecret: "peersecret12"}}
	t := NewTarget()
	t.ID, t.Name = 1, "disk0"
	t.Groups = []TargetGroup{{Portal: 1, Initiator: intp(1), AuthMethod: AuthNone}}
	c.Targets = []Target{t}
	e := NewExtent()
	e.ID, e.Name, e.Path, e.Filesize = 1, "lun0", "/srv/iscsi/lun0.img", 1<<30
	d := NewExtent()
	d.ID, d.Name, d.Type, d.Disk = 2, "zvol0", ExtentDisk, "zvol/tank/lun0"
	c.Extents = []Extent{e, d}
	c.TargetExtents = []TargetExtent{{ID: 1, Target: 1, Extent: 1, LunID: 0}, {ID: 2, Target: 1, Extent: 2, LunID: 1}}
	return c
}

func TestValidConfigPasses(t *testing.T) {
	require.NoError(t, Validate(validConfig(), []string{"/srv/iscsi"}))
	require.NoError(t, Validate(EmptyConfig(), nil))
}

func TestValidationRules(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		kind   error
		want   string // the error's text
	}{
		{"version", func(c *Config) { c.Version = 3 }, ErrInvalid, "config: version: is 3; this build reads version 2"},
		{"basename", func(c *Config) { c.Global.Basename = "iqn.2026.bad" }, ErrInvalid, "global: basename: "},
		{"isns servers", func(c *Config) { c.Global.ISNSServers = []string{"10.0.0.1", "isns.example.com:3205", "[2001:db8::1]"} }, nil, ""},
		{"isns server bad", func(c *Config) { c.Global.ISNSServers = []string{"10.0.0.1", "10.0.0.2:99999"} }, ErrInvalid, "global: isns_servers[1]: isns: \"10.0.0.2:99999\": port"},
		{"alua on", func(c *Config) { c.Global.ALUA = true; c.Portals[0].ALUAState = ALUAStandby }, nil, ""},
		{"alua state without alua", func(c *Config) { c.Portals[0].ALUAState = ALUAStandby }, ErrInvalid, "portal 1: alua_state: STANDBY needs ALUA on"},
		{"alua state unknown", func(c *Config) { c.Global.ALUA = true; c.Portals[0].ALUAState = "passive" }, ErrInvalid, `portal 1: alua_state: "passive" is not`},
		{"remote portal", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthNone, ALUAState: ALUAActiveNonOptimized}
		}, nil, ""},
		{"remote portal without alua", func(c *Config) {
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthNone}
		}, ErrInvalid, "portal 2: remote: a remote portal is a target port group of another gateway and needs ALUA on"},
		{"remote portal with its gateway's address", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "10.0.0.2", Port: 3260}, {IP: "fd00::2", Port: 3260}}}
		}, nil, ""},
		{"remote portal on a wildcard", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "::", Port: 3260}}}
		}, ErrInvalid, "portal 2: listen[0].ip: :: is a wildcard"},
		{"remote portal on port 0", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "10.0.0.2", Port: 0}}}
		}, ErrInvalid, "portal 2: listen[0].port: a remote portal needs the port"},
		{"remote portal with discovery auth", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 2, Remote: true, DiscoveryAuthMethod: AuthCHAP, DiscoveryAuthGroup: intp(1)}
		}, ErrInvalid, "portal 2: discovery_authmethod: a remote portal serves no discovery here"},
		{"remote portal with a local tag", func(c *Config) {
			c.Global.ALUA = true
			c.Portals[1] = Portal{ID: 2, Tag: 1, Remote: true, DiscoveryAuthMethod: AuthNone}
		}, ErrExists, "portal 2: tag: 1 is also the tag of portal 1"},
		{"pool threshold", func(c *Config) { c.Global.PoolAvailThreshold = intp(100) }, ErrInvalid, "global: pool_avail_threshold: 100 is not a percentage"},
		{"duplicate id", func(c *Config) { c.Portals[1].ID = 1 }, ErrExists, "portal 1: id: is used by another portal"},
		{"zero id", func(c *Config) { c.Extents[0].ID = 0 }, ErrInvalid, "extent: id: must be a positive number"},
		{"portal tag range", func(c *Config) { c.Portals[0].Tag = 70000 }, ErrInvalid, "portal 1: tag: 70000 is not a portal group tag"},
		{"duplicate tag", func(c *Config) { c.Portals[1].Tag = 1 }, ErrExists, "portal 2: tag: 1 is also the tag of portal 1"},
		{"bad ip", func(c *Config) { c.Portals[0].Listen[0].IP = "10.0.0.300" }, ErrInvalid, `portal 1: listen[0].ip: "10.0.0.300" is not an IPv4 or IPv6 address`},
		{"port range", func(c *Config) { c.Portals[0].Listen[0].Port = 65536 }, ErrInvalid, "portal 1: listen[0].port: 65536 is not a TCP port"},
		{"port range high", func(c *Config) { c.Portals[0].Listen[0].Port = 65536 }, ErrInvalid, "listen[0].port: 65536"},
		{"no listen", func(c *Config) { c.Portals[0].Listen = nil }, ErrInvalid, "portal 1: listen: a portal needs at least one address"},
		{"same address twice", func(c *Config) { c.Portals[1].Listen[0].IP = "127.0.0.1" }, ErrExists, "portal 2: listen[0]: 127.0.0.1:3260 overlaps 127.0.0.1:3260 of portal 1"},
		{"wildcard overlaps", func(c *Config) { c.Portals[1].Listen[0].IP = "0.0.0.0" }, ErrExists, "overlaps 127.0.0.1:3260 of portal 1"},
		{"discovery method", func(c *Config) { c.Portals[0].DiscoveryAuthMethod = "KERBEROS" }, ErrInvalid, `portal 1: discovery_authmethod: "KERBEROS" is not NONE, CHAP or MUTUAL_CHAP`},
		{"discovery group missing", func(c *Config) {
			c.Portals[0].DiscoveryAuthMethod, c.Portals[0].DiscoveryAuthGroup = AuthCHAP, intp(9)
		}, ErrNotFound, "portal 1: discovery_authgroup: no auth group with tag 9"},
		{"discovery chap without group", func(c *Config) { c.Portals[0].DiscoveryAuthMethod = AuthCHAP }, ErrInvalid, "portal 1: discovery_authgroup: CHAP needs an auth group"},
		{"discovery group with NONE", func(c *Config) { c.Portals[0].DiscoveryAuthGroup = intp(1) }, ErrInvalid, "portal 1: discovery_authgroup: an auth group is only used with CHAP or MUTUAL_CHAP"},
		{"initiator name", func(c *Config) { c.Initiators[0].Initiators = []string{"iqn.1998-01.com.VMware:esx"} }, ErrInvalid, "initiator 1: initiators[0]: "},
		{"auth network", func(c *Config) { c.Initiators[0].AuthNetwork = []string{"192.168.1.0/33"} }, ErrInvalid, "initiator 1: auth_network[0]: "},
		{"short secret", func(c *Config) { c.Auths[0].Secret = "short" }, ErrInvalid, "auth 1 (chapuser): secret: must be 12 to 16 characters, not 5"},
		{"long secret", func(c *Config) { c.Auths[0].Secret = "abcdefghijklmnopq" }, ErrInvalid, "secret: must be 12 to 16 characters, not 17"},
		{"peer without secret", func(c *Config) { c.Auths[0].PeerSecret = "" }, ErrInvalid, "auth 1 (chapuser): peersecret: peeruser and peersecret go together"},
		{"peer secret equals secret", func(c *Config) { c.Auths[0].PeerSecret = c.Auths[0].Secret }, ErrInvalid, "peersecret: must differ from secret"},
		{"no user", func(c *Config) { c.Auths[0].User = "" }, ErrInvalid, "auth 1: user: a CHAP user name is required"},
		{"duplicate user in group", func(c *Config) {
			c.Auths = append(c.Auths, Auth{ID: 2, Tag: 1, User: "chapuser", Secret: "anothersecret1"})
		}, ErrExists, "auth 2 (chapuser): user: auth 1 of group 1 has the same user"},
		{"target name chars", func(c *Config) { c.Targets[0].Name = "Disk 0" }, ErrInvalid, `target 1 (Disk 0): name: "Disk 0": character 'D' is not allowed`},
		{"target name iqn", func(c *Config) { c.Targets[0].Name = "iqn.20-01.bad" }, ErrInvalid, "target 1 (iqn.20-01.bad): name:"},
		{"target eui", func(c *Config) { c.Targets[0].Name = "eui.02004567A425678D" }, nil, ""},
		{"target naa short", func(c *Config) { c.Targets[0].Name = "naa.52004567" }, ErrInvalid, "naa names are naa. followed by 16 or 32 hex digits"},
		{"duplicate target", func(c *Config) {
			t := c.Targets[0]
			t.ID, t.Name = 2, DefaultBasename+":disk0"
			c.Targets = append(c.Targets, t)
		}, ErrExists, "target 2 (iqn.2026-11.io.iscsikit:disk0): name: iqn.2026-11.io.iscsikit:disk0 is also the name of target 1"},
		{"target mode", func(c *Config) { c.Targets[0].Mode = "FC" }, ErrUnsupported, "target 1 (disk0): mode: Fibre Channel is not supported"},
		{"target state", func(c *Config) { c.Targets[0].State = "paused" }, ErrInvalid, `target 1 (disk0): state: "paused" is not ready or offline`},
		{"group portal missing", func(c *Config) { c.Targets[0].Groups[0].Portal = 9 }, ErrNotFound, "target 1 (disk0): groups[0].portal: no portal 9"},
		{"group initiator missing", func(c *Config) { c.Targets[0].Groups[0].Initiator = intp(9) }, ErrNotFound, "groups[0].initiator: no initiator group 9"},
		{"group auth missing", func(c *Config) {
			c.Targets[0].Groups[0].AuthMethod, c.Targets[0].Groups[0].Auth = AuthCHAP, intp(9)
		}, ErrNotFound, "groups[0].auth: no auth group with tag 9"},
		{"group chap without auth", func(c *Config) { c.Targets[0].Groups[0].AuthMethod = AuthCHAP }, ErrInvalid, "groups[0].auth: CHAP needs an auth group"},
		{"group auth with NONE", func(c *Config) { c.Targets[0].Groups[0].Auth = intp(1) }, ErrInvalid, "groups[0].auth: an auth group is only used with CHAP or MUTUAL_CHAP"},
		{"mutual without peer", func(c *Config) {
			c.Auths = append(c.Auths, Auth{ID: 2, Tag: 1, User: "other", Secret: "anothersecret1"})
			c.Targets[0].Groups[0].AuthMethod, c.Targets[0].Groups[0].Auth = AuthMutualCHAP, intp(1)
		}, ErrInvalid, `groups[0].auth: MUTUAL_CHAP needs peeruser and peersecret on every credential of auth group 1; auth 2 (user "other") has none`},
		{"long secret", func(c *Config) { c.Auths[0].Secret = "seventeen-chars-x" }, ErrInvalid, "auth 1 (chapuser): secret: must be 12 to 16 characters, not 17"},
		{"same peer secret", func(c *Config) { c.Auths[0].PeerSecret = c.Auths[0].Secret }, ErrInvalid, "auth 1 (chapuser): peersecret: must differ from secret"},
		{"per-initiator credential name", func(c *Config) { c.Auths[0].Initiator = "not-an-iqn" }, ErrInvalid, "auth 1 (chapuser): initiator: "},
		{"initiator group name", func(c *Config) { c.Initiators[0].Name = "bad name" }, ErrInvalid, "initiator 1 (bad name): name: must be letters"},
		{"initiator group name taken", func(c *Config) {
			c.Initiators[0].Name = "ag1"
			c.Initiators = append(c.Initiators, Initiator{ID: 2, Name: "ag1"})
		}, ErrExists, "initiator 2 (ag1): name: initiator group 1 has the same name"},
		{"lun masked to a group", func(c *Config) { c.TargetExtents[1].InitiatorGroup = intp(1) }, nil, ""},
		{"lun masked to a missing group", func(c *Config) { c.TargetExtents[1].InitiatorGroup = intp(7) }, ErrNotFound, "targetextent 2: initiator_group: no initiator group 7"},
		{"lun masked twice over", func(c *Config) {
			c.TargetExtents[1].InitiatorGroup = intp(1)
			c.TargetExtents[1].Initiator = "iqn.1998-01.com.vmware:esx1"
		}, ErrInvalid, "initiator_group: a LUN is masked to one initiator or to an initiator group, not both"},
		{"group mask collides with one initiator's", func(c *Config) {
			c.TargetExtents[1].InitiatorGroup = intp(1)
			c.TargetExtents = append(c.TargetExtents, TargetExtent{ID: 3, Target: 1, Extent: 1, LunID: 1, Initiator: "iqn.1998-01.com.vmware:esx1"})
		}, ErrExists, "LUN 1 of target 1 is already mapped for iqn.1998-01.com.vmware:esx1 by targetextent 2"},
		{"group mask under a general lun", func(c *Config) {
			c.TargetExtents = append(c.TargetExtents, TargetExtent{ID: 3, Target: 1, Extent: 2, LunID: 0, InitiatorGroup: intp(1)})
		}, ErrExists, "LUN 0 of target 1 is mapped for every initiator by targetextent 1"},
		{"target header digest", func(c *Config) { c.Targets[0].HeaderDigest = "MD5" }, ErrInvalid, `target 1 (disk0): header_digest: "MD5" is not Auto, CRC32C or None`},
		{"target data digest", func(c *Config) { c.Targets[0].DataDigest = DigestCRC32C }, nil, ""},
		{"target queue depth", func(c *Config) { c.Targets[0].QueueDepth = 64 }, nil, ""},
		{"target queue depth too deep", func(c *Config) { c.Targets[0].QueueDepth = 5000 }, ErrInvalid, "target 1 (disk0): queue_depth: 5000 is not from 1 to 4096"},
		{"group on every portal", func(c *Config) { c.Targets[0].Groups[0].Portal = EveryPortal }, nil, ""},
		{"every portal not alone", func(c *Config) {
			c.Targets[0].Groups = append(c.Targets[0].Groups, TargetGroup{Portal: EveryPortal, AuthMethod: AuthNone})
		}, ErrInvalid, "groups[1].portal: 0 (every portal) must be the target's only group"},
		{"group portal twice", func(c *Config) {
			c.Targets[0].Groups = append(c.Targets[0].Groups, TargetGroup{Portal: 1, AuthMethod: AuthNone})
		}, ErrExists, "groups[1].portal: portal 1 is in another group"},
		{"extent name", func(c *Config) { c.Extents[1].Name = "lun0" }, ErrExists, "extent 2 (lun0): name: extent 1 has the same name"},
		{"extent type", func(c *Config) { c.Extents[0].Type = "ZVOL" }, ErrInvalid, `extent 1 (lun0): type: "ZVOL" is not one of DISK, FILE`},
		{"blocksize", func(c *Config) { c.Extents[0].Blocksize = 1000 }, ErrInvalid, "extent 1 (lun0): blocksize: 1000 is not 512, 1024, 2048 or 4096"},
		{"relative path", func(c *Config) { c.Extents[0].Path = "lun0.img" }, ErrInvalid, `extent 1 (lun0): path: "lun0.img" is not an absolute file path`},
		{"path outside", func(c *Config) { c.Extents[0].Path = "/etc/shadow" }, ErrInvalid, "extent 1 (lun0): path: /etc/shadow is outside the allowed directories /srv/iscsi"},
		{"path escapes", func(c *Config) { c.Extents[0].Path = "/srv/iscsi/../../etc/passwd" }, ErrInvalid, "is outside the allowed directories"},
		{"filesize not blocks", func(c *Config) { c.Extents[0].Filesize = 1000 }, ErrInvalid, "extent 1 (lun0): filesize: 1000 is not a whole number of 512-byte blocks"},
		{"disk outside dev", func(c *Config) { c.Extents[1].Disk = "/etc/passwd" }, ErrInvalid, "extent 2 (zvol0): disk: /etc/passwd is neither under /dev"},
		{"same storage", func(c *Config) {
			c.Extents[1].Type, c.Extents[1].Disk, c.Extents[1].Path = ExtentFile, "", c.Extents[0].Path
		}, ErrExists, "extent 2 (zvol0): path: /srv/iscsi/lun0.img is also the storage of extent 1"},
		{"serial", func(c *Config) { c.Extents[0].Serial = "bad\x01" }, ErrInvalid, "extent 1 (lun0): serial: must be at most 252 printable ASCII characters"},
		{"naa", func(c *Config) { c.Extents[0].NAA = "0x1234" }, ErrInvalid, `extent 1 (lun0): naa: "0x1234" is not 0x followed by 16 or 32 hex digits`},
		{"naa type", func(c *Config) { c.Extents[0].NAA = "0x2000000000000001" }, ErrInvalid, "only type 5 (8 bytes) and type 6 (16 bytes) are accepted"},
		{"uuid path", func(c *Config) { c.Extents[0].UUID = "../config" }, ErrInvalid, `extent 1 (lun0): uuid: "../config" is not a UUID`},
		{"uuid upper", func(c *Config) { c.Extents[0].UUID = "0F7E0F4E-5B4A-4A4B-9F1E-2C1D3B4A5C6D" }, ErrInvalid, "extent 1 (lun0): uuid: "},
		{"uuid ok", func(c *Config) { c.Extents[0].UUID = "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d" }, nil, ""},
		{"uuid dup", func(c *Config) {
			c.Extents[0].UUID = "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"
			c.Extents[1].UUID = c.Extents[0].UUID
		}, ErrExists, "extent 2 (zvol0): uuid: extent 1 has the same UUID"},
		{"rpm", func(c *Config) { c.Extents[0].RPM = "3600" }, ErrInvalid, `extent 1 (lun0): rpm: "3600" is not UNKNOWN, SSD`},
		{"vendor", func(c *Config) { c.Extents[0].Vendor = "TOOLONGVENDOR" }, ErrInvalid, "extent 1 (lun0): vendor: must be at most 8"},
		{"avail threshold", func(c *Config) { c.Extents[0].AvailThreshold = intp(0) }, ErrInvalid, "extent 1 (lun0): avail_threshold: 0 is not a percentage"},
		{"lun range", func(c *Config) { c.TargetExtents[0].LunID = 1024 }, ErrInvalid, "targetextent 1: lunid: 1024 is not a LUN from 0 to 1023"},
		{"lun taken", func(c *Config) { c.TargetExtents[1].LunID = 0 }, ErrExists, "targetextent 2: lunid: LUN 0 of target 1 is already mapped by targetextent 1"},
		{"extent twice", func(c *Config) { c.TargetExtents[1].Extent = 1 }, ErrExists, "targetextent 2: extent: extent 1 is already mapped into target 1 by targetextent 1"},
		{"missing target", func(c *Config) { c.TargetExtents[0].Target = 5 }, ErrNotFound, "targetextent 1: target: no target 5"},
		{"missing extent", func(c *Config) { c.TargetExtents[0].Extent = 5 }, ErrNotFound, "targetextent 1: extent: no extent 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(c)
			err := Validate(c, []string{"/srv/iscsi"})
			if tt.kind == nil {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.ErrorIs(t, err, tt.kind)
			require.Contains(t, err.Error(), tt.want)
			var e *Error
			require.True(t, errors.As(err, &e))
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	c.Extents[0].Blocksize = 3
	c.Portals[0].Listen[0].Port = -1
	c.TargetExtents[0].LunID = -1
	err := Validate(c, nil)
	require.Error(t, err)
	for _, want := range []string{"extent 1 (lun0): blocksize", "portal 1: listen[0].port", "targetextent 1: lunid"} {
		require.Contains(t, err.Error(), want)
	}
}

func TestFullName(t *testing.T) {
	g := Global{Basename: "iqn.2005-10.org.freenas.ctl"}
	require.Equal(t, "iqn.2005-10.org.freenas.ctl:target0", g.FullName("target0"))
	require.Equal(t, "iqn.2026-11.com.example:x", g.FullName("iqn.2026-11.com.example:x"))
	require.Equal(t, "eui.02004567A425678D", g.FullName("eui.02004567A425678D"))
	require.NoError(t, checkTargetName(g, "target0"))
	require.Error(t, checkTargetName(g, ""))
}
