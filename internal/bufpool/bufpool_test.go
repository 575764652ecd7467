package bufpool

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGetLengthsAndCapacities(t *testing.T) {
	var p Pool
	for _, c := range []struct{ n, cap int }{
		{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 8192}, {65536, 65536}, {1 << 24, 1 << 24},
	} {
		b := p.Get(c.n)
		require.Len(t, *b, c.n)
		require.Equal(t, c.cap, cap(*b), "n=%d", c.n)
		p.Put(b)
	}
	big := p.Get(1<<24 + 1)
	require.Len(t, *big, 1<<24+1)
	p.Put(big) // not pooled, must not panic
	foreign := make([]byte, 100)
	p.Put(&foreign) // not from the pool: dropped
}

func BenchmarkGetPut64K(b *testing.B) {
	var p Pool
	b.ReportAllocs()
	for b.Loop() {
		p.Put(p.Get(65536))
	}
}
