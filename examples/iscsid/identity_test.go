package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// inquiry runs iscsi-inq for a VPD page of a LUN and returns its output.
func inquiry(t *testing.T, url string, page int) string {
	t.Helper()
	inq := needTool(t, "iscsi-inq")
	out, err := exec.Command(inq, "-e", "1", "-c", strconv.Itoa(page), url).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// identity is what iscsi-inq reports of a LUN: its serial (VPD 0x80) and
// its NAA designator (VPD 0x83).
func identity(t *testing.T, url string) (serial, naa string) {
	t.Helper()
	m := regexp.MustCompile(`Unit Serial Number:\s*\[?([^\]\n]*)`).FindStringSubmatch(inquiry(t, url, 0x80))
	require.NotNil(t, m, "no serial")
	// iscsi-inq prints a binary designator's bytes as they are, between
	// brackets: an NAA designator has 16 (type 6) or 8 (type 5).
	out := inquiry(t, url, 0x83)
	const mark = "Designator Type:(3) NAA\nDesignator:["
	i := strings.Index(out, mark)
	require.GreaterOrEqual(t, i, 0, "no NAA designator in\n%s", out)
	rest := out[i+len(mark):]
	for _, n := range []int{16, 8} {
		if len(rest) > n && rest[n] == ']' {
			return strings.TrimSpace(m[1]), hex.EncodeToString([]byte(rest[:n]))
		}
	}
	t.Fatalf("NAA designator of neither 8 nor 16 bytes in\n%s", out)
	return "", ""
}

// TestIdentitiesAreUniqueGivenAndKept: extents without serial or NAA
// get their own at the first load, saved into config.json; a configured
// NAA and serial are reported exactly; all of it survives a restart.
func TestIdentitiesAreUniqueGivenAndKept(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := freePort(t), freePort(t)
	cfg := twoTargets(dir, p1, p2)
	cfg = strings.Replace(cfg, `"name": "a0", `, `"name": "a0", "naa": "0x6001405fffeeddccbbaa998877665544", "serial": "GIVEN-a0", `, 1)
	addr := "127.0.0.1:" + strconv.Itoa(p1)
	d := startDaemonWithConfig(t, dir, cfg, addr)
	urls := []string{
		"iscsi://" + addr + "/iqn.2026-11.io.example:alpha/0",
		"iscsi://" + addr + "/iqn.2026-11.io.example:alpha/1",
		"iscsi://" + addr + "/iqn.2026-11.io.example:beta/0",
	}
	type id struct{ serial, naa string }
	read := func() []id {
		var ids []id
		for _, u := range urls {
			s, n := identity(t, u)
			ids = append(ids, id{s, n})
		}
		return ids
	}
	first := read()
	t.Logf("identities: %v", first)
	require.Equal(t, id{"GIVEN-a0", "6001405fffeeddccbbaa998877665544"}, first[0], "a configured identity reads back exactly")
	require.NotEqual(t, first[1].serial, first[2].serial)
	require.NotEqual(t, first[1].naa, first[2].naa)
	for _, x := range first[1:] {
		require.Len(t, x.naa, 32, "a generated NAA keeps all 128 bits")
		require.Equal(t, byte('6'), x.naa[0], "NAA IEEE Registered Extended")
	}

	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	var saved struct {
		Extents []struct{ Serial, NAA string }
	}
	require.NoError(t, json.Unmarshal(b, &saved))
	for i, e := range saved.Extents {
		require.Equal(t, first[i].serial, e.Serial, "the generated serial is saved")
		require.Equal(t, "0x"+first[i].naa, strings.ToLower(e.NAA), "the generated NAA is saved")
	}

	d.stop()
	runInProcess(t, config{stateDir: dir, portal: "127.0.0.1:1"}, nil, addr)
	require.Equal(t, first, read(), "identities survive a restart")
}
