package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/stretchr/testify/require"
)

// Secrets of the security configuration (12 to 16 characters).
const (
	aliceSecret = "alicesecret12"
	bobSecret   = "bobsecret1234"
	peerSecret  = "targetsecret12"
	discoSecret = "discosecret12"
	allowedIQN  = "iqn.2026-11.io.test:allowed"
	otherIQN    = "iqn.2026-11.io.test:other"
)

// securityConfig is a hand-written configuration exercising every
// security setting. Portal 1 has open discovery, portal 2 discovery CHAP.
// Targets on portal 1: chap (CHAP, auth group 1), mutual (MUTUAL_CHAP,
// auth group 2), byname (initiator group 1: allowedIQN only), bynet
// (initiator group 2: a network loopback is not in), bynetok (initiator
// group 3: loopback, IPv4 and IPv6). Target open2 is on portal 2.
func securityConfig(dir string, port1, port2 int) string {
	return fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.sec"},
  "portals": [
    {"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": %d}]},
    {"id": 2, "tag": 2, "discovery_authmethod": "CHAP", "discovery_authgroup": 3, "listen": [{"ip": "127.0.0.1", "port": %d}]}
  ],
  "initiators": [
    {"id": 1, "initiators": ["%s"], "auth_network": []},
    {"id": 2, "initiators": [], "auth_network": ["10.99.0.0/16", "fd00:99::/64"]},
    {"id": 3, "initiators": [], "auth_network": ["127.0.0.0/8", "::1"]}
  ],
  "auths": [
    {"id": 1, "tag": 1, "user": "alice", "secret": "%s"},
    {"id": 2, "tag": 2, "user": "bob", "secret": "%s", "peeruser": "tgt", "peersecret": "%s"},
    {"id": 3, "tag": 3, "user": "disco", "secret": "%s"}
  ],
  "targets": [
    {"id": 1, "name": "chap", "groups": [{"portal": 1, "authmethod": "CHAP", "auth": 1}]},
    {"id": 2, "name": "mutual", "groups": [{"portal": 1, "authmethod": "MUTUAL_CHAP", "auth": 2}]},
    {"id": 3, "name": "byname", "groups": [{"portal": 1, "initiator": 1}]},
    {"id": 4, "name": "bynet", "groups": [{"portal": 1, "initiator": 2}]},
    {"id": 5, "name": "bynetok", "groups": [{"portal": 1, "initiator": 3}]},
    {"id": 6, "name": "open2", "groups": [{"portal": 2}]}
  ],
  "extents": [
    {"id": 1, "name": "e1", "type": "FILE", "path": "%[8]s/e1.img", "filesize": 1048576},
    {"id": 2, "name": "e2", "type": "FILE", "path": "%[8]s/e2.img", "filesize": 1048576},
    {"id": 3, "name": "e3", "type": "FILE", "path": "%[8]s/e3.img", "filesize": 1048576},
    {"id": 4, "name": "e4", "type": "FILE", "path": "%[8]s/e4.img", "filesize": 1048576},
    {"id": 5, "name": "e5", "type": "FILE", "path": "%[8]s/e5.img", "filesize": 1048576},
    {"id": 6, "name": "e6", "type": "FILE", "path": "%[8]s/e6.img", "filesize": 1048576}
  ],
  "targetextents": [
    {"id": 1, "target": 1, "extent": 1, "lunid": 0},
    {"id": 2, "target": 2, "extent": 2, "lunid": 0},
    {"id": 3, "target": 3, "extent": 3, "lunid": 0},
    {"id": 4, "target": 4, "extent": 4, "lunid": 0},
    {"id": 5, "target": 5, "extent": 5, "lunid": 0},
    {"id": 6, "target": 6, "extent": 6, "lunid": 0}
  ]
}
`, port1, port2, allowedIQN, aliceSecret, bobSecret, peerSecret, discoSecret, dir)
}

// startSecureDaemon runs iscsid on securityConfig and returns both
// portals' addresses and the daemon's log.
func startSecureDaemon(t *testing.T) (addr1, addr2 string, logs *syncbuf.Buffer) {
	t.Helper()
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	addr1, addr2 = "127.0.0.1:"+strconv.Itoa(p1), "127.0.0.1:"+strconv.Itoa(p2)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(securityConfig(dir, p1, p2)), 0o600))
	logs = &syncbuf.Buffer{}
	t.Cleanup(func() {
		// Runs after the daemon has stopped (cleanups run last first).
		for _, s := range []string{aliceSecret, bobSecret, peerSecret, discoSecret, "wrongsecret12"} {
			require.NotContains(t, logs.String(), s, "a secret reached the log")
		}
	})
	runInProcess(t, config{stateDir: dir, portal: "127.0.0.1:1"}, slog.New(slog.NewTextHandler(logs, nil)), addr1, addr2)
	return addr1, addr2, logs
}

// runTool runs an initiator tool with a timeout and returns its output
// and whether it succeeded.
func runTool(t *testing.T, tool string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
	require.NoError(t, ctx.Err(), "%s %v hung", tool, args)
	return string(out), err == nil
}

func TestCHAPWithLibiscsi(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	addr, _, logs := startSecureDaemon(t)
	lun := func(cred, target, query string) string {
		return "iscsi://" + cred + addr + "/iqn.2026-11.io.sec:" + target + "/0" + query
	}
	tests := []struct {
		name, url string
		ok        bool
		output    string // expected in the tool's output
	}{
		{"CHAP, no credentials", lun("", "chap", ""), false, "Authentication failure"},
		{"CHAP, wrong secret", lun("alice%wrongsecret12@", "chap", ""), false, "Authentication failure"},
		{"CHAP, unknown user", lun("mallory%"+aliceSecret+"@", "chap", ""), false, "Authentication failure"},
		{"CHAP, right secret", lun("alice%"+aliceSecret+"@", "chap", ""), true, "Vendor:"},
		{"CHAP, another group's user", lun("bob%"+bobSecret+"@", "chap", ""), false, "Authentication failure"},
		{"mutual, right pair", lun("bob%"+bobSecret+"@", "mutual", "?target_user=tgt&target_password="+peerSecret), true, "Vendor:"},
		{"mutual, one-way only", lun("bob%"+bobSecret+"@", "mutual", ""), false, "Authentication failure"},
		{"mutual, target answers with another secret", lun("bob%"+bobSecret+"@", "mutual", "?target_user=tgt&target_password=wrongsecret12"), false, "Invalid CHAP_R"},
		{"open target, credentials offered", lun("alice%"+aliceSecret+"@", "bynetok", ""), true, "Vendor:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := runTool(t, inq, tc.url)
			require.Equal(t, tc.ok, ok, out+logs.String())
			require.Contains(t, out, tc.output)
		})
	}
	require.Contains(t, logs.String(), "status=0x0201")
	require.Contains(t, logs.String(), "initiator=iqn.")
	require.Contains(t, logs.String(), "remote=127.0.0.1:")
}

func TestAccessControlWithLibiscsi(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	ls := needTool(t, "iscsi-ls")
	addr, _, logs := startSecureDaemon(t)
	target := func(name string) string { return "iqn.2026-11.io.sec:" + name }
	tests := []struct {
		name, initiator, target string
		ok                      bool
	}{
		{"allowed IQN", allowedIQN, "byname", true},
		{"other IQN", otherIQN, "byname", false},
		{"network without loopback", allowedIQN, "bynet", false},
		{"network with loopback", otherIQN, "bynetok", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, ok := runTool(t, inq, "-i", tc.initiator, "iscsi://"+addr+"/"+target(tc.target)+"/0")
			require.Equal(t, tc.ok, ok, out)
			if !tc.ok {
				require.Contains(t, out, "Authorization failure")
			}
			out, ok = runTool(t, ls, "-i", tc.initiator, "iscsi://"+addr)
			require.True(t, ok, out)
			if tc.ok {
				require.Contains(t, out, "Target:"+target(tc.target)+" ")
			} else {
				require.NotContains(t, out, "Target:"+target(tc.target)+" ")
			}
		})
	}
	require.Contains(t, logs.String(), "status=0x0202")
	require.Contains(t, logs.String(), "initiator="+otherIQN)
}

func TestDiscoveryCHAPWithLibiscsi(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	_, addr2, _ := startSecureDaemon(t)
	out, ok := runTool(t, ls, "iscsi://"+addr2)
	require.False(t, ok, out)
	require.NotContains(t, out, "open2")
	out, ok = runTool(t, ls, "iscsi://disco%wrongsecret12@"+addr2)
	require.False(t, ok, out)
	out, ok = runTool(t, ls, "iscsi://disco%"+discoSecret+"@"+addr2)
	require.True(t, ok, out)
	require.Contains(t, out, "Target:iqn.2026-11.io.sec:open2 ")
	require.NotContains(t, out, "chap", "portal 2 lists only its own targets")
}

// TestIdleFloodWithLibiscsi holds 500 idle TCP connections open against
// the daemon's portal; iscsi-inq still logs in, well within 2 seconds.
func TestIdleFloodWithLibiscsi(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	addr, _, _ := startSecureDaemon(t)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 500 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		flood = append(flood, c)
	}
	start := time.Now()
	out, ok := runTool(t, inq, "-i", otherIQN, "iscsi://"+addr+"/iqn.2026-11.io.sec:bynetok/0")
	took := time.Since(start)
	require.True(t, ok, out)
	require.Contains(t, out, "Vendor:")
	require.Less(t, took, 2*time.Second, "login behind 500 idle connections")
	t.Logf("iscsi-inq behind 500 idle connections: %v", took)
}
