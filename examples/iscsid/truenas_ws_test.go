package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

// midclt is a sequential JSON-RPC WebSocket client, as midclt drives
// /api/current: core.set_options, core.subscribe("core.get_jobs") and
// then one call at a time.
type midclt struct {
	t  *testing.T
	c  *websocket.Conn
	id int
}

func dialMidclt(t *testing.T, url string) *midclt {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	require.NoError(t, err)
	t.Cleanup(func() { c.CloseNow() })
	return &midclt{t: t, c: c}
}

// call returns the result, or the error object.
func (m *midclt) call(method string, params ...any) (json.RawMessage, map[string]any) {
	m.t.Helper()
	if params == nil {
		params = []any{}
	}
	m.id++
	id := strconv.Itoa(m.id)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(m.t, m.c.Write(ctx, websocket.MessageText, b))
	for {
		_, data, err := m.c.Read(ctx)
		require.NoError(m.t, err)
		var r struct {
			ID     string          `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  map[string]any  `json:"error"`
		}
		require.NoError(m.t, json.Unmarshal(data, &r))
		if r.ID == id {
			return r.Result, r.Error
		}
	}
}

func (m *midclt) ok(out any, method string, params ...any) {
	m.t.Helper()
	res, e := m.call(method, params...)
	require.Nil(m.t, e, "%s: %v", method, e)
	if out != nil {
		require.NoError(m.t, json.Unmarshal(res, out))
	}
}

// TestSeed000OverWebSocket runs seed 000's "Complete iSCSI Setup Example"
// over the WebSocket as midclt -u ws://.../api/current -U admin -P ...
// would, then lists the target with iscsi-ls, stops and starts the
// service.
func TestSeed000OverWebSocket(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	state, pool := t.TempDir(), t.TempDir()
	portal := "127.0.0.1:" + strconv.Itoa(freePort(t))
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, "127.0.0.1:"+strconv.Itoa(freePort(t)), api, mgmt.Pool{Name: "tank", Type: mgmt.PoolFS, Path: pool})

	// HTTP POST keeps Basic auth; the WebSocket upgrade logs in in-band.
	resp, err := http.Post("http://"+api+"/api/current", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"core.ping"}`))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	c := dialMidclt(t, "ws://"+api+"/api/current")
	var opts map[string]any
	c.ok(&opts, "core.set_options", map[string]any{"legacy_jobs": false, "private_methods": false, "py_exceptions": false})
	_, e := c.call("core.subscribe", "core.get_jobs")
	require.EqualValues(t, 207, e["data"].(map[string]any)["error"], "ENOTAUTHENTICATED before login")
	var login map[string]any
	c.ok(&login, "auth.login_ex", map[string]any{"mechanism": "PASSWORD_PLAIN", "username": "admin", "password": "s3cret-api"})
	require.Equal(t, "SUCCESS", login["response_type"])
	var sub string
	c.ok(&sub, "core.subscribe", "core.get_jobs")

	host, portText, _ := strings.Cut(portal, ":")
	port, _ := strconv.Atoi(portText)
	var ds, p, ini, tgt, ext, te map[string]any
	c.ok(&ds, "pool.dataset.create", map[string]any{"name": "tank/iscsi/lun0", "type": "VOLUME", "volsize": 16 << 20})
	require.Equal(t, "tank/iscsi/lun0", ds["name"])
	c.ok(&p, "iscsi.portal.create", map[string]any{"comment": "Default", "listen": []any{map[string]any{"ip": host, "port": port}}})
	c.ok(&ini, "iscsi.initiator.create", map[string]any{"comment": "Allow all", "initiators": []any{}, "auth_network": []any{}})
	c.ok(&tgt, "iscsi.target.create", map[string]any{"name": "target0", "groups": []any{map[string]any{"portal": p["id"], "initiator": ini["id"], "authmethod": "NONE"}}})
	c.ok(&ext, "iscsi.extent.create", map[string]any{"name": "extent0", "type": "DISK", "disk": "zvol/tank/iscsi/lun0"})
	require.Equal(t, "zvol/tank/iscsi/lun0", ext["disk"])
	c.ok(&te, "iscsi.targetextent.create", map[string]any{"target": tgt["id"], "extent": ext["id"], "lunid": 0})
	var n int
	c.ok(&n, "service.update", "iscsitarget", map[string]any{"enable": true})
	var started bool
	c.ok(&started, "service.control", "START", "iscsitarget")
	require.True(t, started)

	iqn := mgmt.DefaultBasename + ":target0"
	out, err := exec.Command(ls, "-s", "iscsi://"+portal).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Target:"+iqn)
	require.Contains(t, string(out), "Lun:0")

	// The zvol is busy while its extent exists.
	_, e = c.call("pool.dataset.delete", "tank/iscsi/lun0")
	require.NotNil(t, e)

	// STOP closes the portal; START serves it again.
	var svc []map[string]any
	c.ok(nil, "service.control", "STOP", "iscsitarget")
	c.ok(&svc, "service.query", [][]any{{"service", "=", "iscsitarget"}})
	require.Equal(t, "STOPPED", svc[0]["state"])
	out, err = exec.Command(ls, "-s", "iscsi://"+portal).CombinedOutput()
	require.Error(t, err, string(out))
	c.ok(nil, "service.control", "START", "iscsitarget")
	out, err = exec.Command(ls, "-s", "iscsi://"+portal).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Lun:0")

	// Deleting the extent (a job, with force for its LUN map) gives the
	// volume back to its dataset, which can then be deleted.
	var done bool
	c.ok(&done, "iscsi.extent.delete", ext["id"], map[string]any{"remove": false, "force": true})
	require.True(t, done)
	var datasets, extents, after []map[string]any
	c.ok(&datasets, "pool.dataset.query", [][]any{{"id", "=", "tank/iscsi/lun0"}})
	require.Len(t, datasets, 1)
	c.ok(&extents, "iscsi.extent.query", [][]any{{"name", "=", "extent0"}})
	require.Empty(t, extents)
	c.ok(&done, "pool.dataset.delete", "tank/iscsi/lun0")
	c.ok(&after, "pool.dataset.query")
	require.Empty(t, after)
}

// TestIscsictlOverWebSocket drives iscsictl with a ws:// URL: in-band
// login with the password or an API key, and a job call answered with
// the job's result.
func TestIscsictlOverWebSocket(t *testing.T) {
	bin := buildIscsictl(t)
	state, pool := t.TempDir(), t.TempDir()
	api := "127.0.0.1:" + strconv.Itoa(freePort(t))
	startAPIDaemon(t, state, "127.0.0.1:"+strconv.Itoa(freePort(t)), api, mgmt.Pool{Name: "tank", Type: mgmt.PoolFS, Path: pool})
	run := func(args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"--url", "ws://" + api}, args...)...)
		cmd.Env = []string{"HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("--user", "admin", "--password", "s3cret-api", "call", "iscsi.global.config")
	require.NoError(t, err, out)
	require.Contains(t, out, mgmt.DefaultBasename)
	out, err = run("--user", "admin", "--password", "wrong", "call", "iscsi.global.config")
	require.Error(t, err)
	require.Contains(t, out, "login refused")
	out, err = run("call", "iscsi.global.config")
	require.Error(t, err)
	require.Contains(t, out, "Not authenticated")

	out, err = run("--user", "admin", "--password", "s3cret-api", "call", "api_key.create", `{"name": "ctl", "username": "admin"}`)
	require.NoError(t, err, out)
	var key struct {
		Key string `json:"key"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &key))
	out, err = run("--user", "admin", "--api-key", key.Key, "call", "pool.dataset.create", `{"name": "tank/ctl", "type": "VOLUME", "volsize": 1048576}`)
	require.NoError(t, err, out)
	require.Contains(t, out, `"name": "tank/ctl"`)
}
