package fuzz

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/examples/api/freenas"
	"github.com/iscsikit/iscsikit/examples/api/nasshares"
	"github.com/iscsikit/iscsikit/examples/api/storlever"
	"github.com/iscsikit/iscsikit/examples/api/targetd"
	"github.com/iscsikit/iscsikit/examples/api/truenas"
	"github.com/iscsikit/iscsikit/mgmt"
)

// apiManager returns a Manager with one portal, one target and one pool
// (a directory under dir, emptied first), without a running server: the
// API fuzz targets exercise decoding, validation and persistence.
func apiManager(t *testing.T, dir string) *mgmt.Manager {
	t.Helper()
	pool := filepath.Join(dir, "pool")
	require.NoError(t, os.RemoveAll(pool))
	require.NoError(t, os.MkdirAll(pool, 0o700))
	cfg := mgmt.EmptyConfig()
	cfg.Portals = []mgmt.Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}}}
	cfg.Initiators = []mgmt.Initiator{{ID: 1, Initiators: []string{}, AuthNetwork: []string{}}}
	t0 := mgmt.NewTarget()
	t0.ID, t0.Name, t0.Groups = 1, "t0", []mgmt.TargetGroup{{Portal: 1, AuthMethod: mgmt.AuthNone}}
	cfg.Targets = []mgmt.Target{t0}
	cfg.Pools = []mgmt.Pool{{ID: 1, Name: "vg0", Type: mgmt.PoolFS, Path: pool}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg, AllowedDirs: []string{dir}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// serve runs one request against h and returns the recorded answer, or
// nil when path cannot be a request's target (a client could not send it).
func serve(h http.Handler, method, path string, body []byte) *httptest.ResponseRecorder {
	req, err := http.NewRequest(method, "http://127.0.0.1"+path, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// rpcCodes are the error codes a JSON-RPC front-end may answer a request
// with; -32603 (internal error) is not among them: bad input is never the
// server's fault.
var rpcCodes = map[int]bool{-32700: true, -32600: true, -32601: true, -32602: true, -32001: true,
	targetd.CodeInvalid: true, targetd.CodeNameConflict: true, targetd.CodeExistsInitiator: true, targetd.CodeNotFoundVolume: true,
	targetd.CodeInvalidPool: true, targetd.CodeNotFoundExport: true, targetd.CodeNoSupport: true,
	targetd.CodeNotFoundAccessGroup: true, targetd.CodeVolumeMasked: true, targetd.CodeNoFreeHostLUN: true}

// checkRPC requires a well-formed JSON-RPC 2.0 answer: one response (or a
// batch of them), each with exactly one of result and error, and an error
// code from rpcCodes.
func checkRPC(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code == http.StatusNoContent {
		return // notifications only
	}
	require.Equal(t, http.StatusOK, w.Code, w.Body.String())
	body := bytes.TrimSpace(w.Body.Bytes())
	var list []map[string]json.RawMessage
	if len(body) > 0 && body[0] == '[' {
		require.NoError(t, json.Unmarshal(body, &list))
	} else {
		var one map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(body, &one), string(body))
		list = append(list, one)
	}
	for _, r := range list {
		require.Equal(t, `"2.0"`, string(r["jsonrpc"]))
		_, hasResult := r["result"]
		rawErr, hasErr := r["error"]
		require.True(t, hasResult != hasErr, "exactly one of result and error: %s", body)
		if hasErr {
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal(rawErr, &e))
			require.True(t, rpcCodes[e.Code], "unexpected error code %d: %s", e.Code, e.Message)
			require.NotEmpty(t, e.Message)
		}
	}
}

// checkREST requires a REST answer that is not a server error and whose
// body, if any, is JSON.
func checkREST(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	require.NotEqual(t, http.StatusInternalServerError, w.Code, w.Body.String())
	if b := bytes.TrimSpace(w.Body.Bytes()); len(b) > 0 && w.Header().Get("Content-Type") == "application/json" {
		require.True(t, json.Valid(b), string(b))
	}
}

// FuzzTrueNASRPC sends arbitrary bodies to the seed 000 front-end.
func FuzzTrueNASRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc": "2.0", "id": 1, "method": "iscsi.portal.create", "params": [{"comment": "Default", "listen": [{"ip": "0.0.0.0", "port": 3261}]}]}`,
		`{"jsonrpc": "2.0", "id": 2, "method": "iscsi.target.query", "params": [[["id", "=", 1]], {"get": true}]}`,
		`{"jsonrpc": "2.0", "id": 3, "method": "iscsi.extent.create", "params": [{"name": "e", "type": "FILE", "path": "/tmp/x", "filesize": 1048576}]}`,
		`{"jsonrpc": "2.0", "id": 4, "method": "iscsi.target.update", "params": [1, {"alias": "a", "groups": [{"portal": 1}]}]}`,
		`[{"jsonrpc": "2.0", "method": "iscsi.global.config"}, {"jsonrpc": "2.0", "id": "x", "method": "iscsi.auth.create", "params": [{"tag": 1, "user": "u", "secret": "abcdefghijkl"}]}]`,
		`{"jsonrpc": "2.0", "id": 5, "method": "iscsi.target.query", "params": [[["OR", [["id", "=", 1], ["name", "~", "^t"]]]], {"order_by": ["-name"], "select": ["id"]}]}`,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		m := apiManager(t, dir)
		checkRPC(t, serve(truenas.Handler(m, nil), "POST", truenas.Path, body))
	})
}

// FuzzTargetdRPC sends arbitrary bodies to the seed 003 front-end.
func FuzzTargetdRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc": "2.0", "id": 1, "method": "vol_create", "params": {"pool": "vg0", "name": "v1", "size": 1048576}}`,
		`{"jsonrpc": "2.0", "id": 2, "method": "export_create", "params": {"pool": "vg0", "vol": "v1", "initiator_wwn": "iqn.2026-11.com.example:h", "lun": 1}}`,
		`{"jsonrpc": "2.0", "id": 3, "method": "access_group_map_create", "params": {"pool_name": "vg0", "vol_name": "v1", "ag_name": "ag", "h_lun_id": 3}}`,
		`{"jsonrpc": "2.0", "id": 4, "method": "initiator_set_auth", "params": {"initiator_wwn": "iqn.2026-11.com.example:h", "in_user": "u", "in_pass": "abcdefghijkl", "out_user": null, "out_pass": null}}`,
		`{"jsonrpc": "2.0", "id": 5, "method": "access_group_create", "params": {"ag_name": "ag", "init_id": "iqn.2026-11.com.example:h", "init_type": "iscsi"}}`,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		m := apiManager(t, dir)
		checkRPC(t, serve(targetd.Handler(m, targetd.Options{}), "POST", targetd.Path, body))
	})
}

// restMethods are the HTTP methods the REST fuzz target picks from.
var restMethods = []string{"GET", "POST", "PUT", "DELETE"}

// FuzzRESTAPIs sends arbitrary requests to the REST front-ends (seeds
// 001, 002 and 004): a dialect, a method, a path under its prefix and a
// body.
func FuzzRESTAPIs(f *testing.F) {
	f.Add(uint8(0), uint8(1), "extent/", []byte(`{"iscsi_target_extent_type": "File", "iscsi_target_extent_name": "e", "iscsi_target_extent_filesize": "10MB", "iscsi_target_extent_path": "/tmp/e"}`))
	f.Add(uint8(0), uint8(2), "target/1/", []byte(`{"iscsi_target_alias": "x", "iscsi_target_portalgroup": 1}`))
	f.Add(uint8(0), uint8(2), "globalconfiguration/", []byte(`{"iscsi_basename": "iqn.2011-03.org.example.istgt"}`))
	f.Add(uint8(1), uint8(1), "", []byte(`{"target": "s0", "size": "1MB", "volume": "vg0", "header-digest": true, "one-way-chap": {"enabled": true, "username": "u", "password": "abcdefghijkl"}}`))
	f.Add(uint8(1), uint8(2), "", []byte(`{"id": 1, "size": 2097152}`))
	f.Add(uint8(2), uint8(1), "target_list", []byte(`{"iqn": "iqn.2014-09.com.example:test"}`))
	f.Add(uint8(2), uint8(2), "target_list/iqn.2026-11.io.iscsikit:t0", []byte(`{"state": "offline", "initiator_addr_list": ["127.0.0.1"]}`))
	f.Add(uint8(2), uint8(2), "conf", []byte(`{"incomingdiscoveryuser": "test:abcdefghijkl"}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, dialect, method uint8, path string, body []byte) {
		if strings.ContainsAny(path, "#?") || len(path) > 512 {
			return // a query or fragment, not a path
		}
		m := apiManager(t, dir)
		var h http.Handler
		var prefix string
		switch dialect % 3 {
		case 0:
			h, prefix = freenas.Handler(m, freenas.SessionLimits{}, nil), freenas.Prefix
		case 1:
			h, prefix = nasshares.Handler(m, nil), nasshares.SharesPath
			if strings.HasPrefix(path, "service") {
				prefix, path = nasshares.ServicePath, ""
			}
		default:
			h, prefix = storlever.Handler(m, nil), storlever.Prefix
		}
		if w := serve(h, restMethods[int(method)%len(restMethods)], prefix+path, body); w != nil {
			checkREST(t, w)
		}
	})
}
