package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

// TestCinderDriverFreeNASv1 sends the requests of the OpenStack Cinder
// driver iXsystems wrote for FreeNAS's v1.0 API (iXsystems/cinder,
// driver/ixsystems/common.py before its move to v2.0), in its order and
// with its bodies as json.dumps writes them: the capacity poll, then
// create_volume (zvol, target, targetgroup on the URL the driver builds
// with "//", extent over "zvol/POOL/NAME", targettoextent), then
// extend_volume and delete_volume. The target in between shows its LUN
// to iscsi-ls.
func TestCinderDriverFreeNASv1(t *testing.T) {
	needTool(t, "iscsi-ls")
	state, pool := t.TempDir(), t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, portal, api, mgmt.Pool{Name: "tank", Type: "fs", Path: pool})
	// FreeNASServer.get_url: '%s://%s/api/%s' % (transport, hostname, 'v1.0').
	base := "http://" + api + "/api/v1.0"
	call := func(method, urn, body string, status int) map[string]any {
		t.Helper()
		got, b := post(t, method, base+urn, body)
		require.Equal(t, status, got, "%s %s: %s", method, urn, b)
		var v map[string]any
		if strings.HasPrefix(strings.TrimSpace(b), "{") {
			require.NoError(t, json.Unmarshal([]byte(b), &v), b)
		}
		return v
	}
	list := func(urn string) []map[string]any {
		t.Helper()
		got, b := post(t, "GET", base+urn, "")
		require.Equal(t, http.StatusOK, got, b)
		var v []map[string]any
		require.NoError(t, json.Unmarshal([]byte(b), &v), b)
		return v
	}

	// _update_volume_stats: GET /storage/volume/POOL/ and read avail
	// and used.
	stats := call("GET", "/storage/volume/tank/", "", 200)
	require.Greater(t, stats["avail"], float64(0))
	require.Contains(t, stats, "used")

	// create_volume of Cinder volume "volume-1f2e3d4c-...":
	// _create_volume, then _create_iscsitarget (_create_target with
	// _create_target_group, _create_extent, _target_to_extent).
	call("POST", "/storage/volume/tank/zvols/", `{"name": "volume-1f2e3d4c", "volsize": "1G"}`, 201)
	target := call("POST", "/services/iscsi/target/", `{"iscsi_target_name": "target-1f2e3d4c"}`, 201)
	tid := int(target["id"].(float64))
	// ixsystems_portal_id and ixsystems_initiator_id default to 1 (the
	// fresh daemon's portal and initiator group); REST_API_TARGET_GROUP
	// ends in "/" and the driver adds another.
	call("POST", "/services/iscsi/targetgroup//", `{"iscsi_target": `+strconv.Itoa(tid)+`, "iscsi_target_portalgroup": 1, "iscsi_target_initiatorgroup": 1}`, 201)
	extent := call("POST", "/services/iscsi/extent/", `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "target-1f2e3d4c", "iscsi_target_extent_disk": "zvol/tank/volume-1f2e3d4c"}`, 201)
	eid := int(extent["id"].(float64))
	call("POST", "/services/iscsi/targettoextent/", `{"iscsi_target": `+strconv.Itoa(tid)+`, "iscsi_extent": `+strconv.Itoa(eid)+`, "iscsi_lunid": 0}`, 201)

	// initialize_connection hands Nova the IQN ixsystems_iqn_prefix +
	// ":" + target name and the portal.
	out := lsAs(t, portal, "iqn.2026-11.com.example:nova1")
	require.Regexp(t, `Target:iqn\.2026-11\.io\.iscsikit:target-1f2e3d4c \S+\s+Lun:0\s+Type:DIRECT_ACCESS \(Size:(1G|1023M)\)`, out)
	require.FileExists(t, filepath.Join(pool, "volume-1f2e3d4c.img"))

	// extend_volume: PUT the zvol's new volsize.
	z := call("PUT", "/storage/volume/tank/zvols/volume-1f2e3d4c/", `{"volsize": "2G"}`, 202)
	require.Equal(t, float64(2<<30), z["volsize"])

	// delete_volume: _delete_iscsitarget looks the ids up by name in
	// three listings, deletes the target and the extent, then the zvol.
	findID := func(urn, field string, want any) int {
		for _, x := range list(urn) {
			if x[field] == want {
				return int(x["id"].(float64))
			}
		}
		return 0
	}
	require.Equal(t, tid, findID("/services/iscsi/target/", "iscsi_target_name", "target-1f2e3d4c"))
	// The driver compares iscsi_target with the target's name, finds
	// nothing, and its delete_target_to_extent does nothing anyway.
	require.Zero(t, findID("/services/iscsi/targettoextent/", "iscsi_target", "target-1f2e3d4c"))
	require.Equal(t, eid, findID("/services/iscsi/extent/", "iscsi_target_extent_name", "target-1f2e3d4c"))
	call("DELETE", "/services/iscsi/target/"+strconv.Itoa(tid)+"/", "", 204)
	call("DELETE", "/services/iscsi/extent/"+strconv.Itoa(eid)+"/", "", 204)
	call("DELETE", "/storage/volume/tank/zvols/volume-1f2e3d4c/", "", 204)

	require.NotContains(t, lsAs(t, portal, "iqn.2026-11.com.example:nova1"), "target-1f2e3d4c")
	_, err := os.Stat(filepath.Join(pool, "volume-1f2e3d4c.img"))
	require.ErrorIs(t, err, os.ErrNotExist, "the zvol's file is gone")
	require.Empty(t, list("/storage/volume/tank/zvols/"))
}

// TestStorLeverOutgoingUserAlone gives a StorLever target an outgoing
// user and no incoming one, as tgt allows: iscsi-ls logs in without CHAP
// and sees the LUN; once an incoming user comes, a login without CHAP is
// refused, one-way CHAP works, and mutual CHAP (libiscsi's target_user)
// gets the outgoing user's answer.
func TestStorLeverOutgoingUserAlone(t *testing.T) {
	needTool(t, "iscsi-ls")
	state := t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, portal, api)
	const iqn = "iqn.2014-09.com.example:out"
	base := "http://" + api + "/storlever/api/v1/san/tgt/target_list"
	must := func(status int, method, url, body string) {
		t.Helper()
		got, b := post(t, method, url, body)
		require.Equal(t, status, got, "%s %s: %s", method, url, b)
	}
	img := filepath.Join(state, "out.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 8<<20), 0o600))
	must(201, "POST", base, `{"iqn": "`+iqn+`"}`)
	must(201, "POST", base+"/"+iqn+"/lun_list", `{"lun": 1, "path": "`+img+`"}`)
	must(201, "POST", base+"/"+iqn+"/outgoinguser_list", `{"username": "tgtout", "password": "outsecret1234"}`)

	inq := needTool(t, "iscsi-inq")
	lun := portal + "/" + iqn + "/1"
	out, err := exec.Command(inq, "iscsi://"+lun).CombinedOutput()
	require.NoError(t, err, "no incoming user: no CHAP asked: %s", out)

	must(201, "POST", base+"/"+iqn+"/incominguser_list", `{"username": "tgtin", "password": "insecret12345"}`)
	out, err = exec.Command(inq, "iscsi://"+lun).CombinedOutput()
	require.Error(t, err, "an incoming user now guards the target: %s", out)
	out, err = exec.Command(inq, "iscsi://tgtin%insecret12345@"+lun).CombinedOutput()
	require.NoError(t, err, "one-way CHAP, as tgt allows with an outgoing user: %s", out)
	// Asked to, the target proves itself with the outgoing user.
	out, err = exec.Command(inq, "iscsi://tgtin%insecret12345@"+lun+"?target_user=tgtout&target_password=outsecret1234").CombinedOutput()
	require.NoError(t, err, "mutual CHAP: %s", out)
	out, err = exec.Command(inq, "iscsi://tgtin%insecret12345@"+lun+"?target_user=tgtout&target_password=wrongsecret12").CombinedOutput()
	require.Error(t, err, "the initiator refuses a target that does not know the outgoing secret: %s", out)
}

// TestCinderDriverFreeNASv1Of2016 sends the requests of the driver's
// first version (iXsystems/cinder driver/ixsystem/iscsi.py, 2016), which
// knew no targetgroup: zvol, then an extent over it, then a
// targettoextent into the fixed target 1 (here the daemon's default
// target, whose LUN 0 is taken, so the map gets LUN 1), and its delete:
// the extent found by name, then the map of the same id, then the zvol.
func TestCinderDriverFreeNASv1Of2016(t *testing.T) {
	needTool(t, "iscsi-ls")
	state, pool := t.TempDir(), t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, portal, api, mgmt.Pool{Name: "tank", Type: "fs", Path: pool})
	base := "http://" + api + "/api/v1.0"
	call := func(method, urn, body string, status int) string {
		t.Helper()
		got, b := post(t, method, base+urn, body)
		require.Equal(t, status, got, "%s %s: %s", method, urn, b)
		return b
	}
	call("POST", "/storage/volume/tank/zvols/", `{"name": "volume-5a6b7c8d", "volsize": "1G"}`, 201)
	var extent struct{ ID int }
	require.NoError(t, json.Unmarshal([]byte(call("POST", "/services/iscsi/extent/", `{"iscsi_target_extent_type": "Disk", "iscsi_target_extent_name": "target-5a6b7c8d", "iscsi_target_extent_disk": "zvol/tank/volume-5a6b7c8d"}`, 201)), &extent))
	var te struct {
		ID    int `json:"id"`
		LunID int `json:"iscsi_lunid"`
	}
	require.NoError(t, json.Unmarshal([]byte(call("POST", "/services/iscsi/targettoextent/", `{"iscsi_target": 1, "iscsi_extent": `+strconv.Itoa(extent.ID)+`}`, 201)), &te))
	require.Equal(t, 1, te.LunID)
	require.Regexp(t, `Target:iqn\.2026-11\.io\.iscsikit:default \S+\s+Lun:0.*\s+Lun:1\s+Type:DIRECT_ACCESS \(Size:(1G|1023M)\)`, lsAs(t, portal, "iqn.2026-11.com.example:nova1"))

	call("DELETE", "/services/iscsi/extent/"+strconv.Itoa(extent.ID)+"/", "", 204)
	// The driver then deletes targettoextent/<extent id>/, which the
	// extent's delete already took with it (404), and ignores the answer.
	call("DELETE", "/services/iscsi/targettoextent/"+strconv.Itoa(extent.ID)+"/", "", 404)
	call("DELETE", "/storage/volume/tank/zvols/volume-5a6b7c8d/", "", 204)
	require.NotRegexp(t, `Lun:1`, lsAs(t, portal, "iqn.2026-11.com.example:nova1"))
}
