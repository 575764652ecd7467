// Package crc32c computes the CRC32C (Castagnoli) checksum that iSCSI uses
// for header and data digests (RFC 7143 §13.1, RFC 3385).
//
// It uses the standard library's hash/crc32 with the Castagnoli table, which
// on amd64 and arm64 dispatches to the SSE4.2 / ARMv8 CRC instructions.
// BenchmarkChecksum in this package is the yardstick for any replacement.
// github.com/klauspost/crc32 (v1.3.0) measured the same on 2026-11-24
// (2-core AMD Turin VM, go1.26): 48-byte headers 8.0 ns vs 8.3 ns, 64 KiB
// segments 25.8 GB/s vs 26.0 GB/s; within noise, so it is not worth a
// dependency (the design card keeps it only if at least as fast).
// Re-checked 2026-11-25 (same VM, under load from other jobs; two runs
// each, hash/crc32 vs klauspost): 48 bytes 13.4-16.0 vs 15.2-16.5 ns,
// 8 KiB 17.9-18.5 vs 18.2-20.5 GB/s, 64 KiB 21.0-21.4 vs 19.6-20.5 GB/s,
// 256 KiB 9.9-17.9 vs 20.3-20.4 GB/s: still no consistent winner, so the
// standard library stays.
package crc32c

import "hash/crc32"

var table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC32C of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, table) }

// Update returns the CRC32C of the bytes already summed into crc followed by b.
func Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, table, b) }
