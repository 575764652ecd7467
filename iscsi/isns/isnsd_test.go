package isns_test

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/isnsd"
	"github.com/iscsikit/iscsikit/iscsi/isns"
)

func TestClientAgainstISNSD(t *testing.T) {
	d := isnsd.Start(t, 30)
	c, err := isns.NewClient(isns.Options{Servers: []string{d.Addr()}, EntityID: "iscsikit.test"})
	require.NoError(t, err)
	defer c.Close(context.Background())

	p1 := isns.Portal{Addr: netip.MustParseAddrPort("127.0.0.1:3260"), Tag: 1}
	p2 := isns.Portal{Addr: netip.MustParseAddrPort("0.0.0.0:3261"), Tag: 2}
	a := isns.Target{Name: "iqn.2026-11.io.iscsikit:a", Alias: "Alpha"}
	b := isns.Target{Name: "iqn.2026-11.io.iscsikit:b", PortalGroups: []uint16{2}}
	c.Update(isns.Registration{Targets: []isns.Target{a, b}, Portals: []isns.Portal{p1, p2}})

	has := func(names ...string) func() bool {
		return func() bool {
			got := d.Names()
			for _, n := range names {
				if !slices.Contains(got, n) {
					return false
				}
			}
			return true
		}
	}
	isnsd.Eventually(t, 20*time.Second, "both targets registered", has(a.Name, b.Name))
	require.Contains(t, d.List("entities"), isnsd.Object{"Entity identifier": `"iscsikit.test"`, "Entity protocol": "iSCSI (2)", "Registration Period": "30"})
	nodes := d.List("nodes")
	require.Contains(t, nodes, isnsd.Object{"iSCSI name": `"` + a.Name + `"`, "iSCSI node type": "Target", "iSCSI alias": `"Alpha"`})
	require.Contains(t, nodes, isnsd.Object{"iSCSI name": `"` + b.Name + `"`, "iSCSI node type": "Target"})
	portals := d.List("portals")
	require.Contains(t, portals, isnsd.Object{"Portal IP address": "127.0.0.1", "Portal TCP/UDP port": "3260/tcp"})
	// The wildcard portal, at the address the client reaches the server
	// from.
	require.Contains(t, portals, isnsd.Object{"Portal IP address": "127.0.0.1", "Portal TCP/UDP port": "3261/tcp"})
	pg := func(name, port, tag string) isnsd.Object {
		return isnsd.Object{"Portal group name": `"` + name + `"`, "Portal group address": "127.0.0.1", "Portal group port": port, "Portal group tag": tag}
	}
	// Target a is reached through both portals, b through group 2 only.
	groups := d.List("portal-groups")
	require.Contains(t, groups, pg(a.Name, "3260/tcp", "1"))
	require.Contains(t, groups, pg(a.Name, "3261/tcp", "2"))
	require.Contains(t, groups, pg(b.Name, "3261/tcp", "2"))
	require.NotContains(t, groups, pg(b.Name, "3260/tcp", "1"))

	// A target removed disappears, a new one appears.
	n := isns.Target{Name: "iqn.2026-11.io.iscsikit:new"}
	c.Update(isns.Registration{Targets: []isns.Target{b, n}, Portals: []isns.Portal{p1, p2}})
	isnsd.Eventually(t, 20*time.Second, "a gone and new registered", func() bool {
		return has(n.Name, b.Name)() && !slices.Contains(d.Names(), a.Name)
	})

	// isnsd restarted with an empty database: the client registers
	// again within the registration period.
	d.Restart()
	require.Empty(t, d.Names())
	isnsd.Eventually(t, d.Period()+10*time.Second, "registration again after isnsd restarted", has(n.Name, b.Name))

	// Close deregisters the entity.
	require.NoError(t, c.Close(context.Background()))
	require.Empty(t, d.Names())
	require.Empty(t, d.List("entities"))
}

// TestClientDiscoveryDomain registers the targets as members of a
// discovery domain, which follows targets added and removed, and which a
// client started again joins rather than creating another.
func TestClientDiscoveryDomain(t *testing.T) {
	d := isnsd.Start(t, 30)
	opt := isns.Options{Servers: []string{d.Addr()}, EntityID: "iscsikit.dd", DiscoveryDomain: "iscsikit-dd", Logger: testLogger(t)}
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
			var dds []isnsd.Object
			for _, o := range d.Dump() {
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
	isnsd.Eventually(t, 20*time.Second, "a and b in the domain", domain(a.Name, b.Name))
	c.Update(isns.Registration{Targets: []isns.Target{b, n}, Portals: []isns.Portal{p}})
	isnsd.Eventually(t, 20*time.Second, "b and new in the domain, a out", domain(b.Name, n.Name))

	// Started again, the client joins the domain of that name.
	require.NoError(t, c.Close(context.Background()))
	c, err = isns.NewClient(opt)
	require.NoError(t, err)
	c.Update(isns.Registration{Targets: []isns.Target{a, b, n}, Portals: []isns.Portal{p}})
	isnsd.Eventually(t, 20*time.Second, "all three in the one domain", domain(a.Name, b.Name, n.Name))
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
