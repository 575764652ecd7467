package targetd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSeed003Replay calls every method seed 003 describes, in its order,
// with the parameter names it gives and its example values
// ('iqn.2000-04.com.example:someone-01', init_type 'iscsi'). The seed
// writes no literal request, so these are its descriptions made calls;
// the block half works, and the btrfs and NFS half (outside an iSCSI
// target) is refused with -32601 saying so. Volumes are made before the
// calls that need them.
func TestSeed003Replay(t *testing.T) {
	c, _, _ := newRPC(t)
	const someone = "iqn.2000-04.com.example:someone-01"
	for _, s := range []struct {
		method, params string
		code           int    // 0: success
		result         string // a part of the result or of the error message
	}{
		{"pool_list", `{}`, 0, `"type":"fs"`},
		{"vol_list", `{"pool": "vg0"}`, 0, `[]`},
		{"vol_create", `{"pool": "vg0", "name": "vol1", "size": 4194304}`, 0, ``},
		{"vol_create", `{"pool": "vg0", "name": "gone", "size": 4194304}`, 0, ``},
		{"vol_destroy", `{"pool": "vg0", "name": "gone"}`, 0, ``},
		{"vol_copy", `{"pool": "vg0", "vol_orig": "vol1", "vol_new": "vol2"}`, 0, ``},
		{"export_list", `{}`, 0, `[]`},
		{"export_create", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "` + someone + `", "lun": 0}`, 0, ``},
		{"export_list", `{}`, 0, `"vol_name":"vol1"`},
		{"export_destroy", `{"pool": "vg0", "vol": "vol1", "initiator_wwn": "` + someone + `"}`, 0, ``},
		{"initiator_set_auth", `{"initiator_wwn": "` + someone + `", "in_user": "someone", "in_pass": "insecret1234", "out_user": null, "out_pass": null}`, 0, ``},
		{"initiator_list", `{"standalone_only": false}`, 0, ``},
		{"access_group_list", `{}`, 0, `[]`},
		{"access_group_create", `{"ag_name": "ag1", "init_id": "iqn.2000-04.com.example:someone-02", "init_type": "iscsi"}`, 0, ``},
		{"access_group_destroy", `{"ag_name": "nonexistent"}`, 0, ``},
		{"access_group_init_add", `{"ag_name": "ag1", "init_id": "iqn.2000-04.com.example:someone-03", "init_type": "iscsi"}`, 0, ``},
		{"access_group_init_del", `{"ag_name": "ag1", "init_id": "iqn.2000-04.com.example:someone-03", "init_type": "iscsi"}`, 0, ``},
		{"access_group_map_list", `{}`, 0, `[]`},
		{"access_group_map_create", `{"pool_name": "vg0", "vol_name": "vol2", "ag_name": "ag1", "h_lun_id": 1}`, 0, ``},
		{"access_group_map_list", `{}`, 0, `"h_lun_id":1`},
		{"access_group_map_destroy", `{"pool_name": "vg0", "vol_name": "vol2", "ag_name": "ag1"}`, 0, ``},
		{"access_group_destroy", `{"ag_name": "ag1"}`, 0, ``},
		{"fs_list", `{}`, -32601, "fs_list: targetd's file-system and NFS calls are not served"},
		{"fs_destroy", `{"uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"}`, -32601, "not served"},
		{"fs_create", `{"pool_name": "vg0", "name": "fs1", "size_bytes": 0}`, -32601, "not served"},
		{"fs_clone", `{"fs_uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d", "dest_fs_name": "fs2", "snapshot_id": null}`, -32601, "not served"},
		{"ss_list", `{"fs_uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"}`, -32601, "not served"},
		{"fs_snapshot", `{"fs_uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d", "dest_ss_name": "ss1"}`, -32601, "not served"},
		{"fs_snapshot_delete", `{"fs_uuid": "0f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d", "ss_uuid": "1f7e0f4e-5b4a-4a4b-9f1e-2c1d3b4a5c6d"}`, -32601, "not served"},
		{"nfs_export_auth_list", `{}`, -32601, "not served"},
		{"nfs_export_list", `{}`, -32601, "not served"},
		{"nfs_export_add", `{"host": "*", "path": "/mnt/fs1", "options": ["no_root_squash", "sec=sys"]}`, -32601, "not served"},
		{"nfs_export_remove", `{"host": "*", "path": "/mnt/fs1"}`, -32601, "not served"},
	} {
		res, e := c.call(s.method, s.params)
		if s.code == 0 {
			require.Nil(t, e, "%s: %+v", s.method, e)
			require.Contains(t, string(res), s.result, s.method)
			continue
		}
		require.NotNil(t, e, "%s should fail", s.method)
		require.Equal(t, s.code, e.Code, "%s: %s", s.method, e.Message)
		require.Contains(t, e.Message, s.result, s.method)
	}
}
