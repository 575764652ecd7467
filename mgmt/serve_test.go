package mgmt

import (
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServePortalsOffAndOn switches the portals off (no listener, even for
// a portal made meanwhile) and on again, keeping the configuration.
func TestServePortalsOffAndOn(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	_, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	dial := func(a string) error {
		c, err := net.Dial("tcp", a)
		if err == nil {
			c.Close()
		}
		return err
	}
	require.NoError(t, dial(addr))
	require.True(t, m.PortalsServed())

	require.NoError(t, m.ServePortals(ctx, false))
	require.False(t, m.PortalsServed())
	require.Error(t, dial(addr))
	_, addr2, port2 := liveServer(t)
	_, err = m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port2}}})
	require.NoError(t, err)
	require.Error(t, dial(addr2), "a portal made while off does not listen")
	require.Len(t, m.Config(false).Portals, 2)

	require.NoError(t, m.ServePortals(ctx, true))
	require.NoError(t, dial(addr))
	require.NoError(t, dial(addr2))
	require.NoError(t, m.ServePortals(ctx, true), "on twice is on")
}
