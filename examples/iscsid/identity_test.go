package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/scsi"
)

// inquiry runs iscsi-inq for a VPD page of a LUN and returns its output.
func inquiry(t *testing.T, url string, page int) string {
	t.Helper()
	inq := needTool(t, "iscsi-inq")
	out, err := exec.Command(inq, "-e", "1", "-c", strconv.Itoa(page), url).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

// identity is what a LUN reports: its serial (VPD 0x80) as iscsi-inq
// shows it, and its NAA designator (VPD 0x83) as the Go initiator reads it.
// iscsi-inq prints a binary designator's bytes as a C string between
// brackets, so it stops at the first zero byte, which a random NAA has
// in one LUN in twenty: what it shows must be the NAA's bytes up to there.
func identity(t *testing.T, url string) (serial, naa string) {
	t.Helper()
	m := regexp.MustCompile(`Unit Serial Number:\s*\[?([^\]\n]*)`).FindStringSubmatch(inquiry(t, url, 0x80))
	require.NotNil(t, m, "no serial")
	raw := naaDesignator(t, url)
	out := inquiry(t, url, 0x83)
	const mark = "Designator Type:(3) NAA\nDesignator:["
	i := strings.Index(out, mark)
	require.GreaterOrEqual(t, i, 0, "no NAA designator in\n%s", out)
	shown := raw
	if z := bytes.IndexByte(raw, 0); z >= 0 {
		shown = raw[:z]
	}
	require.True(t, strings.HasPrefix(out[i+len(mark):], string(shown)+"]"), "iscsi-inq shows another NAA than %x:\n%s", raw, out)
	return strings.TrimSpace(m[1]), hex.EncodeToString(raw)
}

// naaDesignator reads the NAA designator of the LUN at url (iscsi://HOST:PORT/IQN/LUN)
// from its VPD page 0x83 with the Go initiator.
func naaDesignator(t *testing.T, url string) []byte {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(url, "iscsi://"), "/")
	require.Len(t, parts, 3, url)
	lun, err := strconv.Atoi(parts[2])
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := initiator.Dial(ctx, parts[0], initiator.Options{TargetName: parts[1], InitiatorName: "iqn.2026-11.io.iscsikit:identity-reader"})
	require.NoError(t, err)
	defer c.Close()
	page, err := c.Inquiry(ctx, scsi.EncodeLUN(uint16(lun)), true, 0x83, 1024)
	if err != nil { // the power-on unit attention of a new nexus
		page, err = c.Inquiry(ctx, scsi.EncodeLUN(uint16(lun)), true, 0x83, 1024)
	}
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(page), 4)
	end := min(len(page), 4+int(binary.BigEndian.Uint16(page[2:4])))
	for d := page[4:end]; len(d) >= 4; {
		n := 4 + int(d[3])
		require.LessOrEqual(t, n, len(d), "designator overruns page 0x83: % x", page)
		if d[1]&0x0f == 3 && d[1]>>4&3 == 0 { // NAA, associated with the LU
			return d[4:n]
		}
		d = d[n:]
	}
	t.Fatalf("no NAA designator of the logical unit in % x", page)
	return nil
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
