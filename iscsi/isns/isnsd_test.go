package isns_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/iscsi/isns"
)

// isnsd is open-isns's iSNS server started on 127.0.0.1 for a test, with
// a registration period of period seconds.
type isnsd struct {
	t      *testing.T
	dir    string
	addr   string
	period int
	cmd    *exec.Cmd
}

// startISNSD starts isnsd, skipping the test when it is not installed
// (failing under ISCSIKIT_REQUIRE_INITIATORS=1).
func startISNSD(t *testing.T, period int) *isnsd {
	t.Helper()
	for _, tool := range []string{"isnsd", "isnsadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("ISCSIKIT_REQUIRE_INITIATORS") == "1" {
				t.Fatalf("%s is required (Debian packages open-isns-server, open-isns-utils): %v", tool, err)
			}
			t.Skipf("%s not installed (Debian packages open-isns-server, open-isns-utils)", tool)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	d := &isnsd{t: t, dir: t.TempDir(), addr: addr, period: period}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// start runs isnsd with an empty database and waits until it answers.
func (d *isnsd) start() {
	d.t.Helper()
	db := filepath.Join(d.dir, "db")
	require.NoError(d.t, os.RemoveAll(db))
	require.NoError(d.t, os.MkdirAll(db, 0o700))
	conf := fmt.Sprintf(`SourceName = isns.server.test
BindAddress = %s
ControlSocket = %s
PIDFile = %s
Database = %s
Security = 0
RegistrationPeriod = %d
DefaultDiscoveryDomain = 1
SLPRegister = 0
`, d.addr, filepath.Join(d.dir, "control"), filepath.Join(d.dir, "isnsd.pid"), db, d.period)
	require.NoError(d.t, os.WriteFile(filepath.Join(d.dir, "isnsd.conf"), []byte(conf), 0o600))
	d.cmd = exec.Command("isnsd", "-f", "-4", "-c", filepath.Join(d.dir, "isnsd.conf"))
	log, err := os.Create(filepath.Join(d.dir, "isnsd.log"))
	require.NoError(d.t, err)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	require.NoError(d.t, d.cmd.Start())
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", d.addr)
		if err == nil {
			c.Close()
			return
		}
		require.True(d.t, time.Now().Before(deadline), "isnsd does not answer on %s", d.addr)
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills isnsd.
func (d *isnsd) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// list runs isnsadm --local --list kind (entities, nodes, portals,
// portal-groups, dds) and returns the objects it prints.
func (d *isnsd) list(kind string) []object { return d.listAs("isns.admin.test", "--list "+kind) }

// listAs is list with isnsadm naming itself source: a storage node sees
// the discovery domains it is a member of.
func (d *isnsd) listAs(source, kind string) []object {
	d.t.Helper()
	conf := filepath.Join(d.dir, "isnsadm-"+source+".conf")
	adm := fmt.Sprintf("SourceName = %s\nServerAddress = %s\nControlSocket = %s\nSecurity = 0\n", source, d.addr, filepath.Join(d.dir, "control"))
	require.NoError(d.t, os.WriteFile(conf, []byte(adm), 0o600))
	cmd := exec.Command("isnsadm", append([]string{"-c", conf, "--local"}, strings.Fields(kind)...)...)
	out, err := cmd.CombinedOutput()
	require.NoError(d.t, err, "isnsadm: %s", out)
	return parseObjects(string(out))
}

// names returns the iSCSI names of the storage nodes isnsd holds.
func (d *isnsd) names() []string {
	var out []string
	for _, o := range d.list("nodes") {
		out = append(out, strings.Trim(o["iSCSI name"], `"`))
	}
	return out
}

// eventually waits for cond, with a generous deadline.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClientAgainstISNSD(t *testing.T) {
	d := startISNSD(t, 30)
	c, err := isns.NewClient(isns.Options{Servers: []string{d.addr}, EntityID: "iscsikit.test"})
	require.NoError(t, err)
	defer c.Close(context.Background())

	p1 := isns.Portal{Addr: netip.MustParseAddrPort("127.0.0.1:3260"), Tag: 1}
	p2 := isns.Portal{Addr: netip.MustParseAddrPort("0.0.0.0:3261"), Tag: 2}
	a := isns.Target{Name: "iqn.2026-11.io.iscsikit:a", Alias: "Alpha"}
	b := isns.Target{Name: "iqn.2026-11.io.iscsikit:b", PortalGroups: []uint16{2}}
	c.Update(isns.Registration{Targets: []isns.Target{a, b}, Portals: []isns.Portal{p1, p2}})

	has := func(names ...string) func() bool {
		return func() bool {
			got := d.names()
			for _, n := range names {
				if !slices.Contains(got, n) {
					return false
				}
			}
			return true
		}
	}
	eventually(t, 20*time.Second, "both targets registered", has(a.Name, b.Name))
	require.Contains(t, d.list("entities"), object{"Entity identifier": `"iscsikit.test"`, "Entity protocol": "iSCSI (2)", "Registration Period": "30"})
	nodes := d.list("nodes")
	require.Contains(t, nodes, object{"iSCSI name": `"` + a.Name + `"`, "iSCSI node type": "Target", "iSCSI alias": `"Alpha"`})
	require.Contains(t, nodes, object{"iSCSI name": `"` + b.Name + `"`, "iSCSI node type": "Target"})
	portals := d.list("portals")
	require.Contains(t, portals, object{"Portal IP address": "127.0.0.1", "Portal TCP/UDP port": "3260/tcp"})
	// The wildcard portal, at the address the client reaches the server
	// from.
	require.Contains(t, portals, object{"Portal IP address": "127.0.0.1", "Portal TCP/UDP port": "3261/tcp"})
	pg := func(name, port, tag string) object {
		return object{"Portal group name": `"` + name + `"`, "Portal group address": "127.0.0.1", "Portal group port": port, "Portal group tag": tag}
	}
	// Target a is reached through both portals, b through group 2 only.
	groups := d.list("portal-groups")
	require.Contains(t, groups, pg(a.Name, "3260/tcp", "1"))
	require.Contains(t, groups, pg(a.Name, "3261/tcp", "2"))
	require.Contains(t, groups, pg(b.Name, "3261/tcp", "2"))
	require.NotContains(t, groups, pg(b.Name, "3260/tcp", "1"))

	// A target removed disappears, a new one appears.
	n := isns.Target{Name: "iqn.2026-11.io.iscsikit:new"}
	c.Update(isns.Registration{Targets: []isns.Target{b, n}, Portals: []isns.Portal{p1, p2}})
	eventually(t, 20*time.Second, "a gone and new registered", func() bool {
		return has(n.Name, b.Name)() && !slices.Contains(d.names(), a.Name)
	})

	// isnsd restarted with an empty database: the client registers
	// again within the registration period.
	d.stop()
	d.start()
	require.Empty(t, d.names())
	eventually(t, time.Duration(d.period)*time.Second+10*time.Second, "registration again after isnsd restarted", has(n.Name, b.Name))

	// Close deregisters the entity.
	require.NoError(t, c.Close(context.Background()))
	require.Empty(t, d.names())
	require.Empty(t, d.list("entities"))
}

// TestClientDiscoveryDomain registers the targets as members of a
// discovery domain, which follows targets added and removed, and which a
// client started again joins rather than creating another.
func TestClientDiscoveryDomain(t *testing.T) {
	d := startISNSD(t, 30)
	opt := isns.Options{Servers: []string{d.addr}, EntityID: "iscsikit.dd", DiscoveryDomain: "iscsikit-dd", Logger: testLogger(t)}
	c, err := isns.NewClient(opt)
	require.NoError(t, err)
	defer func() { c.Close(context.Background()) }()
	p := isns.Portal{Addr: netip.MustParseAddrPort("127.0.0.1:3260"), Tag: 1}
	a := isns.Target{Name: "iqn.2026-11.io.iscsikit:a"}
	b := isns.Target{Name: "iqn.2026-11.io.iscsikit:b"}
	n := isns.Target{Name: "iqn.2026-11.io.iscsikit:new"}
	// isnsadm sees only the default domain; isnsd's dump of its
	// database shows every domain with its members.
	domain := func(members ...string) func() bool {
		return func() bool {
			var dds []object
			for _, o := range d.dump() {
				if o["type"] == "Discovery Domain" && o["DD name"] == `"iscsikit-dd"` {
					dds = append(dds, o)
				}
			}
			if len(dds) != 1 {
				return false
			}
			got := strings.Split(dds[0]["DD member iSCSI name"], ",")
			want := make([]string, len(members))
			for i, m := range members {
				want[i] = `"` + m + `"`
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		}
	}
	c.Update(isns.Registration{Targets: []isns.Target{a, b}, Portals: []isns.Portal{p}})
	eventually(t, 20*time.Second, "a and b in the domain", domain(a.Name, b.Name))
	c.Update(isns.Registration{Targets: []isns.Target{b, n}, Portals: []isns.Portal{p}})
	eventually(t, 20*time.Second, "b and new in the domain, a out", domain(b.Name, n.Name))

	// Started again, the client joins the domain of that name.
	require.NoError(t, c.Close(context.Background()))
	c, err = isns.NewClient(opt)
	require.NoError(t, err)
	c.Update(isns.Registration{Targets: []isns.Target{a, b, n}, Portals: []isns.Portal{p}})
	eventually(t, 20*time.Second, "all three in the one domain", domain(a.Name, b.Name, n.Name))
}

// dump returns the objects of isnsd's database file (isnsd --dump-db),
// each with its "type"; repeated attributes are joined with commas.
func (d *isnsd) dump() []object {
	d.t.Helper()
	out, err := exec.Command("isnsd", "-c", filepath.Join(d.dir, "isnsd.conf"), "--dump-db").CombinedOutput()
	require.NoError(d.t, err, "isnsd --dump-db: %s", out)
	return parseObjects(string(out))
}

// object is one object isnsadm printed: its attributes by label (index
// attributes and timestamps left out).
type object map[string]string

// parseObjects reads isnsadm's listing of objects.
func parseObjects(out string) []object {
	var objs []object
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Object") || strings.HasPrefix(line, "object[") {
			o := object{}
			if _, typ, ok := strings.Cut(line, "type=<"); ok {
				o["type"], _, _ = strings.Cut(typ, ">")
			}
			objs = append(objs, o)
			continue
		}
		_, attr, ok := strings.Cut(line, ": ")
		if !ok || len(objs) == 0 {
			continue
		}
		label, value, ok := strings.Cut(attr, " = ")
		if !ok || strings.Contains(label, "index") || label == "Timestamp" {
			continue
		}
		if prev, ok := objs[len(objs)-1][label]; ok {
			value = prev + "," + value
		}
		objs[len(objs)-1][label] = value
	}
	return objs
}

// testLogger logs to t.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
