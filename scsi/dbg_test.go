package scsi_test

import (
	"testing"

	"github.com/iscsikit/iscsikit/scsi"
)

func TestDbgReset(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	c := scsi.Nexus{InitiatorPort: "iqn.a,i,0x2", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x2", RelativePortID: 2}
	res := f.run(c, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	t.Logf("%x", res.Sense)
	f.tgt.ResetLogicalUnit(nexusA, 0)
	res = f.run(nexusA, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	t.Logf("%x", res.Sense)
	res = f.run(c, 0, []byte{0, 0, 0, 0, 0, 0}, nil, 0)
	t.Logf("%x", res.Sense)
}
