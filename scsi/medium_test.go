package scsi_test

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

var (
	tur          = []byte{0, 0, 0, 0, 0, 0}
	prevent      = []byte{0x1e, 0, 0, 0, 1, 0}
	allow        = []byte{0x1e, 0, 0, 0, 0, 0}
	eject        = []byte{0x1b, 0, 0, 0, 0x02, 0}
	load         = []byte{0x1b, 0, 0, 0, 0x03, 0}
	requestSense = []byte{0x03, 0, 0, 0, 18, 0}
)

func TestRemovableMedium(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{Removable: true})
	std := f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	require.Equal(t, byte(0x80), std[1], "RMB")

	// Prevention is per nexus: both must allow before the medium moves.
	f.good(prevent, nil, 0)
	require.Equal(t, scsi.StatusGood, f.run(nexusB, 0, prevent, nil, 0).Status)
	f.fails(eject, nil, 0, scsi.SenseIllegalRequest, 0x53, 0x02)
	f.good(allow, nil, 0)
	f.requireSense(f.run(nexusB, 0, eject, nil, 0), scsi.SenseIllegalRequest, 0x53, 0x02)
	f.tgt.Transport().NexusLost(nexusB) // ends B's prevention
	f.good(eject, nil, 0)

	// Without the medium every media access fails; INQUIRY does not.
	for _, cdb := range [][]byte{tur, read10(0, 1), write10(0, 1), {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		f.fails(cdb, make([]byte, bs), bs, scsi.SenseNotReady, 0x3a, 0x02)
	}
	f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	require.Equal(t, []byte{0x3a, 0x02}, f.good(requestSense, nil, 18)[12:14])
	// START without LOEJ cannot bring a medium that is out.
	f.fails([]byte{0x1b, 0, 0, 0, 0x01, 0}, nil, 0, scsi.SenseNotReady, 0x3a, 0x02)
	// Loading is prevented like ejecting.
	f.good(prevent, nil, 0)
	f.fails(load, nil, 0, scsi.SenseIllegalRequest, 0x53, 0x02)
	// A LU reset clears every prevention.
	require.NoError(t, f.tgt.Transport().ResetLogicalUnit(nexusA, scsi.EncodeLUN(0)))
	f.clearUAs(nexusA)
	f.good(load, nil, 0)
	f.good(read10(0, 1), nil, bs)
	// PREVENT values for media changers are refused.
	f.fails([]byte{0x1e, 0, 0, 0, 2, 0}, nil, 0, scsi.SenseIllegalRequest, 0x24, 0)
}

func TestNotRemovable(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{})
	std := f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	require.Zero(t, std[1]&0x80)
	f.fails(prevent, nil, 0, scsi.SenseIllegalRequest, 0x20, 0)
	// LOEJ is ignored: the medium stays.
	f.good(eject, nil, 0)
	f.fails(tur, nil, 0, scsi.SenseNotReady, 0x04, 0x02)
	f.good([]byte{0x1b, 0, 0, 0, 0x01, 0}, nil, 0)
	f.good(tur, nil, 0)
}

func TestOfflineUnit(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{Offline: true})
	for _, cdb := range [][]byte{tur, read10(0, 1), write10(0, 1), {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}} {
		f.fails(cdb, make([]byte, bs), bs, scsi.SenseNotReady, 0x04, 0x12)
	}
	f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	f.good([]byte{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, []byte{0x04, 0x12}, f.good(requestSense, nil, 18)[12:14])
}

// writePaths lists a CDB (and data) of every command that writes.
func writePaths() []struct {
	name string
	cdb  []byte
	data []byte
} {
	unmap := make([]byte, 24)
	binary.BigEndian.PutUint16(unmap[0:], 22)
	binary.BigEndian.PutUint16(unmap[2:], 16)
	binary.BigEndian.PutUint64(unmap[8:], 0)
	binary.BigEndian.PutUint32(unmap[16:], 8)
	ws16 := rw16(0x93, 0, 4)
	ws16[1] = 0x08
	atomic := rw16(0x9c, 0, 0)
	binary.BigEndian.PutUint16(atomic[12:], 1)
	return []struct {
		name string
		cdb  []byte
		data []byte
	}{
		{"WRITE(10)", write10(0, 1), make([]byte, bs)},
		{"WRITE(16)", rw16(0x8a, 0, 1), make([]byte, bs)},
		{"WRITE AND VERIFY(10)", []byte{0x2e, 0, 0, 0, 0, 0, 0, 0, 1, 0}, make([]byte, bs)},
		{"ORWRITE", rw16(0x8b, 0, 1), make([]byte, bs)},
		{"WRITE SAME(10)", []byte{0x41, 0, 0, 0, 0, 0, 0, 0, 4, 0}, make([]byte, bs)},
		{"WRITE SAME(16) UNMAP", ws16, make([]byte, bs)},
		{"UNMAP", []byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, unmap},
		{"COMPARE AND WRITE", func() []byte { c := rw16(0x89, 0, 0); c[13] = 1; return c }(), make([]byte, 2*bs)},
		{"WRITE ATOMIC(16)", atomic, make([]byte, bs)},
		{"SANITIZE", []byte{0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, nil},
	}
}

func TestWriteProtectionOnEveryWritePath(t *testing.T) {
	for _, mode := range []struct {
		name string
		cfg  scsi.UnitConfig
		swp  bool
		ascq byte
	}{
		{"read-only unit", scsi.UnitConfig{ReadOnly: true, ThinProvisioning: true}, false, 0x00},
		{"software write protect", scsi.UnitConfig{ThinProvisioning: true}, true, 0x02},
	} {
		t.Run(mode.name, func(t *testing.T) {
			f := newFixture(t, mode.cfg)
			if mode.swp {
				control := f.good([]byte{0x1a, 0x08, 0x0a, 0, 255, 0}, nil, 255)
				sel := append([]byte{0, 0, 0, 0}, control[4:]...)
				sel[4+4] |= 0x08
				f.good([]byte{0x15, 0x10, 0, 0, byte(len(sel)), 0}, sel, 0)
			}
			hdr := f.good([]byte{0x1a, 0, 0x3f, 0, 255, 0}, nil, 255)
			require.Equal(t, byte(0x80), hdr[2]&0x80, "WP in the mode parameter header")
			for _, w := range writePaths() {
				f.fails(w.cdb, w.data, 0, scsi.SenseDataProtect, 0x27, mode.ascq)
			}
			f.good(read10(0, 1), nil, bs)
		})
	}
}

func TestBlockEdges(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true})
	last := uint64(blocks - 1)
	for _, tc := range []struct {
		name string
		cdb  []byte
		data []byte
		in   int
		asc  byte // 0: GOOD
	}{
		{"read zero blocks", read10(0, 0), nil, 0, 0},
		{"read the last block", read10(uint32(last), 1), nil, bs, 0},
		{"read beyond the end", read10(uint32(last), 2), nil, 2 * bs, 0x21},
		{"write the last block", write10(uint32(last), 1), make([]byte, bs), 0, 0},
		{"write beyond the end", rw16(0x8a, last+1, 1), make([]byte, bs), 0, 0x21},
		{"write at LBA 2^64-1", rw16(0x8a, ^uint64(0), 1), make([]byte, bs), 0, 0x21},
		{"atomic write of zero blocks", rw16(0x9c, 0, 0), nil, 0, 0},
		{"atomic write beyond the end", func() []byte { c := rw16(0x9c, last, 0); c[13] = 2; return c }(), make([]byte, 2*bs), 0, 0x21},
		{"atomic write larger than the unit", func() []byte { c := rw16(0x9c, 0, 0); binary.BigEndian.PutUint16(c[12:], 0xffff); return c }(), nil, 0, 0x21},
		{"pre-fetch the last block", []byte{0x34, 0, 0, 0, 0x07, 0xff, 0, 0, 1, 0}, nil, 0, 0},
		{"pre-fetch beyond the end", []byte{0x34, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0}, nil, 0, 0x21},
		{"write same through the last LBA", func() []byte { c := rw16(0x93, last, 0); return c }(), make([]byte, bs), 0, 0},
		{"read defect data(10)", []byte{0x37, 0, 0x1d, 0, 0, 0, 0, 0, 4, 0}, nil, 4, 0},
		{"read defect data(12)", []byte{0xb7, 0x1d, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0}, nil, 8, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.run(nexusA, 0, tc.cdb, tc.data, tc.in)
			if tc.asc == 0 {
				require.Equal(t, scsi.StatusGood, res.Status, "sense %x", res.Sense)
				return
			}
			f.requireSense(res, scsi.SenseIllegalRequest, tc.asc, 0)
		})
	}
	// Misaligned UNMAP ranges deallocate what they cover; the rest of a
	// physical block reads back as written, the unmapped blocks as zero.
	data := pattern(16*bs, 3)
	f.good(write10(0, 16), data, 0)
	unmap := make([]byte, 24)
	binary.BigEndian.PutUint16(unmap[0:], 22)
	binary.BigEndian.PutUint16(unmap[2:], 16)
	binary.BigEndian.PutUint64(unmap[8:], 3)
	binary.BigEndian.PutUint32(unmap[16:], 5)
	f.good([]byte{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0}, unmap, 0)
	got := f.good(read10(0, 16), nil, 16*bs)
	require.Equal(t, data[:3*bs], got[:3*bs])
	require.Equal(t, make([]byte, 5*bs), got[3*bs:8*bs])
	require.Equal(t, data[8*bs:], got[8*bs:])
	// Defect lists are empty and say so in the format asked for.
	dd := f.good([]byte{0x37, 0, 0x1d, 0, 0, 0, 0, 0, 4, 0}, nil, 4)
	require.Equal(t, []byte{0, 0x1d, 0, 0}, dd)
}

func TestSanitize(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true})
	overwrite := func(immed bool, param []byte) []byte {
		c := []byte{0x48, 0x01, 0, 0, 0, 0, 0, 0, 0, 0}
		if immed {
			c[1] |= 0x80
		}
		binary.BigEndian.PutUint16(c[7:], uint16(len(param)))
		return c
	}
	param := func(count byte, pat []byte) []byte {
		p := []byte{count, 0, 0, 0}
		binary.BigEndian.PutUint16(p[2:], uint16(len(pat)))
		return append(p, pat...)
	}
	for _, tc := range []struct {
		name  string
		param []byte
	}{
		{"parameter list of 4 bytes", param(1, nil)},
		{"overwrite count 0", param(0, []byte{1, 2, 3, 4})},
		{"pattern longer than a block", param(1, make([]byte, bs+1))},
		{"pattern length disagrees with the list", append(param(1, []byte{1, 2}), 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.fails(overwrite(false, tc.param), tc.param, 0, scsi.SenseIllegalRequest, 0x24, 0)
		})
	}
	// OVERWRITE with a 4-byte pattern, inverted by an even pass count.
	p := param(0x80|2, []byte{1, 2, 3, 4})
	f.good(overwrite(false, p), p, 0)
	want := bytes.Repeat([]byte{^byte(1), ^byte(2), ^byte(3), ^byte(4)}, blocks*bs/4)
	require.Equal(t, want[:bs], f.good(read10(0, 1), nil, bs))
	require.Equal(t, want[:bs], f.good(read10(blocks-1, 1), nil, bs))
	// BLOCK ERASE deallocates everything: zeroes read back.
	f.fails([]byte{0x48, 0x02, 0, 0, 0, 0, 0, 0, 8, 0}, make([]byte, 8), 0, scsi.SenseIllegalRequest, 0x24, 0)
	f.good([]byte{0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, make([]byte, bs), f.good(read10(blocks-1, 1), nil, bs))
	// With IMMED the command returns at once; the unit reports the
	// sanitize in progress until it ends, and INQUIRY still works.
	p = param(1, []byte{9})
	f.good(overwrite(true, p), p, 0)
	f.good([]byte{0x12, 0, 0, 0, 36, 0}, nil, 36)
	require.Eventually(t, func() bool {
		return f.run(nexusA, 0, tur, nil, 0).Status == scsi.StatusGood
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, bytes.Repeat([]byte{9}, bs), f.good(read10(7, 1), nil, bs))
	// EXIT FAILURE MODE with no failure is a no-op; CRYPTOGRAPHIC ERASE
	// is not offered by a unit whose device does not encrypt, and its
	// WACEREQ says so.
	f.good([]byte{0x48, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0)
	f.fails(cryptoErase, nil, 0, scsi.SenseIllegalRequest, 0x24, 0)
	require.Equal(t, byte(0x01), f.good(rsocSanitize(0x03), nil, 12)[1]&0x07, "SANITIZE CRYPTOGRAPHIC ERASE: not supported per the standard")
	require.Equal(t, byte(0x40), f.good(vpdB1, nil, 64)[7], "WABEREQ 01, WACEREQ 00")
}

var (
	cryptoErase = []byte{0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0}
	vpdB1       = []byte{0x12, 0x01, 0xb1, 0, 64, 0}
)

// rsocSanitize is REPORT SUPPORTED OPERATION CODES for one SANITIZE
// service action.
func rsocSanitize(sa byte) []byte {
	return []byte{0xa3, 0x0c, 0x02, 0x48, 0, sa, 0, 0, 0, 12, 0, 0}
}

// encryptedMemory returns a memory device encrypted under a fresh key.
func encryptedMemory(t *testing.T) *backend.Encrypted {
	t.Helper()
	keys := backend.KeyFile{Path: filepath.Join(t.TempDir(), "unit.key")}
	key, err := backend.NewEncryptionKey()
	require.NoError(t, err)
	require.NoError(t, keys.Store(key))
	dev, err := backend.NewEncrypted(backend.NewMemory(blocks*bs), keys, bs)
	require.NoError(t, err)
	return dev
}

func TestSanitizeCryptoErase(t *testing.T) {
	_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{CryptoErase: true})
	require.ErrorContains(t, err, "replace its data key", "a device that cannot change its key cannot offer it")

	f := newFixtureOn(t, encryptedMemory(t), scsi.UnitConfig{ThinProvisioning: true, CryptoErase: true})
	require.Equal(t, byte(0x03), f.good(rsocSanitize(0x03), nil, 12)[1]&0x07, "SANITIZE CRYPTOGRAPHIC ERASE supported per the standard")
	require.Equal(t, byte(0x50), f.good(vpdB1, nil, 64)[7], "WABEREQ 01, WACEREQ 01: reads succeed after either erase")

	written := bytes.Repeat([]byte{'a'}, 16*bs)
	f.good(write10(0, 16), written, 0)
	f.good(write10(blocks-16, 16), written, 0)
	require.Equal(t, written, f.good(read10(0, 16), nil, 16*bs))

	// The parameter list must be empty.
	f.fails([]byte{0x48, 0x03, 0, 0, 0, 0, 0, 0, 8, 0}, make([]byte, 8), 0, scsi.SenseIllegalRequest, 0x24, 0)
	// Another nexus's reservation conflicts.
	f.good([]byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, cryptoErase, nil, 0).Status)
	f.good([]byte{0x17, 0, 0, 0, 0, 0}, nil, 0)

	f.good(cryptoErase, nil, 0)
	for _, lba := range []uint32{0, blocks - 16} {
		got := f.good(read10(lba, 16), nil, 16*bs)
		for i := 0; i < len(got); i += bs {
			require.NotEqual(t, written[i:i+bs], got[i:i+bs], "LBA %d still holds its data", int(lba)+i/bs)
		}
	}
	require.Equal(t, make([]byte, bs), f.good(read10(100, 1), nil, bs), "a block never written still reads zeroes")
	// The unit works on under the new key.
	f.good(write10(0, 16), written, 0)
	require.Equal(t, written, f.good(read10(0, 16), nil, 16*bs))

	// A write-protected unit refuses it.
	ro := newFixtureOn(t, encryptedMemory(t), scsi.UnitConfig{ReadOnly: true, CryptoErase: true})
	ro.fails(cryptoErase, nil, 0, scsi.SenseDataProtect, 0x27, 0)
}

// TestInterruptedSanitizeResumes cuts a SANITIZE short by closing its
// unit, as a crash or a restart would, and opens a new unit on the same
// device and state store: the sanitize goes on there to its end.
func TestInterruptedSanitizeResumes(t *testing.T) {
	p := []byte{0x01, 0, 0, 1, 0x5a}
	overwrite := []byte{0x48, 0x81, 0, 0, 0, 0, 0, 0, byte(len(p)), 0} // IMMED
	dev := backend.NewMemory(blocks * bs)
	st := &memStore{}
	f := newFixtureOn(t, nopClose{dev}, scsi.UnitConfig{SanitizeState: st, SanitizeRate: 1})
	f.good(overwrite, p, 0)
	require.NoError(t, f.lu.Close())
	require.NotEmpty(t, st.stored(), "the record of a sanitize in progress")

	g := newFixtureOn(t, nopClose{dev}, scsi.UnitConfig{SanitizeState: st, SanitizeRate: 512 << 10})
	g.fails(read10(0, 1), nil, bs, scsi.SenseNotReady, 0x04, 0x1b)
	require.Eventually(t, func() bool {
		return g.run(nexusA, 0, tur, nil, 0).Status == scsi.StatusGood
	}, 20*time.Second, 5*time.Millisecond)
	require.Equal(t, bytes.Repeat([]byte{0x5a}, bs), g.good(read10(blocks-1, 1), nil, bs), "the resumed overwrite reached the last block")
	require.Empty(t, st.stored(), "nothing is recorded once the sanitize is done")
}

// TestFailedSanitizeIsRemembered: a sanitize that failed, or that the next
// unit cannot do, leaves that unit failed until a SANITIZE completes or,
// with AUSE, EXIT FAILURE MODE.
func TestFailedSanitizeIsRemembered(t *testing.T) {
	p := []byte{0x01, 0, 0, 1, 0x5a}
	overwrite := []byte{0x48, 0x01, 0, 0, 0, 0, 0, 0, byte(len(p)), 0}
	exitFailure := []byte{0x48, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		name   string
		record string
		ause   bool
	}{
		{"failed overwrite", `{"service_action":1,"failed":true}`, false},
		{"failed overwrite with AUSE", `{"service_action":1,"ause":true,"failed":true}`, true},
		{"block erase on a unit that is not thin", `{"service_action":2}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &memStore{data: []byte(tc.record)}
			f := newFixture(t, scsi.UnitConfig{SanitizeState: st})
			f.fails(tur, nil, 0, scsi.SenseMediumError, 0x31, 0x03)
			f.fails(read10(0, 1), nil, bs, scsi.SenseMediumError, 0x31, 0x03)
			if tc.ause {
				f.good(exitFailure, nil, 0)
			} else {
				f.fails(exitFailure, nil, 0, scsi.SenseIllegalRequest, 0x24, 0)
				f.good(overwrite, p, 0) // a SANITIZE that completes ends it
			}
			f.good(tur, nil, 0)
			require.Empty(t, st.stored())
		})
	}

	// A device that fails the overwrite stores the failure.
	faulty := backend.NewFaulty(backend.NewMemory(blocks * bs))
	faulty.Add(backend.Fault{Op: backend.FaultWrite, Fail: true})
	st := &memStore{}
	f := newFixtureOn(t, faulty, scsi.UnitConfig{SanitizeState: st})
	f.fails(overwrite, p, 0, scsi.SenseMediumError, 0x0c, 0x00)
	require.Contains(t, string(st.stored()), `"failed":true`)

	// A sanitize whose record cannot be stored does not start.
	st = &memStore{failSave: true}
	f = newFixture(t, scsi.UnitConfig{SanitizeState: st})
	f.fails(overwrite, p, 0, scsi.SenseMediumError, 0x0c, 0x00)
	f.good(tur, nil, 0)
	// A damaged record is refused at start.
	st = &memStore{data: []byte("{")}
	_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{SanitizeState: st})
	require.ErrorContains(t, err, "sanitize record")
}

// nopClose keeps a device open when its unit closes, so a second unit
// can take it over as after a restart.
type nopClose struct{ backend.Device }

func (nopClose) Close() error { return nil }

func TestSanitizeRate(t *testing.T) {
	// 1 MiB at 512 KiB/s: the overwrite cannot be done before about 2 s.
	f := newFixture(t, scsi.UnitConfig{SanitizeRate: 512 << 10})
	p := []byte{0x01, 0, 0, 1, 0x5a}
	f.good([]byte{0x48, 0x81, 0, 0, 0, 0, 0, 0, byte(len(p)), 0}, p, 0)
	time.Sleep(500 * time.Millisecond)
	f.fails(tur, nil, 0, scsi.SenseNotReady, 0x04, 0x1b)
	require.Eventually(t, func() bool {
		return f.run(nexusA, 0, tur, nil, 0).Status == scsi.StatusGood
	}, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, bytes.Repeat([]byte{0x5a}, bs), f.good(read10(blocks-1, 1), nil, bs))

	// Closing the unit does not wait for a throttled sanitize to finish.
	_, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{SanitizeRate: -1})
	require.Error(t, err)
	slow := newFixture(t, scsi.UnitConfig{SanitizeRate: 1})
	slow.good([]byte{0x48, 0x81, 0, 0, 0, 0, 0, 0, byte(len(p)), 0}, p, 0)
	closed := make(chan error, 1)
	go func() { closed <- slow.lu.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a throttled sanitize")
	}
}

func TestSanitizeUnderReservation(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true})
	f.good([]byte{0x16, 0, 0, 0, 0, 0}, nil, 0)
	require.Equal(t, scsi.StatusReservationConflict, f.run(nexusB, 0, []byte{0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0).Status)
}

func TestExtendedCopy(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThirdPartyCopy: true})
	other, err := scsi.NewLogicalUnit(backend.NewMemory(blocks*bs), scsi.UnitConfig{Serial: "unit1", ThirdPartyCopy: true})
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	require.NoError(t, f.tgt.Attach(1, other))
	f.clearUAs(nexusA)
	f.run(nexusA, 1, tur, nil, 0) // POWER ON OCCURRED of the new unit

	// The NAA designators of both units, from VPD page 0x83.
	naa := func(lun uint16) []byte {
		res := f.run(nexusA, lun, []byte{0x12, 1, 0x83, 0, 255, 0}, nil, 255)
		require.Equal(t, scsi.StatusGood, res.Status)
		return append([]byte(nil), f.lastIn[4:4+4+int(f.lastIn[7])]...)
	}
	cscd := func(desig []byte) []byte {
		d := make([]byte, 32)
		d[0] = 0xe4
		copy(d[4:], desig)
		d[30], d[31] = bs>>8, bs&0xff
		return d
	}
	segment := func(src, dst uint16, n uint16, srcLBA, dstLBA uint64) []byte {
		d := make([]byte, 28)
		d[0] = 0x02
		binary.BigEndian.PutUint16(d[2:], 0x18)
		binary.BigEndian.PutUint16(d[4:], src)
		binary.BigEndian.PutUint16(d[6:], dst)
		binary.BigEndian.PutUint16(d[10:], n)
		binary.BigEndian.PutUint64(d[12:], srcLBA)
		binary.BigEndian.PutUint64(d[20:], dstLBA)
		return d
	}
	list := func(listID byte, cscds [][]byte, segs [][]byte) ([]byte, []byte) {
		p := make([]byte, 16)
		p[0] = listID
		var t, s []byte
		for _, d := range cscds {
			t = append(t, d...)
		}
		for _, d := range segs {
			s = append(s, d...)
		}
		binary.BigEndian.PutUint16(p[2:], uint16(len(t)))
		binary.BigEndian.PutUint32(p[8:], uint32(len(s)))
		p = append(append(p, t...), s...)
		cdb := make([]byte, 16)
		cdb[0] = 0x83
		binary.BigEndian.PutUint32(cdb[10:], uint32(len(p)))
		return cdb, p
	}
	src := pattern(64*bs, 11)
	f.good(write10(100, 64), src, 0)
	cdb, p := list(7, [][]byte{cscd(naa(0)), cscd(naa(1))}, [][]byte{segment(0, 1, 64, 100, 5)})
	f.good(cdb, p, 0)
	res := f.run(nexusA, 1, read10(5, 64), nil, 64*bs)
	require.Equal(t, scsi.StatusGood, res.Status)
	require.Equal(t, src, f.lastIn)

	// COPY STATUS of list 7: completed, one segment, 64 blocks.
	status := f.good([]byte{0x84, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, byte(0x01), status[4])
	require.Equal(t, uint16(1), binary.BigEndian.Uint16(status[5:]))
	require.Equal(t, uint32(64*bs), binary.BigEndian.Uint32(status[8:]))
	f.fails([]byte{0x84, 0x00, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256, scsi.SenseIllegalRequest, 0x24, 0)
	ops := f.good([]byte{0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, nil, 256)
	require.Equal(t, uint32(len(ops)-4), binary.BigEndian.Uint32(ops))
	vpd := f.good([]byte{0x12, 1, 0x8f, 0, 255, 0}, nil, 255)
	require.Equal(t, byte(0x8f), vpd[1])

	unknown := cscd(naa(0))
	unknown[11] ^= 0xff // a designator no unit has
	for _, tc := range []struct {
		name      string
		cscds     [][]byte
		segs      [][]byte
		key       scsi.SenseKey
		asc, ascq byte
	}{
		{"unsupported CSCD type", [][]byte{append([]byte{0xe0}, make([]byte, 31)...)}, nil, scsi.SenseIllegalRequest, 0x26, 0x07},
		{"unsupported segment type", [][]byte{cscd(naa(0))}, [][]byte{append([]byte{0x01}, make([]byte, 27)...)}, scsi.SenseIllegalRequest, 0x26, 0x09},
		{"unknown unit", [][]byte{unknown}, [][]byte{segment(0, 0, 1, 0, 1)}, scsi.SenseCopyAborted, 0x0d, 0x02},
		{"index beyond the CSCDs", [][]byte{cscd(naa(0))}, [][]byte{segment(0, 1, 1, 0, 1)}, scsi.SenseCopyAborted, 0x0d, 0x02},
		{"beyond the end", [][]byte{cscd(naa(0))}, [][]byte{segment(0, 0, 2, 0, blocks-1)}, scsi.SenseCopyAborted, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cdb, p := list(0, tc.cscds, tc.segs)
			f.fails(cdb, p, 0, tc.key, tc.asc, tc.ascq)
		})
	}
	// A truncated list and too many CSCDs are refused; length 0 is a no-op.
	cdb, p = list(0, [][]byte{cscd(naa(0))}, [][]byte{segment(0, 0, 1, 0, 1)})
	binary.BigEndian.PutUint32(cdb[10:], uint32(len(p)-1))
	f.fails(cdb, p[:len(p)-1], 0, scsi.SenseIllegalRequest, 0x1a, 0)
	many := make([][]byte, 17)
	for i := range many {
		many[i] = cscd(naa(0))
	}
	cdb, p = list(0, many, nil)
	f.fails(cdb, p, 0, scsi.SenseIllegalRequest, 0x26, 0x06)
	empty := make([]byte, 16)
	empty[0] = 0x83
	f.good(empty, nil, 0)
}

// TestNewCommandsSurviveGarbage sends random CDBs and parameter data to
// the commands of this file's features: every one must end with a status,
// never a panic.
func TestNewCommandsSurviveGarbage(t *testing.T) {
	f := newFixture(t, scsi.UnitConfig{ThinProvisioning: true, Removable: true, ThirdPartyCopy: true, Reservations: &memStore{}})
	seed := uint64(0x9e3779b97f4a7c15)
	next := func() byte {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return byte(seed)
	}
	ops := []byte{0x1b, 0x1e, 0x37, 0x48, 0x5e, 0x5f, 0x83, 0x84, 0x9c, 0xb7, 0x41, 0x93, 0x42, 0x34, 0x90}
	for i := 0; i < 20000; i++ {
		cdb := make([]byte, 16)
		for j := range cdb {
			cdb[j] = next()
		}
		cdb[0] = ops[int(next())%len(ops)]
		if cdb[0] == 0x48 {
			cdb[1] &^= 0x80 // no IMMED: keep the unit from sanitizing in the background
		}
		out := make([]byte, int(next())<<2)
		for j := range out {
			out[j] = next()
		}
		n := nexusA
		if i%3 == 0 {
			n = nexusB
		}
		res := f.run(n, 0, cdb, out, 512)
		// Sense data comes with CHECK CONDITION and only with it, and
		// never more data than the buffer holds.
		require.Equal(t, res.Status == scsi.StatusCheckCondition, len(res.Sense) > 0, "cdb %x: %+v", cdb, res)
		require.LessOrEqual(t, res.DataInLen, 512)
	}
}
