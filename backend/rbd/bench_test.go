//go:build ceph

package rbd

import (
	"context"
	"sync"
	"testing"
)

// benchRead reads 4 KiB blocks of a 64 MiB image, written first, with
// depth goroutines at once against the test cluster; compare it with
// rbd bench --io-type read --io-size 4K --io-threads DEPTH.
func benchRead(b *testing.B, depth int) {
	const size = 64 << 20
	d := openTest(b, testOptions(b, size))
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := d.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	var next sync.Mutex
	i := 0
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range depth {
		wg.Go(func() {
			p := make([]byte, 4096)
			for {
				next.Lock()
				if i >= b.N {
					next.Unlock()
					return
				}
				off := int64(i*4096) % size
				i++
				next.Unlock()
				if _, err := d.ReadAtContext(ctx, p, off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkRead4K(b *testing.B) {
	b.Run("qd1", func(b *testing.B) { benchRead(b, 1) })
	b.Run("qd32", func(b *testing.B) { benchRead(b, 32) })
}
