package targetd

import (
	"context"

	"github.com/iscsikit/iscsikit/mgmt"
)

// setInitiatorAuth sets the CHAP credentials one initiator logs in with
// (in) and the target answers with (out); empty values turn a direction
// off. Per-initiator credentials need the security work's model (issue
// 5): until it lands, turning CHAP on is refused as not supported rather
// than accepted and ignored.
func setInitiatorAuth(_ context.Context, _ *mgmt.Manager, _ string, inUser, inPass, outUser, outPass string) error {
	if inUser == "" && inPass == "" && outUser == "" && outPass == "" {
		return nil
	}
	return fail(CodeNoSupport, "per-initiator CHAP is not supported by this build")
}

// initiatorsWithAuth lists the initiators that have CHAP credentials.
func initiatorsWithAuth(*mgmt.Config) []string { return nil }
