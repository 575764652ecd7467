package freenas

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

// withPool gives m a directory pool named tank.
func withPool(t *testing.T, m *mgmt.Manager) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, m.Update(context.Background(), func(cfg *mgmt.Config) error {
		cfg.Pools = append(cfg.Pools, mgmt.Pool{ID: 1, Name: "tank", Type: mgmt.PoolFS, Path: dir})
		return nil
	}))
	return dir
}

func TestTargetGroups(t *testing.T) {
	c, m := newClient(t)
	c.want(201, "POST", "portal/", `{"iscsi_target_portal_ips": ["127.0.0.1:3299", "::1"], "iscsi_target_portal_comment": "lo"}`)
	c.want(201, "POST", "authorizedinitiator/", `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_auth_network": "ALL"}`)
	// The Cinder driver's target: a name only.
	tg := c.want(201, "POST", "target/", `{"iscsi_target_name": "target-1"}`)
	require.Nil(t, tg["iscsi_target_portalgroup"], "no group until targetgroup gives one")
	require.Empty(t, c.list("targetgroup/"))

	// Its targetgroup, on the driver's URL, with the ids as strings (as
	// cinder.conf's string options give them).
	g := c.want(201, "POST", "targetgroup//", `{"iscsi_target": 1, "iscsi_target_portalgroup": "1", "iscsi_target_initiatorgroup": "1"}`)
	require.Equal(t, float64(1000001), g["id"], "target 1, portal 1")
	require.Equal(t, float64(1), g["iscsi_target_portalgroup"])
	require.Equal(t, "None", g["iscsi_target_authtype"])
	require.Equal(t, "Auto", g["iscsi_target_initialdigest"])
	require.Equal(t, []mgmt.TargetGroup{{Portal: 1, Initiator: ptr(1), AuthMethod: mgmt.AuthNone}}, m.Config(false).Targets[0].Groups)
	require.Equal(t, float64(1), c.want(200, "GET", "target/1/", "")["iscsi_target_portalgroup"])

	// A second group, CHAP through auth group 1.
	c.want(201, "POST", "authcredential/", `{"iscsi_target_auth_tag": 1, "iscsi_target_auth_user": "u", "iscsi_target_auth_secret": "abcdefghijkl"}`)
	c.want(201, "POST", "portal/", `{"iscsi_target_portal_ips": ["127.0.0.2"]}`)
	g2 := c.want(201, "POST", "targetgroup/", `{"iscsi_target": 1, "iscsi_target_portalgroup": 2, "iscsi_target_authtype": "CHAP", "iscsi_target_authgroup": 1}`)
	require.Equal(t, float64(1000002), g2["id"], "target 1, portal 2")
	require.Len(t, c.list("targetgroup/"), 2)
	require.Equal(t, "CHAP", c.want(200, "GET", "targetgroup/1000002/", "")["iscsi_target_authtype"])
	errorOn(t, c.want(400, "PUT", "targetgroup/1000002/", `{"iscsi_target_authtype": "CHAP Mutual"}`), "iscsi_target_authgroup", "needs peeruser")
	c.want(202, "PUT", "authcredential/1/", `{"iscsi_target_auth_peeruser": "t", "iscsi_target_auth_peersecret": "mnopqrstuvwx"}`)
	g2 = c.want(202, "PUT", "targetgroup/1000002/", `{"iscsi_target_authtype": "CHAP Mutual"}`)
	require.Equal(t, "CHAP Mutual", g2["iscsi_target_authtype"])

	// Refusals name the field.
	errorOn(t, c.want(400, "POST", "targetgroup/", `{"iscsi_target": 9, "iscsi_target_portalgroup": 1}`), "iscsi_target", "target 9 does not exist")
	errorOn(t, c.want(400, "POST", "targetgroup/", `{"iscsi_target_portalgroup": 1}`), "iscsi_target", "required")
	errorOn(t, c.want(400, "POST", "targetgroup/", `{"iscsi_target": 1, "iscsi_target_portalgroup": 7}`), "iscsi_target_portalgroup", "")
	errorOn(t, c.want(400, "POST", "targetgroup/", `{"iscsi_target": 1, "iscsi_target_portalgroup": "x"}`), "iscsi_target_portalgroup", "want int")
	errorOn(t, c.want(400, "POST", "targetgroup/", `{"iscsi_target": 1, "iscsi_target_portalgroup": 1, "iscsi_target_initialdigest": "CHAP"}`), "iscsi_target_initialdigest", "")
	c.want(404, "GET", "targetgroup/1000009/", "")
	c.want(409, "DELETE", "portal/2/", "")

	got, _ := c.do("DELETE", "targetgroup/1000001/", "")
	require.Equal(t, 204, got)
	require.Equal(t, 2, m.Config(false).Targets[0].Groups[0].Portal, "the group after it moved up")

	// Portals.
	p := c.want(200, "GET", "portal/1/", "")
	require.Equal(t, []any{"127.0.0.1:3299", "[::1]:3260"}, p["iscsi_target_portal_ips"])
	require.Equal(t, "lo", p["iscsi_target_portal_comment"])
	p = c.want(202, "PUT", "portal/1/", `{"iscsi_target_portal_ips": ["127.0.0.3:3300"]}`)
	require.Equal(t, []any{"127.0.0.3:3300"}, p["iscsi_target_portal_ips"])
	errorOn(t, c.want(400, "PUT", "portal/1/", `{"iscsi_target_portal_ips": ["nowhere:3260"]}`), "iscsi_target_portal_ips", "not an address")
	got, _ = c.do("DELETE", "portal/1/", "")
	require.Equal(t, 204, got)
}

func ptr(n int) *int { return &n }

func TestZvolsAndTheirExtents(t *testing.T) {
	c, m := newClient(t)
	dir := withPool(t, m)
	c.url = c.url[:len(c.url)-len(Prefix)]
	zv := "/api/v1.0/storage/volume/tank/zvols/"
	ex := "/api/v1.0/services/iscsi/extent/"

	v := c.want(200, "GET", "/api/v1.0/storage/volume/tank/", "")
	require.Equal(t, "tank", v["name"])
	require.Len(t, c.list("/api/v1.0/storage/volume/"), 1)
	c.want(404, "GET", "/api/v1.0/storage/volume/nope/", "")

	z := c.want(201, "POST", zv, `{"name": "vol1", "volsize": "10GiB"}`)
	require.Equal(t, float64(10<<30), z["volsize"])
	c.want(201, "POST", zv, `{"name": "vol2", "volsize": 4194304, "sparse": true}`)
	require.Len(t, c.list(zv), 2)
	require.Equal(t, float64(4<<20), c.want(200, "GET", zv+"vol2/", "")["volsize"])
	errorOn(t, c.want(400, "POST", zv, `{"name": "vol3", "volsize": "ten"}`), "volsize", "not a size")
	errorOn(t, c.want(400, "POST", zv, `{"name": "vol3", "volsize": "1G", "sparse": false}`), "sparse", "sparse files")
	errorOn(t, c.want(400, "POST", zv, `{"name": "vol3", "volsize": "1G", "compression": "lz4"}`), "compression", "unknown field")
	errorOn(t, c.want(409, "POST", zv, `{"name": "vol1", "volsize": "1G"}`), "name", "")
	c.want(404, "POST", "/api/v1.0/storage/volume/nope/zvols/", `{"name": "vol3", "volsize": "1G"}`)
	c.want(404, "GET", zv+"vol9/", "")

	// An extent over a zvol is the zvol's own extent, under the name
	// the client gives.
	e := c.want(201, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "target-1", "iscsi_target_extent_disk": "zvol/tank/vol1"}`)
	require.Equal(t, "ZVOL", e["iscsi_target_extent_type"])
	require.Equal(t, "zvol/tank/vol1", e["iscsi_target_extent_disk"])
	require.Equal(t, filepath.Join(dir, "vol1.img"), e["iscsi_target_extent_path"])
	id := int(e["id"].(float64))
	require.Equal(t, float64(10<<30), c.want(200, "GET", zv+"vol1/", "")["volsize"], "the zvol keeps its name")
	errorOn(t, c.want(409, "POST", ex, `{"iscsi_target_extent_type": "ZVOL", "iscsi_target_extent_name": "again", "iscsi_target_extent_disk": "zvol/tank/vol1"}`), "iscsi_target_extent_disk", "already")
	errorOn(t, c.want(400, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "x", "iscsi_target_extent_disk": "zvol/tank/missing"}`), "iscsi_target_extent_disk", "no zvol missing")
	errorOn(t, c.want(400, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "x", "iscsi_target_extent_disk": "/dev/iscsikit-none"}`), "iscsi_target_extent_disk", "does not exist")
	errorOn(t, c.want(400, "POST", ex, `{"iscsi_target_extent_type": "ZVOL", "iscsi_target_extent_name": "x", "iscsi_target_extent_disk": "da1"}`), "iscsi_target_extent_disk", "not a zvol")
	errorOn(t, c.want(400, "POST", ex, `{"iscsi_target_extent_type": "Tape", "iscsi_target_extent_name": "x"}`), "iscsi_target_extent_type", "is not")
	errorOn(t, c.want(400, "PUT", ex+"1/", `{"iscsi_target_extent_filesize": "20GB"}`), "iscsi_target_extent_filesize", "zvol")
	require.Equal(t, "renamed", c.want(202, "PUT", ex+"1/", `{"iscsi_target_extent_name": "renamed"}`)["iscsi_target_extent_name"])

	// Its zvol grows with PUT volsize.
	require.Equal(t, float64(12<<30), c.want(202, "PUT", zv+"vol1/", `{"volsize": "12G"}`)["volsize"])

	// Deleting the extent gives the zvol back; deleting the zvol
	// removes its file.
	got, _ := c.do("DELETE", ex+"1/", "")
	require.Equal(t, 204, got)
	require.Equal(t, "vol1", m.Config(false).Extents[id-1].Name)
	got, _ = c.do("DELETE", zv+"vol1/", "")
	require.Equal(t, 204, got)
	require.NoFileExists(t, filepath.Join(dir, "vol1.img"))
	require.Len(t, c.list(zv), 1)

	// What FreeNAS v1.0 has beyond iSCSI and zvols is refused as such.
	errorOn(t, c.want(501, "POST", "/api/v1.0/storage/snapshot/", `{"dataset": "tank/vol2", "name": "s1"}`), "__all__", "no snapshots")
}

// TestZvolExtentNamedLikeItsZvol: an extent that took a zvol over stays
// its zvol's extent when it bears the zvol's name: a second extent on the
// zvol is refused, and deleting the extent gives the zvol back.
func TestZvolExtentNamedLikeItsZvol(t *testing.T) {
	c, m := newClient(t)
	withPool(t, m)
	c.url = c.url[:len(c.url)-len(Prefix)]
	zv := "/api/v1.0/storage/volume/tank/zvols/"
	ex := "/api/v1.0/services/iscsi/extent/"
	c.want(201, "POST", zv, `{"name": "vol1", "volsize": 4194304}`)
	c.want(201, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "vol1", "iscsi_target_extent_disk": "zvol/tank/vol1"}`)
	require.True(t, m.Config(false).Extents[0].Adopted)
	errorOn(t, c.want(409, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "thief", "iscsi_target_extent_disk": "zvol/tank/vol1"}`), "iscsi_target_extent_disk", "already")
	require.Equal(t, "vol1", m.Config(false).Extents[0].Name)
	got, _ := c.do("DELETE", ex+"1/", "")
	require.Equal(t, 204, got)
	require.False(t, m.Config(false).Extents[0].Adopted)
	c.want(201, "POST", ex, `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "next", "iscsi_target_extent_disk": "zvol/tank/vol1"}`)
}

// TestTargetGroupIDsStay: a target group's id names it, not its place in
// the target's list: deleting one leaves the others' ids as they were,
// and the deleted id names nothing.
func TestTargetGroupIDsStay(t *testing.T) {
	c, _ := newClient(t)
	for _, ip := range []string{"127.0.0.1:3299", "127.0.0.2:3299", "127.0.0.3:3299"} {
		c.want(201, "POST", "portal/", `{"iscsi_target_portal_ips": ["`+ip+`"]}`)
	}
	c.want(201, "POST", "target/", `{"iscsi_target_name": "target-1"}`)
	var ids []string
	for p := 1; p <= 3; p++ {
		g := c.want(201, "POST", "targetgroup/", fmt.Sprintf(`{"iscsi_target": 1, "iscsi_target_portalgroup": %d}`, p))
		ids = append(ids, strconv.Itoa(int(g["id"].(float64))))
	}
	got, _ := c.do("DELETE", "targetgroup/"+ids[1]+"/", "")
	require.Equal(t, 204, got)
	c.want(404, "GET", "targetgroup/"+ids[1]+"/", "")
	require.Equal(t, float64(3), c.want(200, "GET", "targetgroup/"+ids[2]+"/", "")["iscsi_target_portalgroup"])
	require.Equal(t, float64(1), c.want(200, "GET", "targetgroup/"+ids[0]+"/", "")["iscsi_target_portalgroup"])
	got, _ = c.do("DELETE", "targetgroup/"+ids[2]+"/", "")
	require.Equal(t, 204, got)
	require.Len(t, c.list("targetgroup/"), 1)
	require.Equal(t, float64(1), c.list("targetgroup/")[0].(map[string]any)["iscsi_target_portalgroup"])
}
