package fuzz

import (
	"context"
	"encoding/binary"
	"testing"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// fuzzNexus is the I_T nexus every fuzzed command arrives on.
func fuzzNexus() scsi.Nexus {
	return scsi.Nexus{InitiatorPort: "iqn.2026-11.io.example:fuzz,i,0x800000000001", TargetName: "iqn.2026-11.io.iscsikit:fuzz", TargetPort: "iqn.2026-11.io.iscsikit:fuzz,t,0x0001", RelativePortID: 1}
}

// fuzzBlocks is the capacity of a fuzzed unit: small, so that random LBAs
// land inside it often enough.
const fuzzBlocks = 256

// newFuzzTarget returns a fresh thin unit on a memory device, as LUN 0,
// with its power-on unit attention already reported.
func newFuzzTarget(tb testing.TB) *scsi.Target {
	tb.Helper()
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(fuzzBlocks*512), scsi.UnitConfig{ThinProvisioning: true, Serial: "fuzz", WriteCache: true})
	require.NoError(tb, err)
	tgt := scsi.NewTarget()
	require.NoError(tb, tgt.Attach(0, lu))
	tgt.Execute(context.Background(), &scsi.Command{Nexus: fuzzNexus(), CDB: []byte{0, 0, 0, 0, 0, 0}})
	return tgt
}

// tableEntry is one command of the unit's command table as REPORT
// SUPPORTED OPERATION CODES reports it: its CDB usage data (byte 0 the
// operation code; a bit set for each CDB bit the unit evaluates).
type tableEntry struct {
	usage []byte
	hasSA bool
}

// commandTable asks the unit for its command table, so that every
// command the scsi package knows, including ones added later, is fuzzed.
func commandTable(tb testing.TB, tgt *scsi.Target) []tableEntry {
	tb.Helper()
	run := func(cdb []byte, n int) []byte {
		cmd := &scsi.Command{Nexus: fuzzNexus(), CDB: cdb, DataIn: make([]byte, n)}
		res := tgt.Execute(context.Background(), cmd)
		require.Equal(tb, scsi.StatusGood, res.Status, "REPORT SUPPORTED OPERATION CODES %x: %x", cdb, res.Sense)
		return cmd.DataIn[:res.DataInLen]
	}
	all := run([]byte{0xa3, 0x0c, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, 65536)
	n := int(binary.BigEndian.Uint32(all[0:4]))
	var table []tableEntry
	for d := all[4 : 4+n]; len(d) >= 8; d = d[8:] {
		op, sa, hasSA := d[0], binary.BigEndian.Uint16(d[2:4]), d[5]&0x01 != 0
		opts := byte(1)
		if hasSA {
			opts = 2
		}
		one := run([]byte{0xa3, 0x0c, opts, op, byte(sa >> 8), byte(sa), 0, 0, 1, 0, 0, 0}, 256)
		require.Equal(tb, byte(0x03), one[1]&0x07, "opcode %#x/%#x supported", op, sa)
		l := int(binary.BigEndian.Uint16(one[2:4]))
		table = append(table, tableEntry{usage: append([]byte(nil), one[4:4+l]...), hasSA: hasSA})
	}
	require.NotEmpty(tb, table)
	return table
}

// cdbInput is what gofuzz fills to build a CDB from the table.
type cdbInput struct {
	Pick     uint16   // table entry
	Bytes    [64]byte // raw CDB bytes (CDBs in the table are at most 32 bytes, plus Extra)
	Valid    bool     // keep only bits the unit evaluates
	Small    bool     // clear the high bits of the middle bytes (LBAs and lengths in range)
	Extra    uint8    // bytes appended beyond the CDB length
	DataOut  []byte
	DataIn   uint16
	TaskAttr uint8
}

// build turns in into a CDB for entry e.
func (in *cdbInput) build(e tableEntry) []byte {
	cdb := make([]byte, len(e.usage), len(e.usage)+int(in.Extra%8))
	copy(cdb, in.Bytes[:])
	cdb[0] = e.usage[0]
	for i := 1; i < len(cdb); i++ {
		if in.Valid {
			cdb[i] &= e.usage[i]
			if i == len(cdb)-1 {
				cdb[i] &^= 0x04 // NACA is refused
			}
		}
		if in.Small && i >= 2 && i < len(cdb)-2 {
			cdb[i] &= 0x01
		}
	}
	if e.hasSA {
		cdb[1] = cdb[1]&^0x1f | e.usage[1]&0x1f
	}
	extra := min(len(cdb)+int(in.Extra%8), len(in.Bytes))
	return append(cdb, in.Bytes[min(len(cdb), extra):extra]...)
}

// checkSense requires well-formed fixed or descriptor sense data.
func checkSense(t *testing.T, cdb, sense []byte) {
	t.Helper()
	require.NotEmpty(t, sense, "CHECK CONDITION without sense for CDB %x", cdb)
	var key byte
	switch sense[0] & 0x7f {
	case 0x70, 0x71:
		require.GreaterOrEqual(t, len(sense), 18, "fixed sense too short for CDB %x: %x", cdb, sense)
		require.Equal(t, len(sense), 8+int(sense[7]), "fixed sense ADDITIONAL SENSE LENGTH for CDB %x: %x", cdb, sense)
		key = sense[2] & 0x0f
		if sense[15]&0x80 != 0 && sense[15]&0x40 != 0 && key == byte(scsi.SenseIllegalRequest) {
			field := int(binary.BigEndian.Uint16(sense[16:18]))
			require.Less(t, field, len(cdb), "field pointer beyond the CDB %x: %x", cdb, sense)
		}
	case 0x72, 0x73:
		require.GreaterOrEqual(t, len(sense), 8, "descriptor sense too short for CDB %x", cdb)
		require.Equal(t, len(sense), 8+int(sense[7]), "descriptor sense ADDITIONAL SENSE LENGTH for CDB %x: %x", cdb, sense)
		key = sense[1] & 0x0f
		for d := sense[8:]; len(d) > 0; d = d[2+int(d[1]):] {
			require.GreaterOrEqual(t, len(d), 2, "truncated descriptor in %x", sense)
			require.LessOrEqual(t, 2+int(d[1]), len(d), "descriptor overruns the sense data %x", sense)
		}
	default:
		t.Fatalf("sense response code %#x for CDB %x: %x", sense[0], cdb, sense)
	}
	require.NotZero(t, key, "CHECK CONDITION with sense key NO SENSE for CDB %x: %x", cdb, sense)
}

// checkResult requires a well-formed result: a known status, sense with
// CHECK CONDITION and only then, data-in within the buffer.
func checkResult(t *testing.T, cmd *scsi.Command, res scsi.Result) {
	t.Helper()
	switch res.Status {
	case scsi.StatusGood, scsi.StatusConditionMet, scsi.StatusBusy, scsi.StatusReservationConflict, scsi.StatusTaskSetFull, scsi.StatusTaskAborted:
		require.Empty(t, res.Sense, "status %#x with sense for CDB %x", res.Status, cmd.CDB)
	case scsi.StatusCheckCondition:
		checkSense(t, cmd.CDB, res.Sense)
	default:
		t.Fatalf("status %#x for CDB %x", res.Status, cmd.CDB)
	}
	require.GreaterOrEqual(t, res.DataInLen, 0)
	require.LessOrEqual(t, res.DataInLen, len(cmd.DataIn), "data-in beyond the buffer for CDB %x", cmd.CDB)
	require.GreaterOrEqual(t, res.TransferLen, 0)
}

// stillAnswers requires the unit to answer INQUIRY after a fuzzed command.
func stillAnswers(t *testing.T, tgt *scsi.Target, cdb []byte) {
	t.Helper()
	r := tgt.Execute(context.Background(), &scsi.Command{Nexus: fuzzNexus(), CDB: []byte{0x12, 0, 0, 0, 36, 0}, DataIn: make([]byte, 36)})
	require.Equal(t, scsi.StatusGood, r.Status, "INQUIRY fails after CDB %x", cdb)
}

// FuzzCDB builds CDBs for every command in the unit's table (picked by
// the fuzzer, the rest of the bytes fuzzed, optionally limited to the bits
// the command evaluates) and runs them, with fuzzed data-out, on a fresh
// thin unit; the result must be well-formed whatever the input.
func FuzzCDB(f *testing.F) {
	table := commandTable(f, newFuzzTarget(f))
	for i := range table {
		f.Add([]byte{byte(i >> 8), byte(i), 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 0xff})
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var in cdbInput
		gofuzz.NewFromGoFuzz(data).NilChance(0.1).NumElements(0, 4096).Fuzz(&in)
		e := table[int(in.Pick)%len(table)]
		cdb := in.build(e)
		tgt := newFuzzTarget(t)
		cmd := &scsi.Command{Nexus: fuzzNexus(), CDB: cdb, DataOut: in.DataOut, DataIn: make([]byte, in.DataIn), Attribute: scsi.TaskAttribute(in.TaskAttr % 4)}
		checkResult(t, cmd, tgt.Execute(context.Background(), cmd))
		stillAnswers(t, tgt, cdb)
	})
}

// paramCommand is a command that carries a parameter list in its data-out
// buffer, with where its CDB holds the parameter list length (or, for
// block commands, the number of blocks).
type paramCommand struct {
	cdb    []byte
	lenAt  int // offset of the length field
	lenLen int // its size in bytes
	blocks int // the length counts blocks of this many bytes of data (0: bytes, <0: fixed one block)
	lbaAt  int // offset of the LBA field's lowest byte, 0 when none
}

// paramCommands returns the parameter-list commands of SPC/SBC. Those the
// unit does not implement (yet) must be refused cleanly too.
func paramCommands() []paramCommand {
	return []paramCommand{
		{cdb: []byte{0x15, 0x10, 0, 0, 0, 0}, lenAt: 4, lenLen: 1},                                                        // MODE SELECT(6)
		{cdb: []byte{0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}, lenAt: 7, lenLen: 2},                                            // MODE SELECT(10)
		{cdb: []byte{0x5f, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}, lenAt: 5, lenLen: 4},                                            // PERSISTENT RESERVE OUT
		{cdb: []byte{0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, lenAt: 10, lenLen: 4},                         // EXTENDED COPY
		{cdb: []byte{0x42, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}, lenAt: 7, lenLen: 2},                                            // UNMAP
		{cdb: []byte{0x41, 0x00, 0, 0, 0, 0, 0, 0, 1, 0}, lenAt: 7, lenLen: 2, blocks: -1, lbaAt: 5},                      // WRITE SAME(10): one block of data
		{cdb: []byte{0x93, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, lenAt: 10, lenLen: 4, blocks: -1, lbaAt: 9},   // WRITE SAME(16)
		{cdb: []byte{0x89, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, lenAt: 13, lenLen: 1, blocks: 1024, lbaAt: 9}, // COMPARE AND WRITE: 2 x NLB blocks
		{cdb: []byte{0x8b, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0}, lenAt: 10, lenLen: 4, blocks: 512, lbaAt: 9},  // ORWRITE(16)
		{cdb: []byte{0x2e, 0x00, 0, 0, 0, 0, 0, 0, 1, 0}, lenAt: 7, lenLen: 2, blocks: 512, lbaAt: 5},                     // WRITE AND VERIFY(10)
	}
}

// paramInput is what gofuzz fills for FuzzParameterList.
type paramInput struct {
	Pick      uint8
	Byte1     uint8  // CDB byte 1 (service action, flags)
	LBA       uint8  // low byte of the LBA field where there is one
	Match     bool   // set the length field to the data-out length
	Length    uint32 // otherwise, this length
	Truncate  uint16 // cut this many bytes off the data-out
	Immediate bool
}

// FuzzParameterList sends the parameter-list commands (MODE SELECT, PR
// OUT, EXTENDED COPY, UNMAP, WRITE SAME, COMPARE AND WRITE, ...) with a
// structured CDB and a fuzzed parameter list. Whatever the list holds, the
// result is well-formed and the unit keeps answering.
func FuzzParameterList(f *testing.F) {
	modeCaching := []byte{0, 0, 0, 0, 0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	unmap := []byte{0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0}
	prRegister := make([]byte, 24)
	prRegister[15] = 0x42
	xcopy := make([]byte, 16+32+28)
	xcopy[1], xcopy[3] = 0x07, 32
	binary.BigEndian.PutUint32(xcopy[12:16], 28)
	f.Add([]byte{0, 0, 0, 1}, modeCaching)
	f.Add([]byte{1, 0x10, 0, 1}, append([]byte{0, 0, 0, 0, 0, 0, 0, 0}, modeCaching[4:]...))
	f.Add([]byte{2, 0, 0, 1}, prRegister)
	f.Add([]byte{3, 0, 0, 1}, xcopy)
	f.Add([]byte{4, 0, 0, 1}, unmap)
	f.Add([]byte{5, 0x08, 3, 1}, make([]byte, 512))
	f.Add([]byte{7, 0, 3, 1}, make([]byte, 1024))
	cmds := paramCommands()
	f.Fuzz(func(t *testing.T, sel []byte, out []byte) {
		var in paramInput
		gofuzz.NewFromGoFuzz(sel).Fuzz(&in)
		pc := cmds[int(in.Pick)%len(cmds)]
		cdb := append([]byte(nil), pc.cdb...)
		cdb[1] = in.Byte1
		if pc.lbaAt != 0 {
			cdb[pc.lbaAt] = in.LBA
		}
		if in.Immediate && pc.cdb[0] == 0x15 {
			cdb[1] |= 0x01 // SP
		}
		n := uint32(len(out))
		switch {
		case !in.Match:
			n = in.Length
		case pc.blocks > 0:
			n = uint32(len(out) / pc.blocks)
		case pc.blocks < 0:
			n = 1 + uint32(in.Length%4)
		}
		for i := pc.lenLen - 1; i >= 0; i-- {
			cdb[pc.lenAt+i] = byte(n)
			n >>= 8
		}
		if int(in.Truncate) < len(out) {
			out = out[:len(out)-int(in.Truncate)]
		}
		tgt := newFuzzTarget(t)
		cmd := &scsi.Command{Nexus: fuzzNexus(), CDB: cdb, DataOut: out}
		checkResult(t, cmd, tgt.Execute(context.Background(), cmd))
		stillAnswers(t, tgt, cdb)
	})
}
