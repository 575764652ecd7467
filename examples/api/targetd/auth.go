package targetd

import (
	"context"
	"slices"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/mgmt"
)

// setInitiatorAuth sets the CHAP credentials one initiator logs in to the
// export target with (in) and the target answers with when the initiator
// asks for mutual CHAP (out); empty values turn a direction off.
//
// The credentials are entries of the export target's auth group bound to
// the initiator (mgmt.Auth.Initiator). While any initiator has
// credentials the target requires CHAP, so an initiator without any can
// no longer log in: stricter than LIO's optional authentication, on
// purpose. Mutual CHAP is the initiator's choice, answered with its out
// credentials.
func (a *adapter) setInitiatorAuth(ctx context.Context, wwn, inUser, inPass, outUser, outPass string) error {
	if (inUser == "") != (inPass == "") || (outUser == "") != (outPass == "") {
		return jsonrpc.InvalidParams("a user and its password go together")
	}
	if outUser != "" && inUser == "" {
		return jsonrpc.InvalidParams("out_user needs in_user: the target answers challenges only in CHAP logins")
	}
	tid, err := a.targetID(ctx, inUser != "")
	if err != nil || tid == 0 {
		return err
	}
	return a.m.Update(ctx, func(cfg *mgmt.Config) error {
		i := slices.IndexFunc(cfg.Targets, func(t mgmt.Target) bool { return t.ID == tid })
		if i < 0 {
			return fail(CodeInvalid, "the export target went away; try again")
		}
		g := &cfg.Targets[i].Groups[0]
		tag := 0
		if g.Auth != nil {
			tag = *g.Auth
		} else {
			tag = cfg.FreeAuthTag()
		}
		cfg.Auths = slices.DeleteFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag && x.Initiator == wwn })
		if inUser != "" {
			cfg.Auths = append(cfg.Auths, mgmt.Auth{ID: mgmt.NewID(cfg, cfg.Auths), Tag: tag, User: inUser, Secret: inPass, PeerUser: outUser, PeerSecret: outPass, Initiator: wwn})
		}
		if slices.ContainsFunc(cfg.Auths, func(x mgmt.Auth) bool { return x.Tag == tag }) {
			g.Auth, g.AuthMethod = &tag, mgmt.AuthCHAP
		} else {
			g.Auth, g.AuthMethod = nil, mgmt.AuthNone
		}
		return nil
	})
}

// initiatorsWithAuth lists the initiators with credentials for the export
// target.
func initiatorsWithAuth(cfg *mgmt.Config, tid int) []string {
	var out []string
	for _, t := range cfg.Targets {
		if t.ID != tid || len(t.Groups) == 0 || t.Groups[0].Auth == nil {
			continue
		}
		for _, x := range cfg.Auths {
			if x.Tag == *t.Groups[0].Auth && x.Initiator != "" {
				out = append(out, x.Initiator)
			}
		}
	}
	return out
}
