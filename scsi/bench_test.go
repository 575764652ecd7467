package scsi_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// BenchmarkReadWrite measures the SCSI half of the data path: READ (10) and
// WRITE (10) decoded, checked and executed against a memory device, the
// transport's buffer handed straight to the backend.
func BenchmarkReadWrite(b *testing.B) {
	const bs = 512
	const blocks = 1 << 15 // 16 MiB
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{BlockSize: bs, Serial: "bench", WriteCache: true})
	require.NoError(b, err)
	defer lu.Close()
	dev := scsi.NewTarget()
	require.NoError(b, dev.Attach(0, lu))
	nexus := scsi.Nexus{InitiatorPort: "iqn.2026-11.io.iscsikit:bench,i,0x1", TargetName: "t", TargetPort: "t,t,0x1", RelativePortID: 1}
	ctx := context.Background()
	// The first command of a nexus reports POWER ON OCCURRED.
	dev.Execute(ctx, &scsi.Command{Nexus: nexus, CDB: make([]byte, 6)})
	for _, size := range []int{4 << 10, 64 << 10} {
		for _, write := range []bool{false, true} {
			op, code := "read", byte(0x28)
			if write {
				op, code = "write", 0x2a
			}
			b.Run(fmt.Sprintf("%s%dK", op, size>>10), func(b *testing.B) {
				buf := make([]byte, size)
				cdb := make([]byte, 10)
				cdb[0] = code
				binary.BigEndian.PutUint16(cdb[7:], uint16(size/bs))
				cmd := scsi.Command{Nexus: nexus, CDB: cdb}
				if write {
					cmd.DataOut = buf
				} else {
					cmd.DataIn = buf
				}
				slots := uint32(blocks / (size / bs))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := uint32(0)
				for b.Loop() {
					binary.BigEndian.PutUint32(cdb[2:], (i%slots)*uint32(size/bs))
					i++
					if res := dev.Execute(ctx, &cmd); res.Status != scsi.StatusGood {
						b.Fatalf("status 0x%02x sense % x", res.Status, res.Sense)
					}
				}
			})
		}
	}
}
