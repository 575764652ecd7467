package mgmt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/scsi"
)

// oneLUN is a configuration that serves e, with id 1, as LUN 0 of target
// "t".
func oneLUN(e Extent) *Config {
	e.ID = 1
	tg := NewTarget()
	tg.ID, tg.Name = 1, "t"
	cfg := EmptyConfig()
	cfg.Targets, cfg.Extents = []Target{tg}, []Extent{e}
	cfg.TargetExtents = []TargetExtent{{ID: 1, Target: 1, Extent: 1, LunID: 0}}
	return cfg
}

// encryptedSetup is a Manager serving one encrypted FILE extent as LUN 0
// of a target, with its keys in dir/keys.
func encryptedSetup(t *testing.T, dir string, store Store) (*Manager, error) {
	t.Helper()
	e := NewExtent()
	e.Name, e.Path, e.Filesize, e.Encrypted = "lun0", filepath.Join(dir, "lun0.img"), 1<<20, true
	m, err := New(ctx, Options{Store: store, Initial: oneLUN(e), KeyDir: filepath.Join(dir, "keys")})
	if err == nil {
		t.Cleanup(func() { m.Close() })
	}
	return m, err
}

// unitRunner runs CDBs straight at the Manager's unit of extent id,
// through a target of its own, once the unit's POWER ON OCCURRED is
// taken.
func unitRunner(t *testing.T, m *Manager, id int) func(cdb, out []byte) scsi.Result {
	t.Helper()
	m.mu.Lock()
	u := m.app.units[id]
	m.mu.Unlock()
	require.NotNil(t, u, "extent %d is not open", id)
	tgt := scsi.NewTarget()
	require.NoError(t, tgt.Attach(0, u.lu))
	nexus := scsi.Nexus{InitiatorPort: "iqn.i,i,0x1", TargetName: "iqn.t", TargetPort: "iqn.t,t,0x1", RelativePortID: 1}
	run := func(cdb, out []byte) scsi.Result {
		return tgt.Execute(context.Background(), &scsi.Command{Nexus: nexus, LUN: scsi.EncodeLUN(0), CDB: cdb, DataOut: out})
	}
	run([]byte{0, 0, 0, 0, 0, 0}, nil)
	return run
}

func TestEncryptedExtent(t *testing.T) {
	dir := t.TempDir()
	store := &MemoryStore{}
	m, err := encryptedSetup(t, dir, store)
	require.NoError(t, err)
	keyPath := filepath.Join(dir, "keys", "extent-lun0.key")
	st, err := os.Stat(keyPath)
	require.NoError(t, err, "the key is created with the extent")
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	run := unitRunner(t, m, 1)
	marker := bytes.Repeat([]byte("plaintext-marker"), 512/16)
	require.Equal(t, scsi.StatusGood, run([]byte{0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0}, marker).Status)
	raw, err := os.ReadFile(filepath.Join(dir, "lun0.img"))
	require.NoError(t, err)
	require.False(t, bytes.Contains(raw, []byte("plaintext-marker")), "plaintext reached the file")

	// The unit offers CRYPTOGRAPHIC ERASE, and it changes the key.
	before, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	require.Equal(t, scsi.StatusGood, run([]byte{0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0}, nil).Status)
	after, err := os.ReadFile(keyPath)
	require.NoError(t, err)
	require.NotEqual(t, before, after)

	// Encryption cannot be switched off under data in use.
	_, err = m.UpdateExtent(ctx, 1, func(e *Extent) error { e.Encrypted = false; return nil })
	var me *Error
	require.True(t, errors.As(err, &me), "%v", err)
	require.Equal(t, "encrypted", me.Field)

	// Nor renamed: the name names the key file.
	_, err = m.UpdateExtent(ctx, 1, func(e *Extent) error { e.Name = "renamed"; return nil })
	require.True(t, errors.As(err, &me), "%v", err)
	require.Equal(t, "name", me.Field)

	// The same storage declared unencrypted is refused while its key
	// file exists: it would serve ciphertext as data.
	m.Close()
	plain := m.Config(true)
	plain.Extents[0].Encrypted = false
	_, err = New(ctx, Options{Store: &MemoryStore{}, Initial: plain, KeyDir: filepath.Join(dir, "keys")})
	require.True(t, errors.As(err, &me), "%v", err)
	require.Equal(t, "encrypted", me.Field)
	require.ErrorContains(t, err, "key file")

	// A key file lost from under data is reported, not replaced.
	require.NoError(t, os.Remove(keyPath))
	_, err = New(ctx, Options{Store: store, KeyDir: filepath.Join(dir, "keys")})
	require.ErrorContains(t, err, "key file")
	require.ErrorContains(t, err, "holds data")
	_, err = os.Stat(keyPath)
	require.ErrorIs(t, err, os.ErrNotExist)

	// Without a key directory an encrypted extent is refused.
	_, err = New(ctx, Options{Store: store})
	require.True(t, errors.As(err, &me), "%v", err)
	require.Equal(t, "encrypted", me.Field)
}

func TestSanitizeRateSetting(t *testing.T) {
	e := NewExtent()
	e.Name, e.SanitizeRateMiBps = "x", 32
	uc, err := unitConfig(e)
	require.NoError(t, err)
	require.Equal(t, int64(32<<20), uc.SanitizeRate)

	cfg := EmptyConfig()
	e.ID, e.Path, e.Filesize, e.SanitizeRateMiBps = 1, "/srv/x.img", 1<<20, -1
	cfg.Extents = append(cfg.Extents, e)
	err = Validate(cfg, nil)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorContains(t, err, "sanitize_rate_mibps")
}

// noAllocation hides a device's allocation reporting, as a block device
// or a product's own backend may lack it.
type noAllocation struct{ backend.Device }

func TestEncryptedExtentOnStorageThatCannotTell(t *testing.T) {
	dir := t.TempDir()
	e := NewExtent()
	e.Name, e.Path, e.Filesize, e.Encrypted = "lun0", filepath.Join(dir, "lun0.img"), 1<<20, true
	cfg := oneLUN(e)
	open := openerFunc(func(e Extent) (backend.Device, error) {
		dev, err := FileOpener{}.Open(e)
		return noAllocation{dev}, err
	})
	opt := Options{Store: &MemoryStore{}, Initial: cfg, KeyDir: filepath.Join(dir, "keys"), Openers: map[string]Opener{ExtentFile: open}}
	_, err := New(ctx, opt)
	require.ErrorContains(t, err, "cannot tell", "no key is made up for storage that may hold data")

	// A key put in place by hand is used.
	key, err := backend.NewEncryptionKey()
	require.NoError(t, err)
	require.NoError(t, backend.KeyFile{Path: filepath.Join(dir, "keys", "extent-lun0.key")}.Store(key))
	m, err := New(ctx, opt)
	require.NoError(t, err)
	m.Close()
}
