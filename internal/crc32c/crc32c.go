// Package crc32c computes the CRC32C (Castagnoli) checksum that iSCSI uses
// for header and data digests (RFC 7143 §13.1, RFC 3385).
//
// It uses the standard library's hash/crc32 with the Castagnoli table, which
// on amd64 and arm64 dispatches to the SSE4.2 / ARMv8 CRC instructions.
// BenchmarkChecksum in this package is the yardstick for any replacement:
// github.com/klauspost/crc32 was considered and is only worth adding if it
// beats these figures on the machines we ship for.
package crc32c

import "hash/crc32"

var table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC32C of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, table) }

// Update returns the CRC32C of the bytes already summed into crc followed by b.
func Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, table, b) }
