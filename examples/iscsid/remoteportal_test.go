package main

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSendTargetsListsRemotePortal: libiscsi's iscsi-ls, discovering
// through a gateway whose configuration knows the other gateway's portal
// (remote, with its address), lists the target at both portal groups'
// addresses with their tags (IPv6 in brackets); iscsid does not listen on
// the remote addresses.
func TestSendTargetsListsRemotePortal(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	dir := t.TempDir()
	port := freePort(t)
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example", "alua": true},
  "portals": [
    {"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": %d}]},
    {"id": 2, "tag": 2, "remote": true, "alua_state": "ACTIVE_NON_OPTIMIZED",
     "listen": [{"ip": "127.0.0.2", "port": 3811}, {"ip": "fd00::2", "port": 3812}]}
  ],
  "targets": [{"id": 1, "name": "ha", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "ha0", "type": "FILE", "path": "%s/ha0.img", "filesize": 4194304}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, port, dir)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	startDaemonWithConfig(t, dir, cfg, addr)

	out, err := exec.Command(ls, "iscsi://"+addr).CombinedOutput()
	require.NoError(t, err, string(out))
	t.Log(string(out))
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:ha Portal:"+addr+",1")
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:ha Portal:127.0.0.2:3811,2")
	require.Contains(t, string(out), "Target:iqn.2026-11.io.example:ha Portal:[fd00::2]:3812,2")
	_, err = net.DialTimeout("tcp", "127.0.0.2:3811", 5*time.Second)
	require.Error(t, err, "iscsid does not listen on the remote portal")
}
