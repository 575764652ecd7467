package main

import (
	"io"
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

// startAPIDaemon runs iscsid on stateDir with a portal and the management
// API on the given loopback addresses, behind Basic auth user "admin".
func startAPIDaemon(t *testing.T, stateDir, portal, api string, pools ...mgmt.Pool) *daemon {
	t.Helper()
	c := config{stateDir: stateDir, portal: portal, api: apiConfig{addr: api, user: "admin", password: "s3cret-api"}, pools: pools}
	return runInProcess(t, c, nil, api)
}

// buildIscsictl builds the iscsictl example into a temporary directory.
func buildIscsictl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "iscsictl")
	out, err := exec.Command("go", "build", "-o", bin, "../iscsictl").CombinedOutput()
	require.NoError(t, err, string(out))
	return bin
}

func TestAPIConfigChecks(t *testing.T) {
	for _, tc := range []struct {
		c    apiConfig
		want string
	}{
		{apiConfig{}, ""},
		{apiConfig{addr: "127.0.0.1:8080"}, ""},
		{apiConfig{addr: "[::1]:8080"}, ""},
		{apiConfig{addr: "localhost:8080"}, ""},
		{apiConfig{addr: "0.0.0.0:8080"}, "--api-user and --api-password are required"},
		{apiConfig{addr: ":8080"}, "--api-user and --api-password are required"},
		{apiConfig{addr: "0.0.0.0:8080", user: "a", password: "b"}, ""},
		{apiConfig{addr: "127.0.0.1:8080", user: "a"}, "go together"},
		{apiConfig{addr: "127.0.0.1:8080", tlsCert: "c.pem"}, "--tls-cert and --tls-key go together"},
		{apiConfig{addr: "8080"}, "want host:port"},
	} {
		err := tc.c.check()
		if tc.want == "" {
			require.NoError(t, err, "%+v", tc.c)
		} else {
			require.ErrorContains(t, err, tc.want, "%+v", tc.c)
		}
	}
}

// TestSeed000SetupWithIscsictl runs seed 000's "Complete iSCSI Setup
// Example" step by step with iscsictl against a fresh daemon (a FILE
// extent in place of the zvol), checks the target with iscsi-ls, then
// restarts the daemon and finds everything still there.
func TestSeed000SetupWithIscsictl(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	ctl := buildIscsictl(t)
	state := t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	d := startAPIDaemon(t, state, portal, api)
	url := "http://" + api

	call := func(args ...string) (string, error) {
		cmd := exec.Command(ctl, append([]string{"--url", url, "call"}, args...)...)
		cmd.Env = append(os.Environ(), "ISCSICTL_USER=admin", "ISCSICTL_PASSWORD=s3cret-api")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := call(args...)
		require.NoError(t, err, "iscsictl call %v: %s", args, out)
		return out
	}

	// Without credentials the API answers 401, and iscsictl says so.
	resp, err := http.Post(url+"/api/current", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"iscsi.global.config"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
	unauth, err := exec.Command(ctl, "--url", url, "call", "iscsi.global.config").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(unauth), "401 Unauthorized")

	// The fresh daemon has portal 1 and initiator group 1 already (its
	// default target uses them), so the example's steps 2 and 3 add
	// portal 2 and initiator group 2; the later steps name 1 as the seed
	// does.
	must("iscsi.portal.create", `{"comment": "Default", "listen": [{"ip": "127.0.0.1", "port": `+strconv.Itoa(freePort(t))+`}]}`)
	must("iscsi.initiator.create", `{"comment": "Allow all", "initiators": [], "auth_network": []}`)
	out := must("iscsi.target.create", `{"name": "target0", "groups": [{"portal": 1, "initiator": 1, "authmethod": "NONE"}]}`)
	require.Contains(t, out, `"name": "target0"`)
	img := filepath.Join(state, "lun0.img")
	out = must("iscsi.extent.create", `{"name": "extent0", "type": "FILE", "path": "`+img+`", "filesize": 67108864}`)
	require.Contains(t, out, `"id": 2`)
	must("iscsi.targetextent.create", `{"target": 2, "extent": 2, "lunid": 0}`)

	// An error is one clear line and a non-zero exit.
	out, err = call("iscsi.target.create", `{"name": "target0"}`)
	require.Error(t, err)
	require.Equal(t, 1, strings.Count(strings.TrimSpace(out), "\n")+1, out)
	require.Contains(t, out, "EEXIST")
	out, err = call("iscsi.target.validate_name", "target1")
	require.NoError(t, err, out)
	require.Equal(t, "null", strings.TrimSpace(out))

	lsOut, err := exec.Command(ls, "-s", "iscsi://"+portal).CombinedOutput()
	require.NoError(t, err, string(lsOut))
	require.Contains(t, string(lsOut), "Target:iqn.2026-11.io.iscsikit:target0")
	require.Regexp(t, `(?s)target0.*Lun:0\s+Type:DIRECT_ACCESS \(Size:6[34]M\)`, string(lsOut))

	// After a restart everything made through the API is still there.
	d.stop()
	startAPIDaemon(t, state, portal, api)
	out = must("iscsi.targetextent.query", `[["target", "=", 2]]`, `{"get": true}`)
	require.Contains(t, out, `"extent": 2`)
	lsOut, err = exec.Command(ls, "-s", "iscsi://"+portal).CombinedOutput()
	require.NoError(t, err, string(lsOut))
	require.Contains(t, string(lsOut), "Target:iqn.2026-11.io.iscsikit:target0")
}

// post sends an authenticated request to the daemon's API and returns the
// status and body.
func post(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("admin", "s3cret-api")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// lsAs runs iscsi-ls -s on the portal as initiator name.
func lsAs(t *testing.T, portal, name string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, "iscsi-ls"), "-i", name, "-s", "iscsi://"+portal).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// TestTargetdExportWithIscsiLs makes a volume and exports it to one
// initiator through the targetd API: that initiator sees it as a LUN,
// another does not.
func TestTargetdExportWithIscsiLs(t *testing.T) {
	needTool(t, "iscsi-ls")
	state, pool := t.TempDir(), t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, portal, api, mgmt.Pool{Name: "vg0", Type: "fs", Path: pool})

	rpc := func(method, params string) string {
		t.Helper()
		status, body := post(t, "POST", "http://"+api+"/targetrpc", `{"jsonrpc": "2.0", "id": 1, "method": "`+method+`", "params": `+params+`}`)
		require.Equal(t, http.StatusOK, status, body)
		require.NotContains(t, body, `"error"`, body)
		return body
	}
	require.Contains(t, rpc("pool_list", `{}`), `"name":"vg0"`)
	rpc("vol_create", `{"pool": "vg0", "name": "vol1", "size": 33554432}`)
	const host = "iqn.2026-11.com.example:host1"
	rpc("export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+host+`", "lun": 2}`)

	out := lsAs(t, portal, host)
	require.Contains(t, out, "Target:iqn.2026-11.io.iscsikit:targetd")
	require.Regexp(t, `(?s)targetd.*Lun:2\s+Type:DIRECT_ACCESS \(Size:3[12]M\)`, out)
	require.NotRegexp(t, `(?s)targetd.*Lun:2`, lsAs(t, portal, "iqn.2026-11.com.example:other"), "the export is masked to its initiator")
}

// TestRESTFrontEndsWithIscsiLs makes one target through each REST API
// (seeds 001, 002 and 004) on one daemon, logs in to each with iscsi-ls,
// restarts the daemon and finds all three again.
func TestRESTFrontEndsWithIscsiLs(t *testing.T) {
	needTool(t, "iscsi-ls")
	state, pool := t.TempDir(), t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	start := func() func() {
		return startAPIDaemon(t, state, portal, api, mgmt.Pool{Name: "Volume_1", Type: "fs", Path: pool}).stop
	}
	stop := start()
	base := "http://" + api
	must := func(status int, method, path, body string) string {
		t.Helper()
		got, b := post(t, method, base+path, body)
		require.Equal(t, status, got, "%s %s: %s", method, path, b)
		return b
	}

	// Seed 001: extent, target on portal 1 and initiator group 1 (the
	// fresh daemon's), and the target-to-extent map.
	img := filepath.Join(state, "fn0.img")
	must(201, "POST", "/api/v1.0/services/iscsi/extent/", `{"iscsi_target_extent_type": "File", "iscsi_target_extent_name": "fn0", "iscsi_target_extent_filesize": "16MB", "iscsi_target_extent_path": "`+img+`"}`)
	must(201, "POST", "/api/v1.0/services/iscsi/target/", `{"iscsi_target_name": "freenas0", "iscsi_target_portalgroup": 1, "iscsi_target_initiatorgroup": 1}`)
	must(201, "POST", "/api/v1.0/services/iscsi/targettoextent/", `{"iscsi_target": 2, "iscsi_extent": 2}`)

	// Seed 002: a share with one-way CHAP and a required header digest
	// (libiscsi implements no data digest).
	must(201, "POST", "/index.php/iscsi_shares/api", `{"target": "share0", "size": "16MB", "volume": "Volume_1", "header-digest": true, "data-digest": false,
		"one-way-chap": {"enabled": true, "username": "nasuser", "password": "nassecret123"}, "mutual-chap": {"enabled": false, "username": "", "password": ""}}`)

	// Seed 004: a target by IQN with a LUN over an existing file.
	const slIQN = "iqn.2014-09.com.example:storlever0"
	slImg := filepath.Join(state, "sl0.img")
	require.NoError(t, os.WriteFile(slImg, make([]byte, 16<<20), 0o600))
	must(201, "POST", "/storlever/api/v1/san/tgt/target_list", `{"iqn": "`+slIQN+`"}`)
	must(200, "PUT", "/storlever/api/v1/san/tgt/target_list/"+slIQN, `{"state": "ready", "initiator_addr_list": ["127.0.0.1"]}`)
	must(201, "POST", "/storlever/api/v1/san/tgt/target_list/"+slIQN+"/lun_list", `{"lun": 1, "path": "`+slImg+`"}`)

	check := func() {
		t.Helper()
		// Discovery lists all three; the share's LUN needs CHAP, so the
		// others are looked at one by one.
		out, err := exec.Command(needTool(t, "iscsi-ls"), "iscsi://"+portal).CombinedOutput()
		require.NoError(t, err, string(out))
		for _, name := range []string{"iqn.2026-11.io.iscsikit:freenas0", "iqn.2026-11.io.iscsikit:share0", slIQN} {
			require.Contains(t, string(out), "Target:"+name)
		}
		rc16 := needTool(t, "iscsi-readcapacity16")
		for _, lun := range []string{"iqn.2026-11.io.iscsikit:freenas0/0", slIQN + "/1"} {
			b, err := exec.Command(rc16, "iscsi://"+portal+"/"+lun).CombinedOutput()
			require.NoError(t, err, string(b))
			require.Contains(t, string(b), "Total size:16777216", lun)
		}
		inq := needTool(t, "iscsi-inq")
		share := "iscsi://" + portal + "/iqn.2026-11.io.iscsikit:share0/0"
		b, err := exec.Command(inq, share).CombinedOutput()
		require.Error(t, err, "the share needs CHAP: %s", b)
		b, err = exec.Command(inq, "iscsi://nasuser%nassecret123@"+share[len("iscsi://"):]).CombinedOutput()
		require.NoError(t, err, string(b))
		require.Contains(t, string(b), "Peripheral Device Type")
	}
	check()
	stop()
	stop = start()
	defer stop()
	check()
}
