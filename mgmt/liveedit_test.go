package mgmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
)

// liveLUN serves one FILE extent of size bytes as LUN 0 of target "t" on
// a fresh server, and returns the Manager, the portal address and the
// extent's id.
func liveLUN(t *testing.T, size int64) (*Manager, string, int) {
	t.Helper()
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "lun0", filepath.Join(t.TempDir(), "lun0.img"), size
	return serveLUN(t, Options{}, e)
}

// serveLUN serves extent e as LUN 0 of target "t" through a Manager with
// opt on a fresh server, and returns the Manager, the portal address and
// the extent's id.
func serveLUN(t *testing.T, opt Options, e Extent) (*Manager, string, int) {
	t.Helper()
	srv, addr, port := liveServer(t)
	opt.Server = srv
	m, err := New(ctx, opt)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Groups = "t", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 0})
	require.NoError(t, err)
	return m, addr, e.ID
}

// retryUA runs op until it ends other than with a unit attention (which
// an initiator retries: it is news, not an I/O error).
func retryUA(op func() error) error {
	for {
		err := op()
		var se *initiator.StatusError
		if errors.As(err, &se) {
			if key, _, _ := se.SenseKey(); key == 6 {
				continue
			}
		}
		return err
	}
}

// TestLiveEditFailsNoIO is bug 5: UpdateExtent of write_cache, comment
// and avail_threshold while initiators write and read back the same LU
// (Go initiators, and qemu-img bench when installed) must fail no I/O.
func TestLiveEditFailsNoIO(t *testing.T) {
	const bs, size = 512, 64 << 20
	m, addr, id := liveLUN(t, size)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":t", InitiatorName: fmt.Sprintf("iqn.2026-11.test:w%d", w)})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			data := make([]byte, 64<<10)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for j := range data {
					data[j] = byte(i + j + w)
				}
				lba := uint64((16<<20)/bs + w*(8<<20)/bs + (i%64)*len(data)/bs)
				if err := retryUA(func() error { return c.WriteBlocks(ctx, 0, lba, data, bs, false) }); err != nil {
					errs <- fmt.Errorf("write %d: %w", i, err)
					return
				}
				var back []byte
				if err := retryUA(func() (err error) { back, err = c.ReadBlocks(ctx, 0, lba, uint32(len(data)/bs), bs); return err }); err != nil {
					errs <- fmt.Errorf("read %d: %w", i, err)
					return
				}
				if !bytes.Equal(back, data) {
					errs <- fmt.Errorf("read %d: data differs from what was written", i)
					return
				}
			}
		}()
	}
	bench := make(chan error, 1)
	if qemu, err := exec.LookPath("qemu-img"); err == nil {
		// qemu-img writes the first 16 MiB (wrapping around), the Go
		// initiators above.
		cmd := exec.Command(qemu, "bench", "-t", "none", "-w", "-c", "40000", "-d", "16", "-s", "4096", "--image-opts",
			"driver=raw,size=16777216,file.driver=iscsi,file.transport=tcp,file.portal="+addr+",file.target="+DefaultBasename+":t,file.lun=0")
		go func() {
			out, err := cmd.CombinedOutput()
			if err != nil {
				err = fmt.Errorf("qemu-img bench: %w\n%s", err, out)
			}
			bench <- err
		}()
	} else {
		t.Log("qemu-img not installed: Go initiators only")
		bench <- nil
	}
	threshold := 70
	for i := range 30 {
		_, err := m.UpdateExtent(ctx, id, func(e *Extent) error {
			e.WriteCache = !e.WriteCache
			e.Comment = fmt.Sprintf("edit %d", i)
			threshold = 50 + i
			e.AvailThreshold = &threshold
			return nil
		})
		require.NoError(t, err)
	}
	benchErr := <-bench
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	require.NoError(t, benchErr)
	require.Equal(t, "edit 29", m.Config(false).Extents[0].Comment)
}

// TestLiveEditOfAnIdleCommandLessUnit: edits with nobody logged in also
// reopen in place, and Close reports nothing.
func TestLiveEditClosesClean(t *testing.T) {
	m, _, id := liveLUN(t, 1<<20)
	_, err := m.UpdateExtent(ctx, id, func(e *Extent) error { e.WriteCache = false; return nil })
	require.NoError(t, err)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "a second Close changes nothing")
	_ = context.Background
}

// TestLiveGrow grows a FILE extent while an initiator is logged in: the
// file grows, the initiator hears CAPACITY DATA HAS CHANGED and reads
// the new capacity; a shrink is refused naming the field.
func TestLiveGrow(t *testing.T) {
	m, addr, id := liveLUN(t, 1<<20)
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":t"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }))
	blocks, _, err := c.ReadCapacity16(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(1<<20/512), blocks)

	e, err := m.UpdateExtent(ctx, id, func(e *Extent) error { e.Filesize = 4 << 20; return nil })
	require.NoError(t, err)
	fi, err := os.Stat(e.Path)
	require.NoError(t, err)
	require.Equal(t, int64(4<<20), fi.Size(), "the file grew")
	var se *initiator.StatusError
	require.ErrorAs(t, c.TestUnitReady(ctx, 0), &se)
	key, asc, ascq := se.SenseKey()
	require.Equal(t, [3]byte{6, 0x2a, 0x09}, [3]byte{key, asc, ascq}, "CAPACITY DATA HAS CHANGED")
	require.NoError(t, retryUA(func() error { return c.TestUnitReady(ctx, 0) }))
	blocks, _, err = c.ReadCapacity16(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(4<<20/512), blocks)

	_, err = m.UpdateExtent(ctx, id, func(e *Extent) error { e.Filesize = 2 << 20; return nil })
	var me *Error
	require.ErrorAs(t, err, &me)
	require.Equal(t, "filesize", me.Field)
	require.ErrorContains(t, err, "may grow, not shrink")
	require.Equal(t, int64(4<<20), m.Config(false).Extents[0].Filesize)
	blocks, _, err = c.ReadCapacity16(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(4<<20/512), blocks)
}
