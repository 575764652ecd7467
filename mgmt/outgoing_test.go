package mgmt

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestOutgoingOnlyCredential: a credential with only a peer user is kept
// (tgt's outgoing user without incoming ones); its group can be named
// with NONE and never used to authenticate initiators.
func TestOutgoingOnlyCredential(t *testing.T) {
	m, _ := newManager(t, nil)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: 3299}}})
	require.NoError(t, err)
	out, err := m.CreateAuth(ctx, Auth{Tag: 1, PeerUser: "out", PeerSecret: "outsecret1234"})
	require.NoError(t, err)
	require.True(t, Auth{PeerUser: "out", PeerSecret: "outsecret1234"}.OutgoingOnly())

	tg := NewTarget()
	tg.Name, tg.Groups = "t0", []TargetGroup{{Portal: p.ID, Auth: intp(1), AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err, "a group of outgoing-only credentials may be named with NONE")
	for _, method := range []string{AuthCHAP, AuthMutualCHAP} {
		_, err = m.UpdateTarget(ctx, tg.ID, func(t *Target) error { t.Groups[0].AuthMethod = method; return nil })
		require.ErrorContains(t, err, "has only an outgoing user (out)", method)
		_, err = m.UpdatePortal(ctx, p.ID, func(p *Portal) error { p.DiscoveryAuthMethod, p.DiscoveryAuthGroup = method, intp(1); return nil })
		require.ErrorContains(t, err, "has only an outgoing user", method)
	}

	// Half a credential is still refused, naming the field.
	for _, tc := range []struct {
		a     Auth
		field string
	}{
		{Auth{Tag: 2, PeerUser: "out"}, "user"},
		{Auth{Tag: 2, Secret: "abcdefghijkl", PeerUser: "out", PeerSecret: "outsecret1234"}, "user"},
		{Auth{Tag: 2, PeerUser: "out", PeerSecret: "short"}, "peersecret"},
	} {
		_, err := m.CreateAuth(ctx, tc.a)
		var me *Error
		require.ErrorAs(t, err, &me, "%+v", tc.a)
		require.Equal(t, tc.field, me.Field, err.Error())
	}

	// With a user the group authenticates, and NONE no longer names it.
	_, err = m.UpdateAuth(ctx, out.ID, func(a *Auth) error { a.User, a.Secret = "in", "insecret12345"; return nil })
	require.ErrorContains(t, err, "an auth group is only used with CHAP or MUTUAL_CHAP")
	require.NoError(t, m.Update(ctx, func(c *Config) error {
		c.Auths[0].User, c.Auths[0].Secret = "in", "insecret12345"
		c.Targets[0].Groups[0].AuthMethod = AuthMutualCHAP
		return nil
	}))
}
