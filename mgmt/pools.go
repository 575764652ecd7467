package mgmt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/iscsikit/iscsikit/backend"
)

// PoolInfo is a pool with its space, as seed 003's pool_list reports it.
type PoolInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Size     int64  `json:"size"`
	FreeSize int64  `json:"free_size"`
}

// Volume is a volume of a pool (seed 003's vol_list): an extent allocated
// from it.
type Volume struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	UUID string `json:"uuid"`
	Pool string `json:"pool"`
}

// Pools lists the configured pools with their size and free space: a
// directory pool's file system, a block pool's device, and a pool of an
// Opener's type from the Opener when it is a PoolSizer (0 otherwise).
func (m *Manager) Pools() ([]PoolInfo, error) {
	cfg := m.Config(false)
	out := []PoolInfo{}
	for _, p := range cfg.Pools {
		info := PoolInfo{Name: p.Name, Type: p.Type}
		switch p.Type {
		case PoolFS:
			var st unix.Statfs_t
			if err := unix.Statfs(p.Path, &st); err != nil {
				return nil, &Error{Kind: KindNotFound, Object: "pool", ID: p.ID, Name: p.Name, Field: "path", Msg: err.Error()}
			}
			info.Size = int64(st.Blocks) * st.Bsize
			info.FreeSize = int64(st.Bavail) * st.Bsize
		case PoolBlock:
			dev, err := backend.OpenFile(p.Path, backend.FileOptions{ReadOnly: true})
			if err != nil {
				return nil, &Error{Kind: KindNotFound, Object: "pool", ID: p.ID, Name: p.Name, Field: "path", Msg: err.Error()}
			}
			info.Size = dev.Size()
			dev.Close()
			info.FreeSize = info.Size
			for _, e := range cfg.Extents {
				if e.Pool == p.Name {
					info.FreeSize = 0
				}
			}
		default:
			if ps, ok := m.open.maker(p.Type).(PoolSizer); ok {
				size, free, err := ps.PoolSpace(p)
				if err != nil {
					return nil, &Error{Kind: KindNotFound, Object: "pool", ID: p.ID, Name: p.Name, Field: "params", Msg: err.Error()}
				}
				info.Size, info.FreeSize = size, free
			}
		}
		out = append(out, info)
	}
	return out, nil
}

// pool finds a pool by name.
func (c *Config) pool(name string) (Pool, error) {
	for _, p := range c.Pools {
		if p.Name == name {
			return p, nil
		}
	}
	return Pool{}, &Error{Kind: KindNotFound, Object: "pool", Name: name, Msg: "does not exist"}
}

// Volumes lists the volumes of a pool.
func (m *Manager) Volumes(pool string) ([]Volume, error) {
	cfg := m.Config(false)
	if _, err := cfg.pool(pool); err != nil {
		return nil, err
	}
	out := []Volume{}
	for _, e := range cfg.Extents {
		if e.Pool == pool {
			out = append(out, volumeOf(e))
		}
	}
	return out, nil
}

func volumeOf(e Extent) Volume {
	return Volume{Name: VolumeName(e), Size: e.Filesize, UUID: e.UUID, Pool: e.Pool}
}

// ZvolPrefix starts a DISK extent's disk that names a pool volume the way
// FreeNAS and TrueNAS name a zvol: "zvol/POOL/NAME".
const ZvolPrefix = "zvol/"

// ParseZvol splits "zvol/POOL/NAME"; ok is false for anything else.
func ParseZvol(disk string) (pool, name string, ok bool) {
	rest, ok := strings.CutPrefix(disk, ZvolPrefix)
	if !ok {
		return "", "", false
	}
	pool, name, ok = strings.Cut(rest, "/")
	return pool, name, ok && pool != "" && name != "" && !strings.Contains(name, "/")
}

// VolumeName is the name of the pool volume that extent e is: in a
// directory pool the name of its file (NAME.img), which stays when the
// extent is renamed (a FreeNAS extent made over zvol/POOL/NAME takes the
// extent name the client gives); otherwise the extent's name.
func VolumeName(e Extent) string {
	if e.Pool != "" && e.Type == ExtentFile && e.Path != "" {
		return strings.TrimSuffix(filepath.Base(e.Path), ".img")
	}
	return e.Name
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// CreateVolume allocates a volume of size bytes named name in pool: a
// sparse file in a directory pool, the device itself in a block pool
// (which holds one volume). The volume is an extent (named name) that
// target-extent maps can export.
func (m *Manager) CreateVolume(ctx context.Context, pool, name string, size int64) (Volume, error) {
	if !validName(name) {
		return Volume{}, &Error{Kind: KindInvalid, Object: "volume", Name: name, Field: "name", Msg: "must be letters, digits, '_' and '-'"}
	}
	if size <= 0 || size%512 != 0 {
		return Volume{}, &Error{Kind: KindInvalid, Object: "volume", Name: name, Field: "size", Msg: fmt.Sprintf("%d is not a positive multiple of 512", size)}
	}
	p, err := m.Config(false).pool(pool)
	if err != nil {
		return Volume{}, err
	}
	e := NewExtent()
	e.Name, e.Pool, e.UUID, e.Filesize = name, pool, newUUID(), size
	maker := m.open.maker(p.Type)
	switch p.Type {
	case PoolFS:
		e.Type, e.Path = ExtentFile, filepath.Join(p.Path, name+".img")
	case PoolBlock:
		e.Type, e.Disk = ExtentDisk, p.Path
	default:
		e.Type, e.Params = p.Type, maps.Clone(p.Params)
	}
	created, made := false, false
	err = m.change(ctx, func(c *Config) error {
		for _, x := range c.Extents {
			if x.Pool == pool && p.Type == PoolBlock {
				return &Error{Kind: KindExists, Object: "pool", ID: p.ID, Name: pool, Msg: "a block pool holds one volume, " + x.Name}
			}
		}
		e.ID = NewID(c, c.Extents)
		if p.Type == PoolFS {
			// Allocate now, as a volume create does, so that space and
			// name clashes show up here rather than at export time.
			if _, err := os.Stat(e.Path); err == nil {
				return &Error{Kind: KindExists, Object: "volume", Name: name, Field: "name", Msg: e.Path + " already exists"}
			}
			f, err := backend.OpenFile(e.Path, backend.FileOptions{Size: size, Create: true})
			if err != nil {
				return &Error{Kind: KindInvalid, Object: "volume", Name: name, Msg: err.Error()}
			}
			f.Close()
			created = true
		}
		if maker != nil && !made {
			if e.Params == nil {
				e.Params = map[string]string{} // the maker completes them
			}
			if err := maker.MakeVolume(p, &e); err != nil {
				return &Error{Kind: KindInvalid, Object: "volume", Name: name, Msg: err.Error()}
			}
			made = true
		}
		c.Extents = append(c.Extents, e)
		return nil
	})
	if err != nil {
		if created {
			os.Remove(e.Path) // allocated for a change that was then refused
		}
		if made {
			maker.DeleteVolume(e)
		}
		return Volume{}, err
	}
	return volumeOf(e), nil
}

// VolumeExtent finds the extent that is volume name of pool.
func (c *Config) VolumeExtent(pool, name string) (Extent, error) {
	for _, e := range c.Extents {
		if e.Pool == pool && VolumeName(e) == name {
			return e, nil
		}
	}
	return Extent{}, &Error{Kind: KindNotFound, Object: "volume", Name: pool + "/" + name, Msg: "does not exist"}
}

// DestroyVolume deletes a volume and its data (a directory pool's file,
// the storage of a VolumeMaker's volume);
// an exported volume must be unexported first, and an adopted one
// released (KindInUse). The volume is looked up and its data removed
// under the Manager's lock.
func (m *Manager) DestroyVolume(ctx context.Context, pool, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.deleteExtentLocked(ctx, func(c *Config) (int, error) {
		e, err := c.VolumeExtent(pool, name)
		if err == nil && e.Adopted {
			err = &Error{Kind: KindInUse, Object: "volume", Name: pool + "/" + name,
				Msg: fmt.Sprintf("is the storage of extent %d (%s); delete the extent first", e.ID, e.Name)}
		}
		return e.ID, err
	}, true, false)
	if err != nil {
		return err
	}
	if maker := m.open.maker(e.Type); maker != nil {
		if err := maker.DeleteVolume(e); err != nil {
			return fmt.Errorf("mgmt: volume %s/%s deleted, but its storage stays: %w", pool, name, err)
		}
	}
	return nil
}

// CopyVolume creates volume dst in pool with the size and contents of
// volume src (holes stay holes in a directory pool).
func (m *Manager) CopyVolume(ctx context.Context, pool, src, dst string) (Volume, error) {
	return m.CopyVolumeSize(ctx, pool, src, dst, 0)
}

// CopyVolumeSize is CopyVolume making dst size bytes (0 means src's
// size): a larger copy holds src's contents followed by zeroes; a
// smaller one, which could not hold them, is refused.
func (m *Manager) CopyVolumeSize(ctx context.Context, pool, src, dst string, size int64) (Volume, error) {
	e, err := m.Config(false).VolumeExtent(pool, src)
	if err != nil {
		return Volume{}, err
	}
	if e.Type != ExtentFile && e.Type != ExtentDisk {
		return Volume{}, &Error{Kind: KindInvalid, Object: "volume", Name: pool + "/" + src, Msg: "copying a volume of type " + e.Type + " is not supported"}
	}
	if size == 0 {
		size = e.Filesize
	}
	if size < e.Filesize {
		return Volume{}, &Error{Kind: KindInvalid, Object: "volume", Name: dst, Field: "size",
			Msg: fmt.Sprintf("%d is smaller than volume %s (%d bytes), whose contents the copy holds", size, src, e.Filesize)}
	}
	v, err := m.CreateVolume(ctx, pool, dst, size)
	if err != nil {
		return Volume{}, err
	}
	ne, err := m.Config(false).VolumeExtent(pool, dst)
	if err == nil {
		err = copyData(ctx, e.devicePath(), ne.devicePath(), e.Filesize)
	}
	if err != nil {
		m.DestroyVolume(ctx, pool, dst)
		return Volume{}, fmt.Errorf("mgmt: copy volume %s to %s: %w", src, dst, err)
	}
	return v, nil
}

// copyData copies size bytes from src to dst, skipping runs of zeroes so
// a sparse source stays sparse.
func copyData(ctx context.Context, src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		n, err := in.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 && !isZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				out.Close()
				return werr
			}
		}
		off += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, fs.ErrClosed) {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// AdoptVolume makes volume name of pool an extent, for a front-end where
// volumes and extents are apart (an extent made on a zvol in TrueNAS or
// FreeNAS): fn sets the extent's name and settings on a copy of the
// volume's extent, whose storage (type, path or disk, params, size, pool
// and UUID) then stays the volume's, and the extent is marked Adopted.
// The volume keeps its name (VolumeName): a volume that is not a file of
// a directory pool is named by its extent, which must then bear that
// name (KindInvalid, field "name"). A volume serves one extent at a time: one already adopted is refused
// (KindExists, field "disk"). The volume is found and changed under the
// Manager's lock.
func (m *Manager) AdoptVolume(ctx context.Context, pool, name string, fn func(*Extent) error) (Extent, error) {
	var out Extent
	err := m.change(ctx, func(c *Config) error {
		cur, err := c.VolumeExtent(pool, name)
		if err != nil {
			return err
		}
		if cur.Adopted {
			return &Error{Kind: KindExists, Object: "extent", ID: cur.ID, Name: cur.Name, Field: "disk",
				Msg: fmt.Sprintf("volume %s/%s is already the storage of extent %d (%s)", pool, name, cur.ID, cur.Name)}
		}
		n := cur
		if err := fn(&n); err != nil {
			return err
		}
		n.ID, n.Type, n.Path, n.Disk, n.Params = cur.ID, cur.Type, cur.Path, cur.Disk, cur.Params
		n.Filesize, n.Pool, n.UUID, n.Adopted = cur.Filesize, cur.Pool, cur.UUID, true
		if VolumeName(n) != name {
			return &Error{Kind: KindInvalid, Object: "extent", ID: cur.ID, Name: n.Name, Field: "name",
				Msg: fmt.Sprintf("volume %s/%s is named by its extent (it is not a file of a directory pool): name the extent %q", pool, name, name)}
		}
		i := index[Extent](c.Extents, cur.ID)
		c.Extents[i] = n
		c.normalize()
		out = c.Extents[i]
		return nil
	})
	return out, err
}

// ReleaseVolume gives the pool volume that extent id adopted back to its
// pool: its LUN maps go (refused with KindInUse unless force), and it
// takes its volume's name and a new extent's settings again, keeping its
// storage, identity (serial, NAA) and encryption. Releasing a volume no
// extent adopted only drops its maps. An extent that is not a pool
// volume is left alone: released is false, and the caller deletes it as
// any other. The extent is found and changed under the Manager's lock.
func (m *Manager) ReleaseVolume(ctx context.Context, id int, force bool) (released bool, err error) {
	err = m.change(ctx, func(c *Config) error {
		i := index[Extent](c.Extents, id)
		if i < 0 {
			return &Error{Kind: KindNotFound, Object: "extent", ID: id, Msg: "does not exist"}
		}
		cur := c.Extents[i]
		if cur.Pool == "" {
			return nil
		}
		released = true
		match := func(te TargetExtent) bool { return te.Extent == id }
		if u := mapUsers(c, match); len(u) > 0 {
			if !force {
				return &Error{Kind: KindInUse, Object: "extent", ID: id, Name: cur.Name, Msg: fmt.Sprintf("used by %v; remove those first or delete with force", u)}
			}
			dropMaps(c, match)
		}
		bare := NewExtent()
		bare.ID, bare.Name, bare.Type, bare.Path, bare.Disk, bare.Params = id, VolumeName(cur), cur.Type, cur.Path, cur.Disk, cur.Params
		bare.Filesize, bare.Pool, bare.UUID = cur.Filesize, cur.Pool, cur.UUID
		bare.Serial, bare.NAA, bare.Encrypted = cur.Serial, cur.NAA, cur.Encrypted
		c.Extents[i] = bare
		return nil
	})
	if err != nil {
		released = false
	}
	return released, err
}
