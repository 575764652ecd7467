package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/isnsd"
)

// TestALUAAndISNSWithRealTools serves one target through three portals
// with ALUA on (active/optimized, active/non-optimized, standby) and
// isns_servers naming an isnsd on loopback: libiscsi's iscsi-inq sees
// TPGS 3 and the target port group designators, and is refused through
// the standby portal (libiscsi's TEST UNIT READY after login meets
// 04/0B); isnsadm lists the target with a portal group per portal; the
// daemon's shutdown deregisters it.
func TestALUAAndISNSWithRealTools(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	d := isnsd.Start(t, 30)
	dir := t.TempDir()
	p1, p2, p3 := freePort(t), freePort(t), freePort(t)
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example", "alua": true, "isns_servers": [%q]},
  "portals": [
    {"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": %d}]},
    {"id": 2, "tag": 2, "listen": [{"ip": "127.0.0.1", "port": %d}], "alua_state": "ACTIVE_NON_OPTIMIZED"},
    {"id": 3, "tag": 3, "listen": [{"ip": "127.0.0.1", "port": %d}], "alua_state": "STANDBY"}
  ],
  "targets": [{"id": 1, "name": "ha", "alias": "HA", "groups": [{"portal": 1}, {"portal": 2}, {"portal": 3}]}],
  "extents": [{"id": 1, "name": "ha0", "type": "FILE", "path": "%s/ha0.img", "filesize": 16777216}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}`, d.Addr(), p1, p2, p3, dir)
	daemon := startDaemonWithConfig(t, dir, cfg, "127.0.0.1:"+strconv.Itoa(p1))
	waitListening(t, "127.0.0.1:"+strconv.Itoa(p3), nil)
	url := func(port int) string {
		return "iscsi://127.0.0.1:" + strconv.Itoa(port) + "/iqn.2026-11.io.example:ha/0"
	}

	for _, p := range []int{p1, p2} {
		out, err := exec.Command(inq, url(p)).CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "TPGS:3")
	}
	out, err := exec.Command(inq, "-e", "1", "-c", "131", url(p2)).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Designator Type:(5) TARGET_PORT_GROUP")
	require.Contains(t, string(out), "Designator Type:(4) RELATIVE_TARGET_PORT")
	out, err = exec.Command(inq, url(p3)).CombinedOutput()
	require.Error(t, err, "the standby path: %s", out)
	require.Contains(t, string(out), "0x040b", "NOT READY, TARGET PORT IN STANDBY STATE")

	name := `"iqn.2026-11.io.example:ha"`
	isnsd.Eventually(t, 20*time.Second, "the target registered with isnsd", func() bool {
		return slices.Contains(d.Names(), "iqn.2026-11.io.example:ha")
	})
	var tags []string
	for _, o := range d.List("portal-groups") {
		if o["Portal group name"] == name {
			tags = append(tags, o["Portal group tag"])
		}
	}
	slices.Sort(tags)
	require.Equal(t, []string{"1", "2", "3"}, tags)

	daemon.stop()
	require.Empty(t, d.Names(), "iscsid deregisters when it shuts down")
}
