package nasshares

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

type client struct {
	t    *testing.T
	base string
}

func newClient(t *testing.T) (*client, *mgmt.Manager, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := mgmt.EmptyConfig()
	cfg.Portals = []mgmt.Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}}}
	cfg.Pools = []mgmt.Pool{{ID: 1, Name: "Volume_1", Type: mgmt.PoolFS, Path: dir}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, nil))
	t.Cleanup(srv.Close)
	return &client{t: t, base: srv.URL}, m, dir
}

func (c *client) do(method, path, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	require.NoError(c.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp.StatusCode, string(b)
}

// want requires status and decodes the body into out (when not nil).
func (c *client) want(status int, method, path, body string, out any) string {
	c.t.Helper()
	got, b := c.do(method, path, body)
	require.Equal(c.t, status, got, "%s %s: %s", method, path, b)
	if out != nil {
		require.NoError(c.t, json.Unmarshal([]byte(b), out), b)
	}
	return b
}

func TestShares(t *testing.T) {
	c, m, dir := newClient(t)
	var s share
	c.want(201, "POST", SharesPath, `{"target": "share1", "size": "64MB", "volume": "Volume_1", "header-digest": true, "data-digest": false,
		"one-way-chap": {"enabled": false, "username": "", "password": ""}, "mutual-chap": {"enabled": false, "username": "", "password": ""}}`, &s)
	require.Equal(t, share{ID: 1, Target: "share1", Size: "64MB", Volume: "Volume_1", HeaderDigest: true}, s)
	fi, err := os.Stat(filepath.Join(dir, "share1.img"))
	require.NoError(t, err)
	require.Equal(t, int64(64<<20), fi.Size())
	tg := m.Config(false).Targets[0]
	require.Equal(t, mgmt.DigestCRC32C, tg.HeaderDigest)
	require.Equal(t, mgmt.DigestNone, tg.DataDigest)
	require.Equal(t, mgmt.EveryPortal, tg.Groups[0].Portal)

	var list []share
	c.want(200, "GET", SharesPath, "", &list)
	require.Equal(t, []share{s}, list)

	// Edit: grow, turn CHAP on; passwords are never returned.
	body := c.want(200, "PUT", SharesPath, `{"id": 1, "size": 134217728, "data-digest": true,
		"one-way-chap": {"enabled": true, "username": "alice", "password": "alicesecret1"},
		"mutual-chap": {"enabled": true, "username": "nas", "password": "nassecret123"}}`, &s)
	require.NotContains(t, body, "secret")
	require.Equal(t, "128MB", string(s.Size))
	require.True(t, s.DataDigest)
	require.Equal(t, chap{Enabled: true, Username: "alice"}, s.OneWayCHAP)
	require.Equal(t, chap{Enabled: true, Username: "nas"}, s.MutualCHAP)
	cfg := m.Config(true)
	require.Equal(t, mgmt.AuthMutualCHAP, cfg.Targets[0].Groups[0].AuthMethod)
	require.Equal(t, "alicesecret1", cfg.Auths[0].Secret)
	// An edit that leaves the password out keeps it.
	c.want(200, "PUT", SharesPath, `{"id": 1, "header-digest": false}`, &s)
	require.Equal(t, "alicesecret1", m.Config(true).Auths[0].Secret)
	require.False(t, s.HeaderDigest)

	// Errors name the field.
	require.Contains(t, c.want(409, "POST", SharesPath, `{"target": "share1", "size": "1MB", "volume": "Volume_1"}`, nil), "target")
	require.Contains(t, c.want(404, "POST", SharesPath, `{"target": "share2", "size": "1MB", "volume": "Volume_9"}`, nil), "volume")
	require.Contains(t, c.want(400, "POST", SharesPath, `{"target": "share2", "size": "lots", "volume": "Volume_1"}`, nil), "size")
	require.Contains(t, c.want(400, "POST", SharesPath, `{"target": "share2", "size": "1MB"}`, nil), "volume")
	require.Contains(t, c.want(400, "POST", SharesPath, `{"target": "share2", "size": "1MB", "volume": "Volume_1", "colour": 1}`, nil), "colour")
	require.Contains(t, c.want(400, "POST", SharesPath, `{"target": "share2", "size": "1MB", "volume": "Volume_1", "mutual-chap": {"enabled": true, "username": "x", "password": "xxxxxxxxxxxx"}}`, nil), "mutual-chap")
	require.Contains(t, c.want(400, "POST", SharesPath, `{"target": "share2", "size": "1MB", "volume": "Volume_1", "one-way-chap": {"enabled": true, "username": "u", "password": "short"}}`, nil), "password")
	_, err = os.Stat(filepath.Join(dir, "share2.img"))
	require.True(t, os.IsNotExist(err), "a refused share leaves no volume behind")
	require.Contains(t, c.want(400, "PUT", SharesPath, `{"id": 1, "volume": "Volume_2"}`, nil), "volume")
	require.Contains(t, c.want(400, "PUT", SharesPath, `{"id": 1, "size": "1MB"}`, nil), "grow")
	require.Contains(t, c.want(400, "PUT", SharesPath, `{"size": "1MB"}`, nil), "id")
	c.want(404, "PUT", SharesPath, `{"id": 9, "size": "1MB"}`, nil)
	require.Contains(t, c.want(400, "PUT", SharesPath, `[1]`, nil), "object")

	// Delete answers the share and takes its volume.
	c.want(200, "DELETE", SharesPath, `{"id": 1}`, &s)
	require.Equal(t, "share1", s.Target)
	_, err = os.Stat(filepath.Join(dir, "share1.img"))
	require.True(t, os.IsNotExist(err))
	require.Empty(t, m.Config(true).Auths)
	c.want(404, "DELETE", SharesPath, `{"id": 1}`, nil)
}

func TestService(t *testing.T) {
	c, m, _ := newClient(t)
	var svc []service
	c.want(200, "GET", ServicePath, "", &svc)
	require.Equal(t, []service{{ID: 1, Enabled: true, Port: "3260"}}, svc)
	c.want(200, "PUT", ServicePath, `{"port": "3261"}`, &svc)
	require.Equal(t, "3261", svc[0].Port)
	require.Equal(t, 3261, m.Config(false).Portals[0].Listen[0].Port)

	require.Contains(t, c.want(400, "PUT", ServicePath, `{"port": "http"}`, nil), "port")
	require.Contains(t, c.want(501, "PUT", ServicePath, `{"enabled": false}`, nil), "enabled")
	require.Contains(t, c.want(501, "PUT", ServicePath, `{"isns": true, "isns-address": "127.0.0.1"}`, nil), "isns")
	require.Contains(t, c.want(400, "PUT", ServicePath, `{"isns": true}`, nil), "isns-address")
	require.Contains(t, c.want(400, "PUT", ServicePath, `{"id": 2}`, nil), "id")
}
