package fuzz

import (
	"context"
	"testing"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// FuzzExecute feeds arbitrary CDBs and data to a thin-provisioned unit.
// Whatever the input, Execute must return a well-formed result: CHECK
// CONDITION carries sense data, data-in never exceeds the buffer, and the
// unit keeps answering.
func FuzzExecute(f *testing.F) {
	seeds := [][]byte{
		{0x12, 0, 0, 0, 0xff, 0},
		{0x12, 1, 0x83, 0, 0xff, 0},
		{0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0},
		{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0},
		{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0},
		{0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
		{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0},
		{0x41, 0x08, 0, 0, 0, 0, 0, 0, 4, 0},
		{0x15, 0x10, 0, 0, 24, 0},
		{0x1a, 0, 0x3f, 0, 0xff, 0},
		{0xa3, 0x0c, 0x81, 0x28, 0, 0, 0, 0, 1, 0, 0, 0},
		{0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
		{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
	}
	for _, s := range seeds {
		f.Add(s, make([]byte, 1024), uint16(512))
	}
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(1<<20), scsi.UnitConfig{ThinProvisioning: true, Serial: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	tgt := scsi.NewTarget()
	if err := tgt.Attach(0, lu); err != nil {
		f.Fatal(err)
	}
	nexus := scsi.Nexus{InitiatorPort: "iqn.fuzz,i,0x1", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}
	f.Fuzz(func(t *testing.T, cdb, out []byte, inLen uint16) {
		cmd := &scsi.Command{Nexus: nexus, CDB: cdb, DataOut: out, DataIn: make([]byte, inLen)}
		res := tgt.Execute(context.Background(), cmd)
		if res.Status == scsi.StatusCheckCondition && len(res.Sense) < 8 {
			t.Fatalf("CHECK CONDITION without sense data for CDB %x", cdb)
		}
		if res.DataInLen < 0 || res.DataInLen > len(cmd.DataIn) || res.TransferLen < 0 {
			t.Fatalf("bad result %+v for CDB %x", res, cdb)
		}
		if r := tgt.Execute(context.Background(), &scsi.Command{Nexus: nexus, CDB: []byte{0x12, 0, 0, 0, 36, 0}, DataIn: make([]byte, 36)}); r.Status != scsi.StatusGood {
			t.Fatalf("INQUIRY fails after CDB %x: %+v", cdb, r)
		}
	})
}
