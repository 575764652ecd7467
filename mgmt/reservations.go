package mgmt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// StateFile keeps a piece of one extent's unit state in a file: its
// persistent reservations (those registered with APTPL), or the record of
// a SANITIZE that has not completed. It is written the way FileStore
// writes config.json: temporary file, fsync, rename, directory fsync. It
// implements scsi.StateStore.
type StateFile struct {
	Path string
}

// Load returns the file's contents, or nil when there is none.
func (f StateFile) Load() ([]byte, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mgmt: state file: %w", err)
	}
	return b, nil
}

// Save replaces the file with data crash-safely; nil data removes it.
func (f StateFile) Save(data []byte) error {
	dir := filepath.Dir(f.Path)
	if data == nil {
		err := os.Remove(f.Path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("mgmt: state file: %w", err)
		}
		return syncDir(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("mgmt: state file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("mgmt: state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := writeSynced(tmp, data); err != nil {
		return fmt.Errorf("mgmt: state file: write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fmt.Errorf("mgmt: state file: %w", err)
	}
	return syncDir(dir)
}

// reservationFile names the reservations file of an extent inside dir.
func reservationFile(dir string, e Extent) (StateFile, error) {
	p, err := extentFile(dir, e, ".json")
	return StateFile{Path: p}, err
}

// sanitizeFile names the file inside dir that records a SANITIZE of the
// extent until it completes.
func sanitizeFile(dir string, e Extent) (StateFile, error) {
	p, err := extentFile(dir, e, ".sanitize.json")
	return StateFile{Path: p}, err
}

// extentFile names a state file of an extent inside dir: by its UUID when
// it has one (volumes), by its name otherwise, so the state follows the
// extent across renumbering. Validation admits only canonical UUIDs; a
// key that is not one plain file name (a separator, "." or "..") is
// refused here too, so no extent can name a file outside dir.
func extentFile(dir string, e Extent, ext string) (string, error) {
	key := e.UUID
	if key == "" {
		key = "extent-" + strings.NewReplacer("/", "_", "\x00", "_").Replace(e.Name)
	}
	if key == "." || key == ".." || strings.ContainsAny(key, "/\x00") {
		return "", &Error{Kind: KindInvalid, Object: "extent", ID: e.ID, Name: e.Name, Field: "uuid",
			Msg: fmt.Sprintf("%q cannot name a file in %s", key, dir)}
	}
	return filepath.Join(dir, key+ext), nil
}
