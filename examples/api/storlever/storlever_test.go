package storlever

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

const iqn = "iqn.2014-09.com.example:test"

type client struct {
	t    *testing.T
	base string
}

func newClient(t *testing.T) (*client, *mgmt.Manager) {
	t.Helper()
	cfg := mgmt.EmptyConfig()
	cfg.Portals = []mgmt.Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, nil))
	t.Cleanup(srv.Close)
	return &client{t: t, base: srv.URL}, m
}

// do sends a request to Prefix+path and returns the response and body.
func (c *client) do(method, path, body string) (*http.Response, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+Prefix+path, strings.NewReader(body))
	require.NoError(c.t, err)
	req.Header.Set("Content-Type", "application/json; charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return resp, string(b)
}

func (c *client) want(status int, method, path, body string) string {
	c.t.Helper()
	resp, got := c.do(method, path, body)
	require.Equal(c.t, status, resp.StatusCode, "%s %s: %s", method, path, got)
	return got
}

func (c *client) get(path string, out any) {
	c.t.Helper()
	require.NoError(c.t, json.Unmarshal([]byte(c.want(200, "GET", path, "")), out))
}

func TestTargets(t *testing.T) {
	c, m := newClient(t)
	resp, _ := c.do("POST", "target_list", `{"iqn":"`+iqn+`"}`)
	require.Equal(t, 201, resp.StatusCode)
	require.Equal(t, Prefix+"target_list/"+iqn, resp.Header.Get("Location"))
	var list []string
	c.get("target_list", &list)
	require.Equal(t, []string{iqn}, list)

	c.want(200, "PUT", "target_list/"+iqn, `{"state": "ready", "initiator_addr_list":["192.168.1.10"]}`)
	// The seed's example name has an underscore, which RFC 7143 §4.2.7.2
	// does not allow in an iSCSI name.
	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn, `{"initiator_name_list":["iqn.2014-09.com.example:test_initiator"]}`), "'_' is not allowed")
	c.want(200, "PUT", "target_list/"+iqn, `{"initiator_name_list":["iqn.2014-09.com.example:test-initiator"]}`)
	var info targetInfo
	c.get("target_list/"+iqn, &info)
	require.Equal(t, "ready", info.State)
	require.Equal(t, []string{"192.168.1.10"}, info.InitiatorAddrList)
	require.Equal(t, []string{"iqn.2014-09.com.example:test-initiator"}, info.InitiatorNameList)
	c.want(200, "PUT", "target_list/"+iqn, `{"state": "offline", "initiator_addr_list":["ALL"]}`)
	c.get("target_list/"+iqn, &info)
	require.Equal(t, "offline", info.State)
	require.Empty(t, info.InitiatorAddrList, "ALL is no restriction")
	require.Equal(t, mgmt.StateOffline, m.Config(false).Targets[0].State)

	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn, `{"state": "paused"}`), "state")
	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn, `{"initiator_addr_list":["300.1.1.1"]}`), "auth_network")
	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn, `{"colour":"red"}`), "colour")
	require.Contains(t, c.want(400, "POST", "target_list", `{"iqn":"not-an-iqn"}`), "iqn")
	require.Contains(t, c.want(409, "POST", "target_list", `{"iqn":"`+iqn+`"}`), "name")
	c.want(404, "GET", "target_list/iqn.2014-09.com.example:ghost", "")
	c.want(404, "PUT", "target_list/iqn.2014-09.com.example:ghost", `{"state": "ready"}`)

	c.want(200, "DELETE", "target_list/"+iqn, "")
	require.Empty(t, m.Config(false).Targets)
	require.Empty(t, m.Config(false).Initiators, "the target's lists go with it")
	c.want(404, "DELETE", "target_list/"+iqn, "")
}

func TestLUNs(t *testing.T) {
	c, m := newClient(t)
	c.want(201, "POST", "target_list", `{"iqn":"`+iqn+`"}`)
	img := filepath.Join(t.TempDir(), "test.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))

	resp, body := c.do("POST", "target_list/"+iqn+"/lun_list", `{"lun":1, "path":"`+img+`"}`)
	require.Equal(t, 201, resp.StatusCode, body)
	require.Equal(t, Prefix+"target_list/"+iqn+"/lun_list/1", resp.Header.Get("Location"))
	var lun lunConf
	c.get("target_list/"+iqn+"/lun_list/1", &lun)
	require.NotEmpty(t, lun.SCSIID, "an NAA is generated at create time")
	require.NotEmpty(t, lun.SCSISN, "a serial is generated at create time")
	require.Equal(t, lunConf{LUN: 1, Path: img, DeviceType: "disk", BSType: "rdwr", WriteCache: true, Online: true, SCSIID: lun.SCSIID, SCSISN: lun.SCSISN}, lun)

	c.want(200, "PUT", "target_list/"+iqn+"/lun_list/1", `{"readonly": true, "online":true}`)
	c.get("target_list/"+iqn+"/lun_list/1", &lun)
	require.True(t, lun.ReadOnly)
	require.True(t, m.Config(false).Extents[0].RO)
	c.want(200, "PUT", "target_list/"+iqn+"/lun_list/1", `{"scsi_sn": "SN0001", "write_cache": false}`)
	c.get("target_list/"+iqn+"/lun_list/1", &lun)
	require.Equal(t, "SN0001", lun.SCSISN)
	require.False(t, lun.WriteCache)
	var luns []lunConf
	c.get("target_list/"+iqn+"/lun_list", &luns)
	require.Len(t, luns, 1)
	var info targetInfo
	c.get("target_list/"+iqn, &info)
	require.Equal(t, []int{1}, info.LUNList)

	require.Contains(t, c.want(409, "POST", "target_list/"+iqn+"/lun_list", `{"lun":1, "path":"`+img+`"}`), "lun")
	require.Contains(t, c.want(400, "POST", "target_list/"+iqn+"/lun_list", `{"lun":0, "path":"`+img+`"}`), "lun")
	require.Contains(t, c.want(400, "POST", "target_list/"+iqn+"/lun_list", `{"lun":256, "path":"`+img+`"}`), "lun")
	require.Contains(t, c.want(501, "POST", "target_list/"+iqn+"/lun_list", `{"lun":2, "path":"`+img+`", "device_type": "tape"}`), "device_type")
	require.Contains(t, c.want(501, "POST", "target_list/"+iqn+"/lun_list", `{"lun":2, "path":"`+img+`", "bs_type": "aio"}`), "bs_type")
	require.Contains(t, c.want(501, "POST", "target_list/"+iqn+"/lun_list", `{"lun":2, "path":"`+img+`", "direct_map": true}`), "direct_map")
	require.Contains(t, c.want(400, "POST", "target_list/"+iqn+"/lun_list", `{"lun":2}`), "path")
	require.Contains(t, c.want(400, "POST", "target_list/"+iqn+"/lun_list", `{"lun":2, "path":"relative.img"}`), "path")
	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn+"/lun_list/1", `{"lun": 4}`), "lun")
	require.Contains(t, c.want(400, "PUT", "target_list/"+iqn+"/lun_list/1", `{"scsi_id": "not naa"}`), "scsi_id")
	c.want(404, "GET", "target_list/"+iqn+"/lun_list/7", "")
	c.want(404, "GET", "target_list/"+iqn+"/lun_list/x", "")

	c.want(200, "DELETE", "target_list/"+iqn+"/lun_list/1", "")
	require.Empty(t, m.Config(false).Extents, "the LUN's extent goes; its file stays")
	_, err := os.Stat(img)
	require.NoError(t, err)
	c.want(404, "DELETE", "target_list/"+iqn+"/lun_list/1", "")
}

func TestCHAPUsers(t *testing.T) {
	c, m := newClient(t)
	c.want(201, "POST", "target_list", `{"iqn":"`+iqn+`"}`)
	base := "target_list/" + iqn + "/"
	// An outgoing user alone, as tgt allows: kept, shown, and no
	// authentication asked of initiators until an incoming user comes.
	c.want(201, "POST", base+"outgoinguser_list", `{"username":"out", "password":"outsecret1234"}`)
	var names []string
	c.get(base+"outgoinguser_list", &names)
	require.Equal(t, []string{"out"}, names)
	c.get(base+"incominguser_list", &names)
	require.Empty(t, names)
	require.Equal(t, mgmt.AuthNone, m.Config(false).Targets[0].Groups[0].AuthMethod)
	require.Contains(t, c.want(409, "POST", base+"outgoinguser_list", `{"username":"out2", "password":"outsecret1234"}`), "allows one")
	c.want(200, "DELETE", base+"outgoinguser_list/out", "")
	require.Empty(t, m.Config(true).Auths)

	resp, body := c.do("POST", base+"incominguser_list", `{"username":"test", "password":"123456789012"}`)
	require.Equal(t, 201, resp.StatusCode, body)
	require.Equal(t, Prefix+base+"incominguser_list/test", resp.Header.Get("Location"))
	c.get(base+"incominguser_list", &names)
	require.Equal(t, []string{"test"}, names)
	require.Equal(t, mgmt.AuthCHAP, m.Config(false).Targets[0].Groups[0].AuthMethod)

	c.want(201, "POST", base+"outgoinguser_list", `{"username":"out", "password":"outsecret1234"}`)
	c.get(base+"outgoinguser_list", &names)
	require.Equal(t, []string{"out"}, names)
	require.Equal(t, mgmt.AuthCHAP, m.Config(false).Targets[0].Groups[0].AuthMethod, "tgt answers mutual CHAP when asked and does not require it")
	require.Contains(t, c.want(409, "POST", base+"outgoinguser_list", `{"username":"out2", "password":"outsecret1234"}`), "allows one")

	// The seed's six-character password is below the 12-character minimum.
	require.Contains(t, c.want(400, "PUT", base+"incominguser_list/test", `{"password": "123456"}`), "secret")
	c.want(200, "PUT", base+"incominguser_list/test", `{"password": "abcdefabcdef"}`)
	c.want(200, "PUT", base+"outgoinguser_list/out", `{"password": "abcdefabcdefg"}`)
	c.want(404, "PUT", base+"incominguser_list/ghost", `{"password": "abcdefabcdef"}`)

	_, body = c.do("GET", "target_list/"+iqn, "")
	require.NotContains(t, body, "abcdef", "passwords are never returned")

	// The last incoming user goes and the outgoing one stays; a new
	// incoming user joins it again.
	c.want(200, "DELETE", base+"incominguser_list/test", "")
	c.get(base+"outgoinguser_list", &names)
	require.Equal(t, []string{"out"}, names)
	require.Equal(t, mgmt.AuthNone, m.Config(false).Targets[0].Groups[0].AuthMethod)
	c.want(201, "POST", base+"incominguser_list", `{"username":"test", "password":"123456789012"}`)
	require.Equal(t, mgmt.AuthCHAP, m.Config(false).Targets[0].Groups[0].AuthMethod)
	require.Equal(t, "out", m.Config(false).Auths[0].PeerUser)
	require.Len(t, m.Config(true).Auths, 1)

	c.want(200, "DELETE", base+"outgoinguser_list/out", "")
	c.want(200, "DELETE", base+"incominguser_list/test", "")
	require.Equal(t, mgmt.AuthNone, m.Config(false).Targets[0].Groups[0].AuthMethod)
	require.Empty(t, m.Config(true).Auths)
	c.want(404, "DELETE", base+"incominguser_list/test", "")
}

func TestDiscoveryUsers(t *testing.T) {
	c, m := newClient(t)
	var conf map[string]string
	c.get("conf", &conf)
	require.Equal(t, map[string]string{"incomingdiscoveryuser": "", "outgoingdiscoveryuser": ""}, conf)

	c.want(200, "PUT", "conf", `{"incomingdiscoveryuser":"test:123456789012"}`)
	c.get("conf", &conf)
	require.Equal(t, "test", conf["incomingdiscoveryuser"], "the password is not shown")
	require.Equal(t, mgmt.AuthCHAP, m.Config(false).Portals[0].DiscoveryAuthMethod)
	c.want(200, "PUT", "conf", `{"outgoingdiscoveryuser":"back:210987654321"}`)
	require.Equal(t, mgmt.AuthCHAP, m.Config(false).Portals[0].DiscoveryAuthMethod)
	require.Equal(t, "back", m.Config(false).Auths[0].PeerUser)

	require.Contains(t, c.want(400, "PUT", "conf", `{"incomingdiscoveryuser":"nopassword"}`), "username:passwd")
	// The outgoing discovery user without the incoming one, as tgt
	// allows: kept and shown, discovery asks for nothing.
	c.want(200, "PUT", "conf", `{"incomingdiscoveryuser":""}`)
	c.get("conf", &conf)
	require.Equal(t, map[string]string{"incomingdiscoveryuser": "", "outgoingdiscoveryuser": "back"}, conf)
	require.Equal(t, mgmt.AuthNone, m.Config(false).Portals[0].DiscoveryAuthMethod)
	c.want(200, "PUT", "conf", `{"incomingdiscoveryuser":"", "outgoingdiscoveryuser":""}`)
	require.Equal(t, mgmt.AuthNone, m.Config(false).Portals[0].DiscoveryAuthMethod)
	require.Empty(t, m.Config(true).Auths)
	c.want(404, "GET", "nothing", "")
}
