package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Store keeps the configuration. FileStore is the default; a product that
// keeps its configuration in its own database implements Store over it.
type Store interface {
	// Load returns the saved configuration, or an error wrapping
	// fs.ErrNotExist when nothing was ever saved.
	Load(ctx context.Context) (*Config, error)
	// Save replaces the saved configuration atomically: after a crash,
	// Load returns either the old or the new one, never a mix.
	Save(ctx context.Context, cfg *Config) error
}

// FileStore keeps the configuration in Dir/config.json, readable only by
// its owner (it holds CHAP secrets).
type FileStore struct {
	Dir string

	beforeRename func() // test hook: runs after the temporary file is synced
}

// ConfigFile is the name of FileStore's file inside its directory.
const ConfigFile = "config.json"

// Path returns the file's path.
func (s FileStore) Path() string { return filepath.Join(s.Dir, ConfigFile) }

// Load reads and decodes the file, migrating older versions. Unknown
// fields are refused, so a typo in a hand-written file is reported rather
// than ignored.
func (s FileStore) Load(ctx context.Context) (*Config, error) {
	b, err := os.ReadFile(s.Path())
	if err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	return DecodeConfig(b)
}

// DecodeConfig parses a configuration file's contents.
func DecodeConfig(b []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := bytes.Count(b[:se.Offset], []byte("\n")) + 1
			return nil, fmt.Errorf("mgmt: %s line %d: %w", ConfigFile, line, err)
		}
		return nil, fmt.Errorf("mgmt: %s: %w", ConfigFile, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("mgmt: %s: text after the configuration object", ConfigFile)
	}
	if cfg.Version == 0 {
		return nil, &Error{Kind: KindInvalid, Object: "config", Field: "version", Msg: fmt.Sprintf("missing; write \"version\": %d", ConfigVersion)}
	}
	if cfg.Version > ConfigVersion {
		return nil, &Error{Kind: KindUnsupported, Object: "config", Field: "version", Msg: fmt.Sprintf("%d is newer than this build reads (%d)", cfg.Version, ConfigVersion)}
	}
	cfg.migrate()
	return &cfg, nil
}

// migrate brings a configuration of an older version to ConfigVersion,
// one step at a time; a current one is left as it is.
func (c *Config) migrate() {
	if c.Version == 1 {
		// Version 1 told a pool volume adopted as an extent by its name:
		// the extent's differed from the volume's.
		for i := range c.Extents {
			if e := &c.Extents[i]; e.Pool != "" && e.Name != VolumeName(*e) {
				e.Adopted = true
			}
		}
		c.Version = 2
	}
}

// Save writes the configuration crash-safely: to a temporary file in the
// same directory, fsynced, renamed over config.json, and the directory
// fsynced so the rename itself is durable.
func (s FileStore) Save(ctx context.Context, cfg *Config) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("mgmt: encode config: %w", err)
	}
	b = append(b, '\n')
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	tmp, err := os.CreateTemp(s.Dir, ".config-*.json")
	if err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := writeSynced(tmp, b); err != nil {
		return fmt.Errorf("mgmt: write %s: %w", tmp.Name(), err)
	}
	if s.beforeRename != nil {
		s.beforeRename()
	}
	if err := os.Rename(tmp.Name(), s.Path()); err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	return syncDir(s.Dir)
}

// writeSynced writes b to f with mode 0600, fsyncs and closes it.
func writeSynced(f *os.File, b []byte) error {
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory so a rename in it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("mgmt: sync %s: %w", dir, err)
	}
	return nil
}

// MemoryStore keeps the configuration in memory, for tests and for
// products that persist it themselves through Manager.Config.
type MemoryStore struct {
	cfg *Config
}

// Load returns the last saved configuration.
func (s *MemoryStore) Load(ctx context.Context) (*Config, error) {
	if s.cfg == nil {
		return nil, fmt.Errorf("mgmt: %w", fs.ErrNotExist)
	}
	return s.cfg.clone(), nil
}

// Save keeps a copy of cfg.
func (s *MemoryStore) Save(ctx context.Context, cfg *Config) error {
	s.cfg = cfg.clone()
	return nil
}
