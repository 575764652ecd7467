//go:build ceph

package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// TestRBDTwoGatewaysALUA runs two iscsid exporting one RBD image (librbd's
// cache off on both) under one target name with ALUA: gateway A serves
// portal group 1 active/optimized, gateway B group 2 active/non-optimized,
// each knowing the other's group as remote. Through either path the
// initiator sees one logical unit (the same NAA and serial) with both
// groups in the same states, each path its own group and relative port,
// implicit ALUA only; data written through one path is read through the
// other.
func TestRBDTwoGatewaysALUA(t *testing.T) {
	o := newRBDImage(t, 64<<20)
	extent := fmt.Sprintf(`"type": "RBD", "blocksize": 512, "thin": true,
    "params": {"pool": %q, "image": %q, "conf": %q, "timeout": "10", "cache": "false"}`, o.Pool, o.Image, o.ConfigFile)
	a := startGateway(t, 1, 2, "ACTIVE_OPTIMIZED", "ACTIVE_NON_OPTIMIZED", extent)
	b := startGateway(t, 2, 1, "ACTIVE_NON_OPTIMIZED", "ACTIVE_OPTIMIZED", extent)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca, cb := dialGateway(t, a, 1), dialGateway(t, b, 2)
	requireOneUnit(ctx, t, []*gateway{a, b}, []*initiator.Conn{ca, cb}, map[uint16]byte{1: 0, 2: 1})
	requireWritesCross(ctx, t, ca, cb)
}
