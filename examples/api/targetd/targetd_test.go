package targetd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

type rpc struct {
	t   *testing.T
	url string
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func newRPC(t *testing.T) (*rpc, *mgmt.Manager, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := mgmt.EmptyConfig()
	cfg.Pools = []mgmt.Pool{{ID: 1, Name: "vg0", Type: mgmt.PoolFS, Path: dir}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, Options{}))
	t.Cleanup(srv.Close)
	return &rpc{t: t, url: srv.URL}, m, dir
}

// call sends method with named params (a JSON object text).
func (c *rpc) call(method, params string) (json.RawMessage, *rpcError) {
	c.t.Helper()
	body := `{"jsonrpc": "2.0", "id": 1, "method": "` + method + `"`
	if params != "" {
		body += `, "params": ` + params
	}
	resp, err := http.Post(c.url, "application/json", bytes.NewReader([]byte(body+"}")))
	require.NoError(c.t, err)
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&r))
	return r.Result, r.Error
}

func (c *rpc) ok(out any, method, params string) {
	c.t.Helper()
	res, e := c.call(method, params)
	require.Nil(c.t, e, "%s: %+v", method, e)
	if out != nil {
		require.NoError(c.t, json.Unmarshal(res, out))
	}
}

func (c *rpc) fails(code int, method, params string) string {
	c.t.Helper()
	_, e := c.call(method, params)
	require.NotNil(c.t, e, "%s should fail", method)
	require.Equal(c.t, code, e.Code, e.Message)
	return e.Message
}

func TestPoolsAndVolumes(t *testing.T) {
	c, _, dir := newRPC(t)
	var pools []map[string]any
	c.ok(&pools, "pool_list", "")
	require.Len(t, pools, 1)
	require.Equal(t, "vg0", pools[0]["name"])
	require.Equal(t, "fs", pools[0]["type"])
	require.Greater(t, pools[0]["size"], float64(0))

	c.ok(nil, "vol_create", `{"pool": "vg0", "name": "vol1", "size": 8388608}`)
	fi, err := os.Stat(filepath.Join(dir, "vol1.img"))
	require.NoError(t, err, "a volume is a sparse file in the pool")
	require.Equal(t, int64(8388608), fi.Size())
	var vols []volume
	c.ok(&vols, "vol_list", `{"pool": "vg0"}`)
	require.Len(t, vols, 1)
	require.Equal(t, "vol1", vols[0].Name)
	require.NotEmpty(t, vols[0].UUID)

	c.ok(nil, "vol_copy", `{"pool": "vg0", "vol_orig": "vol1", "vol_new": "vol2"}`)
	c.ok(&vols, "vol_list", `{"pool": "vg0"}`)
	require.Len(t, vols, 2)
	require.NotEqual(t, vols[0].UUID, vols[1].UUID)

	c.fails(-32602, "vol_create", `{"pool": "vg0", "name": "bad name", "size": 512}`)
	c.fails(-50, "vol_create", `{"pool": "vg0", "name": "vol1", "size": 512}`)
	c.fails(-110, "vol_create", `{"pool": "nope", "name": "v", "size": 512}`)
	c.fails(-32602, "vol_create", `{"pool": "vg0", "name": "v", "size": 1000}`)
	c.fails(-32602, "vol_create", `{"pool": "vg0", "name": "v", "size": "big"}`)
	c.fails(-32602, "vol_create", `{"pool": "vg0", "name": "v", "size": 512, "thin": true}`)
	c.fails(-32602, "vol_create", `["vg0", "v", 512]`)
	c.fails(-103, "vol_copy", `{"pool": "vg0", "vol_orig": "ghost", "vol_new": "vol3"}`)
	c.fails(-110, "vol_list", `{"pool": "nope"}`)

	c.ok(nil, "vol_destroy", `{"pool": "vg0", "name": "vol2"}`)
	_, err = os.Stat(filepath.Join(dir, "vol2.img"))
	require.True(t, os.IsNotExist(err), "destroying a volume destroys its data")
	c.fails(-103, "vol_destroy", `{"pool": "vg0", "name": "vol2"}`)
}

func TestExports(t *testing.T) {
	c, m, _ := newRPC(t)
	c.ok(nil, "vol_create", `{"pool": "vg0", "name": "vol1", "size": 1048576}`)
	const wwn = "iqn.2026-11.com.example:host1"
	c.ok(nil, "export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+wwn+`", "lun": 3}`)
	var exports []export
	c.ok(&exports, "export_list", "")
	require.Len(t, exports, 1)
	require.Equal(t, export{InitiatorWWN: wwn, LUN: 3, VolName: "vol1", VolSize: 1048576, VolUUID: exports[0].VolUUID, Pool: "vg0"}, exports[0])
	ts := m.Config(false).Targets
	require.Len(t, ts, 1, "the export target is created on first use")
	require.Equal(t, mgmt.EveryPortal, ts[0].Groups[0].Portal)

	c.fails(-50, "export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+wwn+`", "lun": 3}`)
	c.fails(-103, "export_create", `{"pool": "vg0", "vol": "ghost", "initiator_wwn": "`+wwn+`", "lun": 4}`)
	c.fails(-32602, "export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "not an iqn", "lun": 4}`)
	c.fails(-32602, "export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+wwn+`"}`)
	c.fails(-303, "vol_destroy", `{"pool": "vg0", "name": "vol1"}`)

	var inits []initiatorInfo
	c.ok(&inits, "initiator_list", "")
	require.Equal(t, []initiatorInfo{{InitID: wwn, InitType: "iscsi"}}, inits)

	c.ok(nil, "export_destroy", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+wwn+`"}`)
	c.fails(-151, "export_destroy", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "`+wwn+`"}`)
	c.ok(&exports, "export_list", "")
	require.Empty(t, exports)
}

func TestInitiatorSetAuth(t *testing.T) {
	c, m, _ := newRPC(t)
	const wwn = "iqn.2026-11.com.example:h"
	c.ok(nil, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "in_user": null, "in_pass": null, "out_user": null, "out_pass": null}`)
	require.Empty(t, m.Config(false).Targets, "clearing nothing makes nothing")

	c.ok(nil, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "in_user": "host", "in_pass": "hostsecret12", "out_user": "tgt", "out_pass": "tgtsecret123"}`)
	cfg := m.Config(true)
	require.Equal(t, mgmt.AuthCHAP, cfg.Targets[0].Groups[0].AuthMethod, "credentials turn CHAP on for the export target")
	require.Equal(t, []mgmt.Auth{{ID: 1, Tag: 1, User: "host", Secret: "hostsecret12", PeerUser: "tgt", PeerSecret: "tgtsecret123", Initiator: wwn}}, cfg.Auths)
	var inits []initiatorInfo
	c.ok(&inits, "initiator_list", "")
	require.Equal(t, []initiatorInfo{{InitID: wwn, InitType: "iscsi"}}, inits)

	c.fails(-32602, "initiator_set_auth", `{"in_user": "u"}`)
	c.fails(-32602, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "in_user": "u", "in_pass": null}`)
	c.fails(-32602, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "out_user": "u", "out_pass": "uuuuuuuuuuuu"}`)
	c.fails(-32602, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "in_user": "u", "in_pass": "short"}`)

	c.ok(nil, "initiator_set_auth", `{"initiator_wwn": "`+wwn+`", "in_user": null, "in_pass": null, "out_user": null, "out_pass": null}`)
	cfg = m.Config(true)
	require.Equal(t, mgmt.AuthNone, cfg.Targets[0].Groups[0].AuthMethod)
	require.Empty(t, cfg.Auths)
}

func TestAccessGroups(t *testing.T) {
	c, _, _ := newRPC(t)
	const i1, i2 = "iqn.2026-11.com.example:one", "iqn.2026-11.com.example:two"
	c.ok(nil, "access_group_create", `{"ag_name": "ag1", "init_id": "`+i1+`", "init_type": "iscsi"}`)
	c.fails(-50, "access_group_create", `{"ag_name": "ag1", "init_id": "`+i2+`", "init_type": "iscsi"}`)
	c.fails(-52, "access_group_create", `{"ag_name": "ag2", "init_id": "`+i1+`", "init_type": "iscsi"}`)
	c.fails(-153, "access_group_create", `{"ag_name": "ag2", "init_id": "`+i2+`", "init_type": "fc"}`)
	c.fails(-32602, "access_group_create", `{"ag_name": "bad name", "init_id": "`+i2+`", "init_type": "iscsi"}`)

	// init_add creates a missing group and refuses an initiator that is
	// in another one.
	c.ok(nil, "access_group_init_add", `{"ag_name": "ag2", "init_id": "`+i2+`", "init_type": "iscsi"}`)
	c.fails(-52, "access_group_init_add", `{"ag_name": "ag1", "init_id": "`+i2+`", "init_type": "iscsi"}`)
	var groups []accessGroup
	c.ok(&groups, "access_group_list", "")
	require.Equal(t, []accessGroup{{Name: "ag1", InitIDs: []string{i1}, InitType: "iscsi"}, {Name: "ag2", InitIDs: []string{i2}, InitType: "iscsi"}}, groups)
	var standalone []initiatorInfo
	c.ok(&standalone, "initiator_list", `{"standalone_only": true}`)
	require.Empty(t, standalone)

	// Maps: the next free LUN when none is given, a chosen one otherwise.
	c.ok(nil, "vol_create", `{"pool": "vg0", "name": "shared", "size": 1048576}`)
	c.ok(nil, "vol_create", `{"pool": "vg0", "name": "other", "size": 1048576}`)
	c.ok(nil, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "shared", "ag_name": "ag1"}`)
	c.ok(nil, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "other", "ag_name": "ag1", "h_lun_id": 7}`)
	c.ok(nil, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "shared", "ag_name": "ag2", "h_lun_id": 1}`)
	c.fails(-200, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "shared", "ag_name": "ghost"}`)
	c.fails(-32602, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "shared", "ag_name": "ag2", "h_lun_id": 300}`)
	c.fails(-50, "access_group_map_create", `{"pool_name": "vg0", "vol_name": "other", "ag_name": "ag2", "h_lun_id": 1}`)
	var maps []groupMap
	c.ok(&maps, "access_group_map_list", "")
	require.ElementsMatch(t, []groupMap{
		{AgName: "ag1", HLunID: 0, PoolName: "vg0", VolName: "shared"},
		{AgName: "ag1", HLunID: 7, PoolName: "vg0", VolName: "other"},
		{AgName: "ag2", HLunID: 1, PoolName: "vg0", VolName: "shared"},
	}, maps)

	c.ok(nil, "access_group_map_destroy", `{"pool_name": "vg0", "vol_name": "other", "ag_name": "ag1"}`)
	c.ok(nil, "access_group_map_destroy", `{"pool_name": "vg0", "vol_name": "other", "ag_name": "ag1"}`)
	c.ok(nil, "access_group_init_del", `{"ag_name": "ag2", "init_id": "`+i2+`", "init_type": "iscsi"}`)
	c.ok(nil, "access_group_init_del", `{"ag_name": "ghost", "init_id": "`+i2+`", "init_type": "iscsi"}`)
	c.ok(nil, "access_group_destroy", `{"ag_name": "ag1"}`)
	c.ok(nil, "access_group_destroy", `{"ag_name": "ag1"}`)
	c.ok(&maps, "access_group_map_list", "")
	require.Equal(t, []groupMap{{AgName: "ag2", HLunID: 1, PoolName: "vg0", VolName: "shared"}}, maps, "a destroyed group's maps go with it")
}

func TestOutsideTheBlockAPI(t *testing.T) {
	c, _, _ := newRPC(t)
	for _, m := range []string{"fs_list", "fs_create", "nfs_export_list", "nfs_export_add", "ss_list"} {
		c.fails(-32601, m, `{}`)
	}
}

// TestVolCopySize sends the targetd client's resizing copy (its
// vol_copy with size=8 MiB of a 4 MiB "test2"): the copy is the larger
// size, holds the original's data and zeroes after it. A size not above
// the original's is refused with -32602, as targetd's block.copy does.
func TestVolCopySize(t *testing.T) {
	c, _, dir := newRPC(t)
	c.ok(nil, "vol_create", `{"pool": "vg0", "name": "test2", "size": 4194304}`)
	data := bytes.Repeat([]byte("targetd!"), 4194304/8)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "test2.img"), data, 0o600))

	c.ok(nil, "vol_copy", `{"pool": "vg0", "vol_orig": "test2", "vol_new": "test2-copy-resize", "size": 8388608}`)
	var vols []volume
	c.ok(&vols, "vol_list", `{"pool": "vg0"}`)
	require.Len(t, vols, 2)
	require.Equal(t, "test2-copy-resize", vols[1].Name)
	require.Equal(t, int64(8388608), vols[1].Size)
	got, err := os.ReadFile(filepath.Join(dir, "test2-copy-resize.img"))
	require.NoError(t, err)
	require.Len(t, got, 8388608)
	require.Equal(t, data, got[:len(data)])
	require.Equal(t, make([]byte, 8388608-len(data)), got[len(data):])

	require.Contains(t, c.fails(-32602, "vol_copy", `{"pool": "vg0", "vol_orig": "test2", "vol_new": "small", "size": 4194304}`), "must be larger")
	c.fails(-32602, "vol_copy", `{"pool": "vg0", "vol_orig": "test2", "vol_new": "small", "size": 1048576}`)
	c.fails(-32602, "vol_copy", `{"pool": "vg0", "vol_orig": "test2", "vol_new": "odd", "size": 8388609}`)
	c.fails(-103, "vol_copy", `{"pool": "vg0", "vol_orig": "ghost", "vol_new": "g2", "size": 8388608}`)
	c.ok(&vols, "vol_list", `{"pool": "vg0"}`)
	require.Len(t, vols, 2, "refused copies leave nothing behind")
}
