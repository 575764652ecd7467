package backend

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is a KeyStore that keeps an Encrypted device's key in a file
// of its own, readable by its owner only. A new key overwrites the old
// one in place and is flushed before Store returns, so on a file system
// that writes in place the old key's bytes are gone from the medium (a
// copy-on-write file system or a snapshot may keep them: put the file
// where neither happens, or keep keys in a KeyStore of your own).
type KeyFile struct {
	Path string
}

// Load reads the key; a missing file matches fs.ErrNotExist.
func (f KeyFile) Load() ([]byte, error) {
	key, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, err
	}
	if len(key) != EncryptionKeySize {
		return nil, fmt.Errorf("backend: key file %s holds %d bytes, want %d", f.Path, len(key), EncryptionKeySize)
	}
	return key, nil
}

// Store writes key over the file's contents, creating the file (and its
// directory) when missing, and syncs it to stable storage.
func (f KeyFile) Store(key []byte) error {
	if len(key) != EncryptionKeySize {
		return fmt.Errorf("backend: key is %d bytes, want %d", len(key), EncryptionKeySize)
	}
	dir := filepath.Dir(f.Path)
	_, statErr := os.Stat(f.Path)
	created := errors.Is(statErr, fs.ErrNotExist)
	if created {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	file, err := os.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = file.Chmod(0o600) // an existing file may have been widened
	if err == nil {
		_, err = file.WriteAt(key, 0)
	}
	if err == nil {
		err = file.Truncate(int64(len(key)))
	}
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil || !created {
		return err
	}
	// A new file must survive a crash too: sync its directory entry.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
