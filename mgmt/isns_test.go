package mgmt

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/isnsd"
)

// TestISNSFollowsTheConfiguration registers with isnsd through
// Global.ISNSServers: the targets served appear there, one added through
// mgmt appears and one removed disappears, an isnsd started again gets
// them back within its registration period, and closing the Manager
// deregisters them.
func TestISNSFollowsTheConfiguration(t *testing.T) {
	d := isnsd.Start(t, 20)
	srv, _, port := liveServer(t)
	store := &MemoryStore{}
	m, err := New(ctx, Options{Store: store, Server: srv, ISNSEntityID: "iscsikit.mgmt"})
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	target := func(name string) Target {
		tg := NewTarget()
		tg.Name, tg.Groups = name, []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
		tg, err := m.CreateTarget(ctx, tg)
		require.NoError(t, err)
		return tg
	}
	one := target("one")
	names := func(want ...string) func() bool {
		return func() bool {
			got := d.Names()
			slices.Sort(got)
			return slices.Equal(got, want)
		}
	}
	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.ISNSServers = []string{"bad host:1"}; return nil })
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "isns_servers[0]", me.Field)
	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.ISNSServers = []string{d.Addr()}; return nil })
	require.NoError(t, err)

	iqn := func(n string) string { return DefaultBasename + ":" + n }
	isnsd.Eventually(t, 20*time.Second, "target one registered", names(iqn("one")))
	require.Contains(t, d.List("portal-groups"), isnsd.Object{
		"Portal group name": `"` + iqn("one") + `"`, "Portal group address": "127.0.0.1",
		"Portal group port": strconv.Itoa(port) + "/tcp", "Portal group tag": strconv.Itoa(p.Tag),
	})

	two := target("two")
	isnsd.Eventually(t, 20*time.Second, "target two added", names(iqn("one"), iqn("two")))
	require.NoError(t, m.DeleteTarget(ctx, one.ID, false))
	isnsd.Eventually(t, 20*time.Second, "target one removed", names(iqn("two")))

	d.Restart()
	require.Empty(t, d.Names())
	isnsd.Eventually(t, d.Period()+10*time.Second, "registered again after isnsd restarted", names(iqn("two")))

	_, err = m.UpdateTarget(ctx, two.ID, func(t *Target) error { t.Alias = "Two"; return nil })
	require.NoError(t, err)
	isnsd.Eventually(t, 20*time.Second, "the alias", func() bool {
		for _, o := range d.List("nodes") {
			if o["iSCSI name"] == `"`+iqn("two")+`"` && o["iSCSI alias"] == `"Two"` {
				return true
			}
		}
		return false
	})

	// A discovery domain of its own: isnsadm no longer sees the target
	// (it is out of the default domain); the database shows it a member.
	_, err = m.UpdateGlobal(ctx, func(g *Global) error { g.ISNSDiscoveryDomain = "iscsikit-dd"; return nil })
	require.NoError(t, err)
	member := func() bool {
		for _, o := range d.Dump() {
			if o["type"] == "Discovery Domain" && o["DD name"] == `"iscsikit-dd"` && o["DD member iSCSI name"] == `"`+iqn("two")+`"` {
				return true
			}
		}
		return false
	}
	isnsd.Eventually(t, 20*time.Second, "target two in the domain", member)
	// Registered storage nodes; a domain keeps a placeholder of no type
	// for each member name, registered or not.
	nodes := func() (n int) {
		for _, o := range d.Dump() {
			if o["type"] == "iSCSI Storage Node" && o["iSCSI node type"] == "Target" {
				n++
			}
		}
		return n
	}
	require.Equal(t, 1, nodes(), "the new client took the registration over")

	m.Close()
	closed = true
	require.Zero(t, nodes(), "closing the Manager deregisters")
	for _, o := range d.Dump() {
		require.NotEqual(t, "Network Entity", o["type"], "closing the Manager deregisters the entity")
	}
}
