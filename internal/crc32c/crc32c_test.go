package crc32c

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// RFC 3720 Appendix B.4 test vectors for CRC32C (values as the uint32 the
// iSCSI digest carries, before little-endian byte placement).
func TestChecksumRFCVectors(t *testing.T) {
	ascending := make([]byte, 32)
	descending := make([]byte, 32)
	for i := range ascending {
		ascending[i] = byte(i)
		descending[i] = byte(31 - i)
	}
	ones := make([]byte, 32)
	for i := range ones {
		ones[i] = 0xff
	}
	cases := []struct {
		name string
		in   []byte
		want uint32
	}{
		{"32 zeroes", make([]byte, 32), 0x8a9136aa},
		{"32 ones", ones, 0x62a8ab43},
		{"ascending", ascending, 0x46dd794e},
		{"descending", descending, 0x113fdb5c},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, c.want, Checksum(c.in))
			require.Equal(t, c.want, Update(Update(0, c.in[:7]), c.in[7:]))
		})
	}
}

func BenchmarkChecksum(b *testing.B) {
	for _, size := range []int{48, 8192, 262144} {
		buf := make([]byte, size)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				Checksum(buf)
			}
		})
	}
}
