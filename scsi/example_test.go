package scsi_test

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// patternDevice is a custom backend: a read-only device whose every byte is
// computed, not stored (a test rig's golden image). A product's own storage
// (an object store, a replicated log, a cloud volume) plugs in the same way:
// implement backend.Device, safe for concurrent use.
type patternDevice struct{ size int64 }

func (d patternDevice) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > d.size {
		return 0, backend.ErrOutOfRange
	}
	for i := range p {
		p[i] = byte((off + int64(i)) / 512) // each block holds its LBA's low byte
	}
	return len(p), nil
}

func (d patternDevice) WriteAt(p []byte, off int64) (int, error) { return 0, backend.ErrReadOnly }
func (d patternDevice) Size() int64                              { return d.size }
func (d patternDevice) Sync() error                              { return nil }
func (d patternDevice) Close() error                             { return nil }

// Serve a custom backend.Device as a logical unit, and drive it through the
// SCSI layer directly, as a transport does (package iscsi is one).
func ExampleNewLogicalUnit_customDevice() {
	lu, err := scsi.NewLogicalUnit(patternDevice{size: 1 << 20}, scsi.UnitConfig{ReadOnly: true})
	if err != nil {
		panic(err)
	}
	luns := scsi.NewTarget()
	if err := luns.Attach(0, lu); err != nil {
		panic(err)
	}
	defer luns.Detach(0)

	nexus := scsi.Nexus{
		InitiatorPort:  "iqn.2026-11.com.example:host,i,0x000000000001",
		TargetName:     "iqn.2026-11.com.example:golden",
		TargetPort:     "iqn.2026-11.com.example:golden,t,0x1",
		RelativePortID: 1,
	}
	run := func(cdb, dataOut []byte, dataInLen int) scsi.Result {
		cmd := &scsi.Command{Nexus: nexus, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: dataOut, DataIn: make([]byte, dataInLen)}
		res := luns.Execute(context.Background(), cmd)
		if res.Status == scsi.StatusGood && res.DataInLen >= 4 {
			fmt.Printf("% x\n", cmd.DataIn[:4])
		}
		return res
	}
	run([]byte{0x00, 0, 0, 0, 0, 0}, nil, 0) // TEST UNIT READY clears the power-on unit attention

	read10 := make([]byte, 10)
	read10[0] = 0x28
	binary.BigEndian.PutUint32(read10[2:], 5) // LBA 5
	binary.BigEndian.PutUint16(read10[7:], 1) // one block
	run(read10, nil, 512)

	write10 := append([]byte(nil), read10...)
	write10[0] = 0x2a
	res := run(write10, make([]byte, 512), 0)
	// Fixed-format sense data (the default, D_SENSE 0): key in byte 2,
	// ASC/ASCQ in bytes 12 and 13.
	fmt.Printf("status 0x%02x, sense key 0x%x, asc/ascq %02x/%02x\n",
		byte(res.Status), res.Sense[2]&0x0f, res.Sense[12], res.Sense[13])
	// Output:
	// 05 05 05 05
	// status 0x02, sense key 0x7, asc/ascq 27/00
}
