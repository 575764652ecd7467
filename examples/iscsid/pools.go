package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/iscsikit/iscsikit/mgmt"
)

// poolFlags collects --pool NAME=DIR flags.
type poolFlags []mgmt.Pool

func (p *poolFlags) String() string {
	var parts []string
	for _, x := range *p {
		parts = append(parts, x.Name+"="+x.Path)
	}
	return strings.Join(parts, ",")
}

// Set parses one NAME=DIR; DIR must be an existing directory.
func (p *poolFlags) Set(v string) error {
	name, dir, ok := strings.Cut(v, "=")
	if !ok || name == "" || dir == "" {
		return fmt.Errorf("want NAME=DIR, got %q", v)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	*p = append(*p, mgmt.Pool{Name: name, Type: mgmt.PoolFS, Path: abs})
	return nil
}

// ensurePools makes the configuration hold the pools named on the
// command line (pools are host configuration, not made through an API);
// pools the file already has with the same name and path stay as they are.
func ensurePools(ctx context.Context, m *mgmt.Manager, pools []mgmt.Pool) error {
	if len(pools) == 0 {
		return nil
	}
	cfg := m.Config(true)
	changed := false
	for _, want := range pools {
		found := false
		for i, have := range cfg.Pools {
			if have.Name != want.Name {
				continue
			}
			found = true
			if have.Type != want.Type || have.Path != want.Path {
				cfg.Pools[i].Type, cfg.Pools[i].Path = want.Type, want.Path
				changed = true
			}
		}
		if !found {
			want.ID = len(cfg.Pools) + 1
			for _, have := range cfg.Pools {
				want.ID = max(want.ID, have.ID+1)
			}
			cfg.Pools = append(cfg.Pools, want)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := m.Replace(ctx, cfg); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	return nil
}
