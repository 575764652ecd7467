package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestEncryptedExtentWithQemu writes through qemu-img to an encrypted
// extent, checks that only ciphertext reached the file, and reads the data
// back after a restart: the key in STATE/keys is what makes it readable.
func TestEncryptedExtentWithQemu(t *testing.T) {
	stateDir := t.TempDir()
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cfg := fmt.Sprintf(`{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit"},
  "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": %d}]}],
  "targets": [{"id": 1, "name": "default", "groups": [{"portal": 1}]}],
  "extents": [{"id": 1, "name": "secret", "type": "FILE", "path": "%s/secret.img", "filesize": 16777216, "blocksize": 4096, "encrypted": true}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}
`, port, stateDir)
	d := startDaemonWithConfig(t, stateDir, cfg, addr)

	data := bytes.Repeat([]byte("iscsikit plaintext marker\n"), 41000)[:1<<20]
	qemuWrite(t, addr, data)
	require.Equal(t, data, qemuRead(t, addr, len(data)))
	d.stop()

	raw, err := os.ReadFile(filepath.Join(stateDir, "secret.img"))
	require.NoError(t, err)
	require.False(t, bytes.Contains(raw, []byte("plaintext marker")), "plaintext reached the backing file")
	st, err := os.Stat(filepath.Join(stateDir, "keys", "extent-secret.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	runInProcess(t, config{stateDir: stateDir, portal: "127.0.0.1:1"}, nil, addr)
	require.Equal(t, data, qemuRead(t, addr, len(data)), "the data reads back after a restart")
}
