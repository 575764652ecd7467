package initiator

import (
	"context"
	"encoding/binary"
	"fmt"
)

// SCSI opcodes used by the helpers.
const (
	opTestUnitReady   = 0x00
	opInquiry         = 0x12
	opRead16          = 0x88
	opWrite16         = 0x8a
	opServiceActionIn = 0x9e
	saReadCapacity16  = 0x10
	opReportLUNs      = 0xa0
)

// Check returns nil for a GOOD command completed at the target, and a
// *StatusError otherwise.
func (r *Response) Check() error {
	if r.Response != 0 || r.Status != 0 {
		return &StatusError{Response: r.Response, Status: r.Status, Sense: r.Sense}
	}
	return nil
}

// SenseKey returns the sense key, ASC and ASCQ of the response's sense data.
func (r *Response) SenseKey() (key, asc, ascq byte) { return ParseSense(r.Sense) }

func (c *Conn) run(ctx context.Context, lun uint64, cdb, out []byte, in int) (*Response, error) {
	resp, err := c.Command(ctx, lun, cdb, out, in)
	if err != nil {
		return nil, err
	}
	return resp, resp.Check()
}

// TestUnitReady sends TEST UNIT READY.
func (c *Conn) TestUnitReady(ctx context.Context, lun uint64) error {
	_, err := c.run(ctx, lun, make([]byte, 6), nil, 0)
	return err
}

// Inquiry sends INQUIRY (with EVPD and page code when evpd) and returns
// the data the target sent, at most allocLen bytes.
func (c *Conn) Inquiry(ctx context.Context, lun uint64, evpd bool, page byte, allocLen uint16) ([]byte, error) {
	cdb := make([]byte, 6)
	cdb[0] = opInquiry
	if evpd {
		cdb[1] = 0x01
		cdb[2] = page
	}
	binary.BigEndian.PutUint16(cdb[3:5], allocLen)
	resp, err := c.run(ctx, lun, cdb, nil, int(allocLen))
	if err != nil {
		return nil, err
	}
	return resp.Data, nil
}

// ReadCapacity16 sends READ CAPACITY (16) and returns the number of
// logical blocks (last LBA + 1) and the logical block length.
func (c *Conn) ReadCapacity16(ctx context.Context, lun uint64) (blocks uint64, blockSize uint32, err error) {
	cdb := make([]byte, 16)
	cdb[0], cdb[1] = opServiceActionIn, saReadCapacity16
	binary.BigEndian.PutUint32(cdb[10:14], 32)
	resp, err := c.run(ctx, lun, cdb, nil, 32)
	if err != nil {
		return 0, 0, err
	}
	if len(resp.Data) < 12 {
		return 0, 0, fmt.Errorf("initiator: READ CAPACITY (16) returned %d bytes", len(resp.Data))
	}
	return binary.BigEndian.Uint64(resp.Data[0:8]) + 1, binary.BigEndian.Uint32(resp.Data[8:12]), nil
}

// ReportLUNs sends REPORT LUNS (select report 0) and returns the raw
// 8-byte LUN fields listed.
func (c *Conn) ReportLUNs(ctx context.Context) ([]uint64, error) {
	const alloc = 64 << 10
	cdb := make([]byte, 12)
	cdb[0] = opReportLUNs
	binary.BigEndian.PutUint32(cdb[6:10], alloc)
	resp, err := c.run(ctx, 0, cdb, nil, alloc)
	if err != nil {
		return nil, err
	}
	d := resp.Data
	if len(d) < 8 {
		return nil, fmt.Errorf("initiator: REPORT LUNS returned %d bytes", len(d))
	}
	n := int(binary.BigEndian.Uint32(d[0:4])) / 8
	var luns []uint64
	for i := 0; i < n && 8+8*i+8 <= len(d); i++ {
		luns = append(luns, binary.BigEndian.Uint64(d[8+8*i:]))
	}
	return luns, nil
}

// ReadBlocks reads blocks logical blocks of blockSize bytes at lba with
// READ (16).
func (c *Conn) ReadBlocks(ctx context.Context, lun, lba uint64, blocks uint32, blockSize int) ([]byte, error) {
	cdb := make([]byte, 16)
	cdb[0] = opRead16
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], blocks)
	n := int(blocks) * blockSize
	resp, err := c.run(ctx, lun, cdb, nil, n)
	if err != nil {
		return nil, err
	}
	if len(resp.Data) != n {
		return nil, fmt.Errorf("initiator: READ (16) returned %d bytes, want %d", len(resp.Data), n)
	}
	return resp.Data, nil
}

// WriteBlocks writes data, a whole number of blockSize blocks, at lba with
// WRITE (16), setting FUA when fua.
func (c *Conn) WriteBlocks(ctx context.Context, lun, lba uint64, data []byte, blockSize int, fua bool) error {
	if blockSize <= 0 || len(data)%blockSize != 0 {
		return fmt.Errorf("initiator: %d bytes is not a whole number of %d-byte blocks", len(data), blockSize)
	}
	cdb := make([]byte, 16)
	cdb[0] = opWrite16
	if fua {
		cdb[1] = 0x08
	}
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], uint32(len(data)/blockSize))
	_, err := c.run(ctx, lun, cdb, data, 0)
	return err
}
