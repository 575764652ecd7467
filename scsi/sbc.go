package scsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/iscsikit/iscsikit/backend"
)

// blockRange decodes the LOGICAL BLOCK ADDRESS and TRANSFER LENGTH of a
// READ, WRITE, VERIFY, WRITE AND VERIFY, ORWRITE or PRE-FETCH CDB, and
// the byte offset of the length field (for sense field pointers).
func blockRange(cdb []byte) (lba uint64, blocks uint32, lenField int) {
	switch cdb[0] >> 5 {
	case 0: // 6-byte: 21-bit LBA, 0 blocks means 256
		lba = uint64(be32(cdb[0:4]) & 0x1fffff)
		blocks = uint32(cdb[4])
		if blocks == 0 {
			blocks = 256
		}
		return lba, blocks, 4
	case 1, 2: // 10-byte
		return uint64(be32(cdb[2:6])), uint32(be16(cdb[7:9])), 7
	case 5: // 12-byte
		return uint64(be32(cdb[2:6])), be32(cdb[6:10]), 6
	default: // 16-byte
		return be64(cdb[2:10]), be32(cdb[10:14]), 10
	}
}

// checkRange fails a range that does not lie within the medium.
func (lu *LogicalUnit) checkRange(lba uint64, blocks uint64) error {
	if lba > lu.nblocks || blocks > lu.nblocks-lba {
		return errLBAOutOfRange
	}
	return nil
}

// checkProtect fails a command that asks for protection information: the
// unit is formatted without it (SBC-4 §4.22.2).
func checkProtect(cdb []byte) error {
	if cdb[0]>>5 != 0 && cdb[1]>>5 != 0 {
		return invalidField(1, 7)
	}
	return nil
}

// fua reports the FUA bit of a 10, 12 or 16-byte CDB.
func fua(cdb []byte) bool { return cdb[0]>>5 != 0 && cdb[1]&0x08 != 0 }

// blockCommand decodes and validates the addressing of a data transfer
// command, returning the byte offset and length it covers.
func (r *request) blockCommand() (off, length int64, err error) {
	if err := checkProtect(r.cdb); err != nil {
		return 0, 0, err
	}
	lba, blocks, lenField := blockRange(r.cdb)
	if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
		return 0, 0, err
	}
	if blocks > r.lu.maxTransferBlocks() {
		return 0, 0, invalidField(lenField, -1)
	}
	return int64(lba) << r.lu.blockShift, int64(blocks) << r.lu.blockShift, nil
}

// dataOut returns the first n bytes the initiator sent, or fails the
// command when it sent fewer than the CDB asks for (the expected transfer
// length disagrees with the CDB).
func (r *request) dataOut(n int64) ([]byte, error) {
	r.res.TransferLen = int(n)
	if int64(len(r.cmd.DataOut)) < n {
		return nil, errTooMuchData
	}
	return r.cmd.DataOut[:n], nil
}

// writeData returns the data of a write command whose CDB covers length
// bytes. When the initiator sent less (its expected transfer length is
// short of the CDB's), only the whole blocks it did send are written and
// the overflow is reported as a residual (RFC 7143 §11.4.5.1); a trailing
// partial block fails the command instead of being written half.
func (r *request) writeData(length int64) ([]byte, error) {
	r.res.TransferLen = int(length)
	sent := int64(len(r.cmd.DataOut))
	if sent >= length {
		return r.cmd.DataOut[:length], nil
	}
	if sent&int64(r.lu.blockSize-1) != 0 {
		return nil, errTooMuchData
	}
	return r.cmd.DataOut, nil
}

// exactDataOut is dataOut for commands whose data must be exactly n
// bytes (COMPARE AND WRITE, WRITE SAME): more or less fails the command
// without touching the medium.
func (r *request) exactDataOut(n int64) ([]byte, error) {
	r.res.TransferLen = int(n)
	if int64(len(r.cmd.DataOut)) != n {
		return nil, errTooMuchData
	}
	return r.cmd.DataOut, nil
}

// readAt fills b from the medium at off.
func (r *request) readAt(b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	var n int
	var err error
	if cd := r.lu.ctxDev; cd != nil {
		n, err = cd.ReadAtContext(r.ctx, b, off)
	} else {
		n, err = r.lu.dev.ReadAt(b, off)
	}
	if err == io.EOF && n == len(b) {
		err = nil
	}
	return r.ioErrorAt(err, false, off, n)
}

// writeAt stores b at off, shared with other writers and excluded from
// COMPARE AND WRITE, and makes it durable when forced or without a write
// cache.
func (r *request) writeAt(b []byte, off int64, force bool) error {
	var n int
	var err error
	r.lu.writeGate.RLock()
	if cd := r.lu.ctxDev; cd != nil {
		n, err = cd.WriteAtContext(r.ctx, b, off)
	} else {
		n, err = r.lu.dev.WriteAt(b, off)
	}
	r.lu.writeGate.RUnlock()
	if err != nil {
		return r.ioErrorAt(err, true, off, n)
	}
	return r.lu.syncIf(force)
}

// syncIf flushes the device when force is set or the write cache is off.
func (lu *LogicalUnit) syncIf(force bool) error {
	if !force {
		lu.mu.Lock()
		force = !lu.mode.wce
		lu.mu.Unlock()
	}
	if force {
		return ioError(lu.dev.Sync(), true)
	}
	return nil
}

func (r *request) read() error {
	off, length, err := r.blockCommand()
	if err != nil {
		return err
	}
	r.res.TransferLen = int(length)
	buf := r.cmd.DataIn
	if int64(len(buf)) > length {
		buf = buf[:length]
	}
	if err := r.readAt(buf, off); err != nil {
		return err
	}
	r.res.DataInLen = len(buf)
	return nil
}

func (r *request) write() error {
	off, length, err := r.blockCommand()
	if err != nil {
		return err
	}
	data, err := r.writeData(length)
	if err != nil || len(data) == 0 {
		return err
	}
	return r.writeAt(data, off, fua(r.cdb))
}

// byteCheck returns the BYTCHK field of VERIFY and WRITE AND VERIFY.
func byteCheck(cdb []byte) byte { return cdb[1] >> 1 & 0x03 }

func (r *request) verify() error {
	off, length, err := r.blockCommand()
	if err != nil {
		return err
	}
	switch byteCheck(r.cdb) {
	case 0: // medium verification: every block is readable by construction
		return nil
	case 1:
		data, err := r.dataOut(length)
		if err != nil {
			return err
		}
		return r.compare(data, off, length)
	case 3: // one block of data compared with every block of the range
		bs := int64(r.lu.blockSize)
		data, err := r.dataOut(bs)
		if err != nil || length == 0 {
			return err
		}
		return r.compare(data, off, length)
	default:
		return invalidField(1, 2)
	}
}

// compare reads length bytes at off and compares them with want, which is
// either as long as the range or one block repeated over it. A difference
// fails with MISCOMPARE, the INFORMATION field holding the offset of the
// first differing byte.
func (r *request) compare(want []byte, off, length int64) error {
	bufp := r.lu.buffers.Get(int(min(length, 1<<20)))
	defer r.lu.buffers.Put(bufp)
	buf := *bufp
	if len(want) < len(buf) {
		buf = buf[:len(want)] // one block repeated: compare block by block
	}
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if err := r.readAt(buf[:n], off+done); err != nil {
			return err
		}
		ref := want
		if int64(len(want)) == length {
			ref = want[done : done+n]
		}
		if !bytes.Equal(buf[:n], ref[:n]) {
			i := int64(0)
			for buf[i] == ref[i] {
				i++
			}
			return &Sense{Key: SenseMiscompare, ASC: 0x1d, Info: uint64(done + i), InfoValid: true}
		}
		done += n
	}
	return nil
}

func (r *request) writeAndVerify() error {
	off, length, err := r.blockCommand()
	if err != nil {
		return err
	}
	check := byteCheck(r.cdb)
	if check > 1 {
		return invalidField(1, 2)
	}
	data, err := r.writeData(length)
	if err != nil || len(data) == 0 {
		return err
	}
	if err := r.writeAt(data, off, true); err != nil {
		return err
	}
	if check == 1 {
		return r.compare(data, off, int64(len(data)))
	}
	return nil
}

// preFetch runs PRE-FETCH (SBC-4 §5.9): a device that can load a range
// into its cache (backend.Prefetcher: the page cache of a file) is asked
// to. The status is GOOD, never CONDITION MET, because the unit cannot
// promise the range will still be cached when it is read.
func (r *request) preFetch() error {
	lba, blocks, _ := blockRange(r.cdb)
	if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
		return err
	}
	if p, ok := r.lu.dev.(backend.Prefetcher); ok && blocks > 0 {
		err := p.Prefetch(int64(lba)<<r.lu.blockShift, int64(blocks)<<r.lu.blockShift)
		if errors.Is(err, backend.ErrUnsupported) {
			// A wrapper over a device without a cache to load.
			return nil
		}
		return ioError(err, false)
	}
	return nil
}

// writeAtomic runs WRITE ATOMIC(16) (SBC-4 §5.48): the blocks are written
// while every other writer of the unit waits, so no command observes or
// interleaves with half of them. Its limit is maxAtomicBlocks. On a device
// atomic for all its clients only within a span (backend.AtomicSpanner),
// a range crossing a multiple of the span is refused with INVALID FIELD
// IN CDB pointing at the LBA.
func (r *request) writeAtomic() error {
	if err := checkProtect(r.cdb); err != nil {
		return err
	}
	lba, blocks := be64(r.cdb[2:10]), uint64(be16(r.cdb[12:14]))
	if err := r.lu.checkRange(lba, blocks); err != nil {
		return err
	}
	if blocks > uint64(r.lu.maxAtomicBlocks()) {
		return invalidField(12, -1)
	}
	if span := r.lu.atomicSpan; span > 0 && lba%span+blocks > span {
		// The device splits the range at a span boundary and other
		// clients (another gateway) could see half of it: refused,
		// not made atomic for this unit's writers only.
		return invalidField(2, -1)
	}
	off, length := int64(lba)<<r.lu.blockShift, int64(blocks)<<r.lu.blockShift
	data, err := r.exactDataOut(length)
	if err != nil || length == 0 {
		return err
	}
	r.lu.writeGate.Lock()
	_, err = r.lu.dev.WriteAt(data, off)
	r.lu.writeGate.Unlock()
	if err != nil {
		return ioError(err, true)
	}
	return r.lu.syncIf(fua(r.cdb))
}

// readDefectData answers READ DEFECT DATA (10) and (12) (SBC-4 §5.16):
// a virtual medium has no defects, so the list, in the format asked for,
// is empty.
func (r *request) readDefectData() error {
	var out []byte
	var alloc int
	if r.cdb[0] == 0x37 {
		out = []byte{0, r.cdb[2] & 0x1f, 0, 0}
		alloc = int(be16(r.cdb[7:9]))
	} else {
		out = []byte{0, r.cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0}
		alloc = int(be32(r.cdb[6:10]))
	}
	r.sendData(out, alloc)
	return nil
}

func (r *request) synchronizeCache() error {
	lba, blocks, _ := blockRange(r.cdb)
	if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
		return err
	}
	return r.lu.syncIf(true)
}

func (r *request) writeSame() error {
	if err := checkProtect(r.cdb); err != nil {
		return err
	}
	var lba uint64
	var blocks uint32
	lenField := 7
	if r.cdb[0] == 0x41 {
		lba, blocks = uint64(be32(r.cdb[2:6])), uint32(be16(r.cdb[7:9]))
	} else {
		lba, blocks, lenField = be64(r.cdb[2:10]), be32(r.cdb[10:14]), 10
	}
	unmap := r.cdb[1]&0x08 != 0
	ndob := r.cdb[0] == 0x93 && r.cdb[1]&0x01 != 0
	if r.cdb[1]&0x10 != 0 { // ANCHOR: anchored state not supported
		return invalidField(1, 4)
	}
	if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
		return err
	}
	n := uint64(blocks)
	if n == 0 {
		// WSNZ is clear: zero blocks means through the last LBA.
		if lba >= r.lu.nblocks {
			return errLBAOutOfRange
		}
		n = r.lu.nblocks - lba
	}
	if n > maxWriteSameBlocks {
		return invalidField(lenField, -1)
	}
	bs := int64(r.lu.blockSize)
	off, length := int64(lba)<<r.lu.blockShift, int64(n)<<r.lu.blockShift
	var block []byte
	if ndob {
		block = make([]byte, bs)
	} else {
		var err error
		if block, err = r.exactDataOut(bs); err != nil {
			return err
		}
	}
	// A fully provisioned unit has nothing to unmap: the UNMAP bit is a
	// request it honours by writing the block (SBC-4 §4.7.3.4). A thin
	// unit deallocates the range whatever the block holds, as Linux LIO
	// and tgt do (libiscsi's WriteSame10.UnmapUntilEnd sends 0xff blocks
	// and expects zeroes back): the blocks then read as zeroes (LBPRZ).
	if unmap && r.lu.cfg.ThinProvisioning {
		r.lu.writeGate.RLock()
		err := r.lu.dev.(backend.Unmapper).Unmap(off, length)
		r.lu.writeGate.RUnlock()
		if err != nil {
			return ioError(err, true)
		}
		return r.lu.syncIf(false)
	}
	if sw, ok := r.lu.dev.(backend.SameWriter); ok {
		r.lu.writeGate.RLock()
		err := sw.WriteSame(block, off, length)
		r.lu.writeGate.RUnlock()
		if err != nil {
			return ioError(err, true)
		}
		return r.lu.syncIf(false)
	}
	return r.lu.fill(r.ctx, off, length, block)
}

// fill writes block over and over from off for length bytes, then syncs
// as the write cache setting asks.
func (lu *LogicalUnit) fill(ctx context.Context, off, length int64, block []byte) error {
	return lu.fillSynced(ctx, off, length, block, 0, 0)
}

// fillSynced is fill that also makes the data durable after every
// syncEvery bytes (0: only at the end, as the write cache setting asks)
// and writes no more than rate bytes per second (0: as fast as the device
// takes them).
func (lu *LogicalUnit) fillSynced(ctx context.Context, off, length int64, block []byte, syncEvery, rate int64) error {
	start := time.Now()
	bs := int64(len(block))
	bufp := lu.buffers.Get(int(min(length, 256<<10)))
	defer lu.buffers.Put(bufp)
	pattern := *bufp
	for i := int64(0); i < int64(len(pattern)); i += bs {
		copy(pattern[i:], block)
	}
	for done := int64(0); done < length; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(len(pattern)), length-done)
		lu.writeGate.RLock()
		_, err := lu.dev.WriteAt(pattern[:n], off+done)
		lu.writeGate.RUnlock()
		if err != nil {
			return ioError(err, true)
		}
		done += n
		if syncEvery > 0 && done%syncEvery == 0 {
			if err := lu.syncIf(true); err != nil {
				return err
			}
		}
		if rate > 0 {
			if err := pace(ctx, start, done, rate); err != nil {
				return err
			}
		}
	}
	return lu.syncIf(false)
}

// pace sleeps until done bytes written since start are no more than rate
// bytes per second, or ctx ends.
func pace(ctx context.Context, start time.Time, done, rate int64) error {
	due := start.Add(time.Duration(float64(done) / float64(rate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *request) unmap() error {
	if r.cdb[1]&0x01 != 0 { // ANCHOR
		return invalidField(1, 0)
	}
	plen := int64(be16(r.cdb[7:9]))
	if plen == 0 {
		return nil
	}
	if plen < 8 {
		return errParamLength
	}
	data, err := r.dataOut(plen)
	if err != nil {
		return err
	}
	descLen := int(be16(data[2:4]))
	descs := data[8:]
	if descLen < len(descs) {
		descs = descs[:descLen]
	}
	descs = descs[:len(descs)/16*16]
	if len(descs)/16 > maxUnmapDescs {
		return invalidParam(2)
	}
	for i := 0; i < len(descs); i += 16 {
		lba, blocks := be64(descs[i:]), be32(descs[i+8:])
		if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
			return err
		}
		if blocks > maxUnmapBlocks {
			return invalidParam(8 + i + 8)
		}
	}
	u := r.lu.dev.(backend.Unmapper)
	for i := 0; i < len(descs); i += 16 {
		lba, blocks := be64(descs[i:]), be32(descs[i+8:])
		if blocks == 0 {
			continue
		}
		r.lu.writeGate.RLock()
		err := u.Unmap(int64(lba)<<r.lu.blockShift, int64(blocks)<<r.lu.blockShift)
		r.lu.writeGate.RUnlock()
		if err != nil {
			return ioError(err, true)
		}
	}
	return r.lu.syncIf(false)
}

func (r *request) compareAndWrite() error {
	if err := checkProtect(r.cdb); err != nil {
		return err
	}
	lba, blocks := be64(r.cdb[2:10]), uint32(r.cdb[13])
	if err := r.lu.checkRange(lba, uint64(blocks)); err != nil {
		return err
	}
	// Zero blocks would be a no-op by SBC-4, but an initiator that sends
	// data with it has wrapped a count of 256 into the one-byte field.
	if blocks > uint32(r.lu.compareBlocks) || (blocks == 0 && len(r.cmd.DataOut) > 0) {
		return invalidField(13, -1)
	}
	off, length := int64(lba)<<r.lu.blockShift, int64(blocks)<<r.lu.blockShift
	// The verify and write halves must arrive whole: any other amount of
	// data leaves it unclear which bytes are which.
	data, err := r.exactDataOut(2 * length)
	if err != nil || length == 0 {
		return err
	}
	cw, ok := r.lu.dev.(backend.CompareWriter)
	if ok {
		// The device compares and writes atomically for all its clients,
		// so this unit's other writers need not stop.
		r.lu.writeGate.RLock()
		err = cw.CompareAndWrite(data[:length], data[length:], off)
		r.lu.writeGate.RUnlock()
		var mis *backend.MiscompareError
		if errors.As(err, &mis) {
			return &Sense{Key: SenseMiscompare, ASC: 0x1d, Info: uint64(mis.Offset), InfoValid: true}
		}
		// A range the device cannot take is compared and written here,
		// unless the device is shared (it limits its span), where that
		// would be atomic for this unit's writers only.
		ok = !errors.Is(err, errors.ErrUnsupported)
		if _, shared := cw.(backend.CompareSpanner); shared && !ok {
			return invalidField(13, -1)
		}
		err = ioError(err, true)
	}
	if !ok {
		r.lu.writeGate.Lock()
		err = r.compare(data[:length], off, length)
		if err == nil {
			_, err = r.lu.dev.WriteAt(data[length:], off)
			err = ioError(err, true)
		}
		r.lu.writeGate.Unlock()
	}
	if err != nil {
		return err
	}
	return r.lu.syncIf(fua(r.cdb))
}

func (r *request) orWrite() error {
	off, length, err := r.blockCommand()
	if err != nil {
		return err
	}
	data, err := r.dataOut(length)
	if err != nil || length == 0 {
		return err
	}
	bufp := r.lu.buffers.Get(int(length))
	defer r.lu.buffers.Put(bufp)
	cur := (*bufp)[:length]
	r.lu.writeGate.Lock()
	err = r.readAt(cur, off)
	if err == nil {
		for i := range cur {
			cur[i] |= data[i]
		}
		_, err = r.lu.dev.WriteAt(cur, off)
		err = ioError(err, true)
	}
	r.lu.writeGate.Unlock()
	if err != nil {
		return err
	}
	return r.lu.syncIf(fua(r.cdb))
}

func (r *request) readCapacity10() error {
	pmi := r.cdb[8]&0x01 != 0
	if !pmi && be32(r.cdb[2:6]) != 0 {
		return invalidField(2, -1)
	}
	var b [8]byte
	last := r.lu.nblocks - 1
	binary.BigEndian.PutUint32(b[0:4], uint32(min(last, 0xffffffff)))
	binary.BigEndian.PutUint32(b[4:8], r.lu.blockSize)
	r.sendData(b[:], len(b))
	return nil
}

func (r *request) readCapacity16() error {
	var b [32]byte
	binary.BigEndian.PutUint64(b[0:8], r.lu.nblocks-1)
	binary.BigEndian.PutUint32(b[8:12], r.lu.blockSize)
	b[13] = r.lu.physExp
	if r.lu.cfg.ThinProvisioning {
		b[14] = 0x80 | 0x40 // LBPME, LBPRZ
	}
	r.sendData(b[:], int(be32(r.cdb[10:14])))
	return nil
}

// maxLBAStatusDescriptors bounds one GET LBA STATUS answer; the initiator
// asks again from where it ended.
const maxLBAStatusDescriptors = 512

func (r *request) getLBAStatus() error {
	lba := be64(r.cdb[2:10])
	alloc := int(be32(r.cdb[10:14]))
	if lba >= r.lu.nblocks {
		return errLBAOutOfRange
	}
	out := make([]byte, 8, 8+16*8)
	appendDesc := func(start, blocks uint64, deallocated bool) {
		var d [16]byte
		binary.BigEndian.PutUint64(d[0:8], start)
		binary.BigEndian.PutUint32(d[8:12], uint32(blocks))
		if deallocated {
			d[12] = 1
		}
		out = append(out, d[:]...)
	}
	rep, ok := r.lu.dev.(backend.AllocationReporter)
	shift := r.lu.blockShift
	for cur := lba; cur < r.lu.nblocks && len(out) < 8+16*maxLBAStatusDescriptors && len(out) < alloc; {
		allocated, runBlocks := true, r.lu.nblocks-cur
		if ok {
			a, n, err := rep.Allocation(int64(cur) << shift)
			if errors.Is(err, backend.ErrUnsupported) {
				// A wrapper over a device that cannot tell: every
				// block counts as mapped.
				ok = false
				continue
			}
			if err != nil {
				return ioError(err, false)
			}
			allocated = a
			// A block partly backed counts as mapped; a hole must cover
			// whole blocks to count as deallocated.
			end := (int64(cur)<<shift + n) >> shift
			if a {
				end = (int64(cur)<<shift + n + int64(r.lu.blockSize) - 1) >> shift
			}
			if uint64(end) <= cur {
				allocated, end = true, int64(cur)+1
			}
			runBlocks = min(uint64(end), r.lu.nblocks) - cur
		}
		runBlocks = min(runBlocks, 0xffffffff)
		appendDesc(cur, runBlocks, !allocated)
		cur += runBlocks
	}
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	r.sendData(out, alloc)
	return nil
}
