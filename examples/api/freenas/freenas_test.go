package freenas

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

type client struct {
	t   *testing.T
	url string
}

func newClient(t *testing.T) (*client, *mgmt.Manager) {
	t.Helper()
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	limits := SessionLimits{FirstBurst: 65536, MaxBurst: 262144, MaxRecvData: 262144, MaxOutstandingR2T: 8,
		DefaultTime2Wait: 2, NopInInterval: 20, IOTimeout: 30, QueueDepth: 128}
	srv := httptest.NewServer(Handler(m, limits, nil))
	t.Cleanup(srv.Close)
	return &client{t: t, url: srv.URL + Prefix}, m
}

// do sends a request and returns the status and the decoded body.
func (c *client) do(method, path, body string) (int, any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url+path, strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	var v any
	if len(raw) > 0 {
		require.NoError(c.t, json.Unmarshal(raw, &v), string(raw))
	}
	return resp.StatusCode, v
}

// want sends a request, requires status and returns the body as an object.
func (c *client) want(status int, method, path, body string) map[string]any {
	c.t.Helper()
	got, v := c.do(method, path, body)
	require.Equal(c.t, status, got, "%s %s: %v", method, path, v)
	m, _ := v.(map[string]any)
	return m
}

// list sends a GET and returns the list.
func (c *client) list(path string) []any {
	c.t.Helper()
	got, v := c.do("GET", path, "")
	require.Equal(c.t, http.StatusOK, got, "%v", v)
	l, ok := v.([]any)
	require.True(c.t, ok, "%v", v)
	return l
}

// errorOn requires an error body naming field.
func errorOn(t *testing.T, body map[string]any, field, msg string) {
	t.Helper()
	msgs, ok := body[field].([]any)
	require.True(t, ok, "error names %s: %v", field, body)
	require.Contains(t, msgs[0], msg)
}

func TestGlobalConfiguration(t *testing.T) {
	c, m := newClient(t)
	g := c.want(200, "GET", "globalconfiguration/", "")
	require.Equal(t, mgmt.DefaultBasename, g["iscsi_basename"])
	require.Equal(t, "None", g["iscsi_discoveryauthmethod"])
	require.Equal(t, float64(262144), g["iscsi_maxburst"])
	require.Equal(t, float64(1), g["id"])

	g = c.want(202, "PUT", "globalconfiguration/", `{"iscsi_basename": "iqn.2011-03.org.example.istgt"}`)
	require.Equal(t, "iqn.2011-03.org.example.istgt", g["iscsi_basename"])
	require.Equal(t, "iqn.2011-03.org.example.istgt", m.Global().Basename)

	// The documented example: istgt's connections per session, stored
	// and in effect (each target negotiates MaxConnections up to it).
	require.Equal(t, float64(1), g["iscsi_maxconnect"])
	g = c.want(202, "PUT", "globalconfiguration/", `{"iscsi_maxconnect": 16}`)
	require.Equal(t, float64(16), g["iscsi_maxconnect"])
	require.Equal(t, float64(16), g["iscsi_maxconnect_in_effect"])
	require.Equal(t, 16, m.Global().MaxConnections)
	require.Equal(t, float64(16), c.want(200, "GET", "globalconfiguration/", "")["iscsi_maxconnect"])
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_maxconnect": 0}`), "iscsi_maxconnect", "not from 1 to 65535")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_maxconnect_in_effect": 4}`), "iscsi_maxconnect_in_effect", "follows iscsi_maxconnect")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_toggleluc": true}`), "iscsi_toggleluc", "logical unit controller")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_basename": "bad name"}`), "iscsi_basename", "")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_discoveryauthmethod": "Kerberos"}`), "iscsi_discoveryauthmethod", "is not")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_speed": 1}`), "iscsi_speed", "unknown field")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_basename": 7}`), "iscsi_basename", "want string")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `[1]`), "__all__", "JSON object")
	errorOn(t, c.want(400, "PUT", "globalconfiguration/", `{"iscsi_basename": `), "__all__", "")
}

func TestExtents(t *testing.T) {
	c, m := newClient(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "extent.img")
	e := c.want(201, "POST", "extent/", `{"iscsi_target_extent_type": "File", "iscsi_target_extent_name": "extent", "iscsi_target_extent_filesize": "10MB", "iscsi_target_extent_path": "`+path+`"}`)
	require.Equal(t, float64(1), e["id"])
	require.Equal(t, "10MB", e["iscsi_target_extent_filesize"])
	require.Equal(t, "", e["iscsi_target_extent_comment"])
	require.Equal(t, int64(10<<20), m.Config(false).Extents[0].Filesize)

	require.Len(t, c.list("extent/"), 1)
	e = c.want(202, "PUT", "extent/1/", `{"iscsi_target_extent_filesize": "20MB"}`)
	require.Equal(t, "20MB", e["iscsi_target_extent_filesize"])
	require.Equal(t, "extent", e["iscsi_target_extent_name"])
	require.Equal(t, "20MB", c.want(200, "GET", "extent/1/", "")["iscsi_target_extent_filesize"])

	errorOn(t, c.want(400, "POST", "extent/", `{"iscsi_target_extent_name": "e2", "iscsi_target_extent_filesize": "ten", "iscsi_target_extent_path": "`+path+`2"}`), "iscsi_target_extent_filesize", "not a size")
	errorOn(t, c.want(400, "POST", "extent/", `{"iscsi_target_extent_name": "e2", "iscsi_target_extent_type": "Tape", "iscsi_target_extent_path": "/x"}`), "iscsi_target_extent_type", "is not")
	errorOn(t, c.want(409, "POST", "extent/", `{"iscsi_target_extent_name": "extent", "iscsi_target_extent_filesize": "1MB", "iscsi_target_extent_path": "`+path+`3"}`), "iscsi_target_extent_name", "")
	errorOn(t, c.want(400, "POST", "extent/", `{"id": 5, "iscsi_target_extent_name": "e5"}`), "id", "assigned by the server")
	errorOn(t, c.want(400, "PUT", "extent/1/", `{"id": 2}`), "id", "cannot be changed")
	c.want(404, "PUT", "extent/9/", `{"iscsi_target_extent_comment": "x"}`)
	c.want(404, "GET", "extent/abc/", "")

	// 10 more extents: the default page is 30, offset and limit cut it.
	for i := range 10 {
		n := string(rune('a' + i))
		c.want(201, "POST", "extent/", `{"iscsi_target_extent_name": "p`+n+`", "iscsi_target_extent_filesize": "1MB", "iscsi_target_extent_path": "`+filepath.Join(dir, n)+`"}`)
	}
	require.Len(t, c.list("extent/"), 11)
	page := c.list("extent/?offset=2&limit=3")
	require.Len(t, page, 3)
	require.Equal(t, float64(3), page[0].(map[string]any)["id"])
	errorOn(t, c.want(400, "GET", "extent/?limit=-1", ""), "limit", "whole number")

	got, _ := c.do("DELETE", "extent/1/", "")
	require.Equal(t, 204, got)
	c.want(404, "DELETE", "extent/1/", "")
}

func TestAuthorizedInitiators(t *testing.T) {
	c, m := newClient(t)
	i := c.want(201, "POST", "authorizedinitiator/", `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_auth_network": "ALL"}`)
	require.Equal(t, "ALL", i["iscsi_target_initiator_initiators"])
	require.Equal(t, float64(1), i["iscsi_target_initiator_tag"])
	require.Empty(t, m.Config(false).Initiators[0].Initiators)

	i = c.want(202, "PUT", "authorizedinitiator/1/", `{"iscsi_target_initiator_auth_network": "192.168.3.0/24"}`)
	require.Equal(t, "192.168.3.0/24", i["iscsi_target_initiator_auth_network"])
	require.Equal(t, "ALL", i["iscsi_target_initiator_initiators"])
	c.want(202, "PUT", "authorizedinitiator/1/", `{"iscsi_target_initiator_initiators": "iqn.1998-01.com.vmware:a, iqn.1998-01.com.vmware:b"}`)
	require.Equal(t, []string{"iqn.1998-01.com.vmware:a", "iqn.1998-01.com.vmware:b"}, m.Config(false).Initiators[0].Initiators)
	require.Len(t, c.list("authorizedinitiator/"), 1)

	errorOn(t, c.want(400, "PUT", "authorizedinitiator/1/", `{"iscsi_target_initiator_auth_network": "300.0.0.0/8"}`), "iscsi_target_initiator_auth_network", "")
	errorOn(t, c.want(400, "PUT", "authorizedinitiator/1/", `{"iscsi_target_initiator_tag": 4}`), "iscsi_target_initiator_tag", "cannot be changed")
	errorOn(t, c.want(400, "POST", "authorizedinitiator/", `{"iscsi_target_initiator_tag": 4}`), "iscsi_target_initiator_tag", "assigned by the server")

	got, _ := c.do("DELETE", "authorizedinitiator/1/", "")
	require.Equal(t, 204, got)
}

func TestAuthCredentials(t *testing.T) {
	c, _ := newClient(t)
	// The seed's 6-character secrets are below the 12-character minimum.
	errorOn(t, c.want(400, "POST", "authcredential/", `{"iscsi_target_auth_secret": "secret", "iscsi_target_auth_peeruser": "peeruser", "iscsi_target_auth_peersecret": "peersecret", "iscsi_target_auth_user": "user", "iscsi_target_auth_tag": 1}`),
		"iscsi_target_auth_secret", "12 to 16")
	a := c.want(201, "POST", "authcredential/", `{"iscsi_target_auth_secret": "secretsecret", "iscsi_target_auth_peeruser": "peeruser", "iscsi_target_auth_peersecret": "peersecretxx", "iscsi_target_auth_user": "user", "iscsi_target_auth_tag": 1}`)
	require.Equal(t, "user", a["iscsi_target_auth_user"])
	require.NotContains(t, a, "iscsi_target_auth_secret", "secrets are never returned")
	require.NotContains(t, a, "iscsi_target_auth_peersecret")

	a = c.want(202, "PUT", "authcredential/1/", `{"iscsi_target_auth_peeruser": "myuser"}`)
	require.Equal(t, "myuser", a["iscsi_target_auth_peeruser"])
	list := c.list("authcredential/")
	require.Len(t, list, 1)
	require.NotContains(t, list[0], "iscsi_target_auth_secret")

	got, _ := c.do("DELETE", "authcredential/1/", "")
	require.Equal(t, 204, got)
}

func TestTargetsAndLUNs(t *testing.T) {
	c, m := newClient(t)
	_, err := m.CreatePortal(context.Background(), mgmt.Portal{DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}})
	require.NoError(t, err)
	c.want(201, "POST", "authorizedinitiator/", `{}`)

	tg := c.want(201, "POST", "target/", `{"iscsi_target_name": "target", "iscsi_target_portalgroup": 1, "iscsi_target_initiatorgroup": 1}`)
	require.Equal(t, "target", tg["iscsi_target_name"])
	require.Nil(t, tg["iscsi_target_alias"])
	require.Equal(t, "None", tg["iscsi_target_authtype"])
	require.Equal(t, "Auto", tg["iscsi_target_initialdigest"])
	require.Equal(t, float64(128), tg["iscsi_target_queue_depth"])
	require.Equal(t, "Disk", tg["iscsi_target_type"])

	tg = c.want(202, "PUT", "target/1/", `{"iscsi_target_alias": "Beta"}`)
	require.Equal(t, "Beta", tg["iscsi_target_alias"])
	// The documented example: the target's own queue depth (its sessions'
	// CmdSN window); 0 turns queuing off.
	tg = c.want(202, "PUT", "target/1/", `{"iscsi_target_queue_depth": 64}`)
	require.Equal(t, float64(64), tg["iscsi_target_queue_depth"])
	require.Equal(t, 64, m.Config(false).Targets[0].QueueDepth)
	tg = c.want(202, "PUT", "target/1/", `{"iscsi_target_queue_depth": 0}`)
	require.Equal(t, float64(1), tg["iscsi_target_queue_depth"])
	errorOn(t, c.want(400, "PUT", "target/1/", `{"iscsi_target_queue_depth": 300}`), "iscsi_target_queue_depth", "0 (queuing off) to 255")
	errorOn(t, c.want(400, "PUT", "target/1/", `{"iscsi_target_portalgroup": 5}`), "iscsi_target_portalgroup", "no portal 5")
	errorOn(t, c.want(400, "PUT", "target/1/", `{"iscsi_target_authtype": "CHAP", "iscsi_target_authgroup": 3}`), "iscsi_target_authgroup", "no auth group with tag 3")
	errorOn(t, c.want(400, "PUT", "target/1/", `{"iscsi_target_authtype": "Auto", "iscsi_target_authgroup": 3}`), "iscsi_target_authtype", "Auto")
	errorOn(t, c.want(409, "POST", "target/", `{"iscsi_target_name": "target", "iscsi_target_portalgroup": 1}`), "iscsi_target_name", "")
	require.Len(t, c.list("target/"), 1)

	// targettoextent gives the target a LUN; the target then shows the
	// LUN 0 extent's block size.
	dir := t.TempDir()
	c.want(201, "POST", "extent/", `{"iscsi_target_extent_name": "lun0", "iscsi_target_extent_filesize": "4MB", "iscsi_target_extent_path": "`+filepath.Join(dir, "lun0")+`"}`)
	te := c.want(201, "POST", "targettoextent/", `{"iscsi_target": 1, "iscsi_extent": 1}`)
	require.Equal(t, float64(0), te["iscsi_lunid"])
	require.Equal(t, float64(512), c.want(200, "GET", "target/1/", "")["iscsi_target_logical_blocksize"])
	errorOn(t, c.want(409, "POST", "targettoextent/", `{"iscsi_target": 1, "iscsi_extent": 1, "iscsi_lunid": 0}`), "iscsi_lunid", "")
	errorOn(t, c.want(400, "POST", "targettoextent/", `{"iscsi_target": 7, "iscsi_extent": 1}`), "iscsi_target", "")
	c.want(202, "PUT", "targettoextent/1/", `{"iscsi_lunid": 2}`)
	require.Equal(t, 2, m.Config(false).TargetExtents[0].LunID)

	got, _ := c.do("DELETE", "targettoextent/1/", "")
	require.Equal(t, 204, got)
	c.want(201, "POST", "targettoextent/", `{"iscsi_target": 1, "iscsi_extent": 1}`)
	// Deleting the target deletes its LUN maps, as FreeNAS's database
	// cascades them; the extent stays.
	got, _ = c.do("DELETE", "target/1/", "")
	require.Equal(t, 204, got)
	require.Empty(t, m.Config(false).TargetExtents)
	require.Len(t, m.Config(false).Extents, 1)
	c.want(404, "GET", "nonsense/", "")
}
