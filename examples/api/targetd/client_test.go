package targetd

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestTargetdClientLibrary sends what the targetd-client Python library
// (targetd_client/client.py) sends, as requests' json= writes it: a
// 128-bit integer id from uuid4 that the answer must carry back digit for
// digit (the library raises otherwise), every parameter present (null
// where the caller gave None), vol_copy always with size, export_create
// after the export_list it reads to pick a free LUN.
func TestTargetdClientLibrary(t *testing.T) {
	c, _, _ := newRPC(t)
	ids := []string{"243567908722841069875327134570896473711", "1", "340282366920938463463374607431768211455"}
	n := 0
	request := func(method, params string) json.RawMessage {
		t.Helper()
		id := ids[n%len(ids)]
		n++
		body := `{"jsonrpc": "2.0", "id": ` + id + `, "method": "` + method + `", "params": ` + params + `}`
		resp, err := http.Post(c.url+Path, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var r struct {
			ID     json.RawMessage `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *rpcError       `json:"error"`
		}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		require.NoError(t, d.Decode(&r), string(raw))
		require.Equal(t, id, string(r.ID), "the id comes back as sent")
		require.Nil(t, r.Error, "%s: %s", method, raw)
		return r.Result
	}
	request("pool_list", `{}`)
	request("vol_create", `{"pool": "vg0", "name": "base", "size": 4194304}`)
	request("vol_copy", `{"pool": "vg0", "vol_orig": "base", "vol_new": "clone", "size": 8388608}`)
	require.Contains(t, string(request("vol_list", `{"pool": "vg0"}`)), `"size":8388608`)
	require.Equal(t, "[]", string(request("export_list", `{}`)))
	request("export_create", `{"pool": "vg0", "vol": "clone", "initiator_wwn": "iqn.2021-01.org.example:node1", "lun": 0}`)
	request("initiator_set_auth", `{"initiator_wwn": "iqn.2021-01.org.example:node1", "in_user": null, "in_pass": null, "out_user": null, "out_pass": null}`)
	request("initiator_list", `{"standalone_only": false}`)
	request("access_group_create", `{"ag_name": "nodes", "init_id": "iqn.2021-01.org.example:node2", "init_type": "iscsi"}`)
	request("access_group_map_create", `{"pool_name": "vg0", "vol_name": "base", "ag_name": "nodes", "h_lun_id": null}`)
	require.Contains(t, string(request("access_group_map_list", `{}`)), `"vol_name":"base"`)
	request("access_group_map_destroy", `{"pool_name": "vg0", "vol_name": "base", "ag_name": "nodes"}`)
	request("export_destroy", `{"pool": "vg0", "vol": "clone", "initiator_wwn": "iqn.2021-01.org.example:node1"}`)
	request("vol_destroy", `{"pool": "vg0", "name": "clone"}`)
}
