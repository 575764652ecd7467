package pdu

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/iscsikit/iscsikit/internal/crc32c"
)

// MaxAHSLength is the largest AHS a Reader accepts (TotalAHSLength is one
// byte of 4-byte words).
const MaxAHSLength = 255 * 4

// Reader reads PDUs from a byte stream. Header and data may be read in two
// steps so that a data segment lands directly in its final buffer (for
// example the SCSI write buffer of the task a Data-Out belongs to). A Reader
// is not safe for concurrent use.
type Reader struct {
	br           *bufio.Reader
	headerDigest bool
	dataDigest   bool
	maxData      int
	scratch      [8]byte
}

// NewReader returns a Reader over r that accepts data segments of up to
// maxData bytes (0 means the RFC 7143 default of 8192).
func NewReader(r io.Reader, maxData int) *Reader {
	if maxData <= 0 {
		maxData = 8192
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), maxData: maxData}
}

// SetDigests turns CRC32C header and data digests on or off.
func (r *Reader) SetDigests(header, data bool) { r.headerDigest, r.dataDigest = header, data }

// SetMaxDataSegmentLength sets the largest data segment accepted.
func (r *Reader) SetMaxDataSegmentLength(n int) { r.maxData = n }

// MaxDataSegmentLength reports the largest data segment accepted.
func (r *Reader) MaxDataSegmentLength() int { return r.maxData }

// Peek returns the next n bytes of the stream without consuming them,
// waiting until they have arrived. It lets a caller refuse a PDU whose
// first bytes already show it does not belong (at login, anything but a
// Login Request) before waiting for an AHS or data segment it announces.
func (r *Reader) Peek(n int) ([]byte, error) { return r.br.Peek(n) }

// Buffered reports how many bytes of the stream have been received and not
// yet consumed; 0 means the next read waits for the peer.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// ReadHeader reads the BHS, the AHS and the header digest of the next PDU
// into p, leaving the data segment unread. The caller must follow with
// ReadData or DiscardData. A returned *ProtocolError with Fatal set, or any
// I/O error, leaves the stream unusable. A data segment longer than the
// limit returns a non-fatal *ProtocolError: the caller should DiscardData
// and answer with a Reject.
func (r *Reader) ReadHeader(p *PDU) error {
	if _, err := io.ReadFull(r.br, p.Header[:]); err != nil {
		return err
	}
	ahs := p.TotalAHSLength()
	if cap(p.AHS) < ahs {
		p.AHS = make([]byte, ahs, MaxAHSLength)
	}
	p.AHS = p.AHS[:ahs]
	p.Data = nil
	if ahs > 0 {
		if _, err := io.ReadFull(r.br, p.AHS); err != nil {
			return err
		}
	}
	if r.headerDigest {
		if _, err := io.ReadFull(r.br, r.scratch[:4]); err != nil {
			return err
		}
		sum := crc32c.Update(crc32c.Checksum(p.Header[:]), p.AHS)
		if got := binary.LittleEndian.Uint32(r.scratch[:4]); got != sum {
			return &ProtocolError{Op: p.Opcode(), Field: "HeaderDigest", Reason: RejectProtocolError, Fatal: true, Err: ErrHeaderDigest,
				Msg: fmt.Sprintf("%v: got 0x%08x, want 0x%08x", ErrHeaderDigest, got, sum)}
		}
	}
	if n := p.DataSegmentLength(); n > r.maxData {
		return &ProtocolError{Op: p.Opcode(), Field: "DataSegmentLength", Reason: RejectProtocolError,
			Msg: fmt.Sprintf("%d bytes exceeds MaxRecvDataSegmentLength %d", n, r.maxData)}
	}
	return nil
}

// ReadData reads p's data segment into dst, which must be exactly
// DataSegmentLength bytes long, then its padding and data digest. On success
// p.Data is dst. A digest mismatch returns an error wrapping ErrDataDigest;
// the stream stays framed.
func (r *Reader) ReadData(p *PDU, dst []byte) error {
	n := p.DataSegmentLength()
	if len(dst) != n {
		return fmt.Errorf("pdu: ReadData buffer of %d bytes for a %d-byte segment", len(dst), n)
	}
	if n == 0 {
		p.Data = dst
		return nil
	}
	if _, err := io.ReadFull(r.br, dst); err != nil {
		return err
	}
	pad := Padding(n)
	tail := pad
	if r.dataDigest {
		tail += 4
	}
	if tail > 0 {
		if _, err := io.ReadFull(r.br, r.scratch[:tail]); err != nil {
			return err
		}
	}
	p.Data = dst
	if r.dataDigest {
		sum := crc32c.Update(crc32c.Checksum(dst), r.scratch[:pad])
		if got := binary.LittleEndian.Uint32(r.scratch[pad:tail]); got != sum {
			return &ProtocolError{Op: p.Opcode(), Field: "DataDigest", Reason: RejectDataDigest, Err: ErrDataDigest,
				Msg: fmt.Sprintf("%v: got 0x%08x, want 0x%08x", ErrDataDigest, got, sum)}
		}
	}
	return nil
}

// DiscardData skips p's data segment, padding and digest.
func (r *Reader) DiscardData(p *PDU) error {
	n := p.DataSegmentLength()
	if n == 0 {
		return nil
	}
	n += Padding(n)
	if r.dataDigest {
		n += 4
	}
	_, err := r.br.Discard(n)
	p.Data = nil
	return err
}

// ReadPDU reads a whole PDU, keeping the data segment in a buffer owned by
// p and reused across calls.
func (r *Reader) ReadPDU(p *PDU) error {
	if err := r.ReadHeader(p); err != nil {
		return err
	}
	return r.ReadSegment(p)
}

// ReadSegment reads the data segment of a PDU whose header ReadHeader just
// read into a buffer owned by p and reused across calls.
func (r *Reader) ReadSegment(p *PDU) error {
	n := p.DataSegmentLength()
	if cap(p.buf) < n {
		p.buf = make([]byte, n)
	}
	return r.ReadData(p, p.buf[:n])
}

// Writer writes PDUs to a stream with vectored writes (writev on a TCP
// connection): header, AHS, digests, data and padding are never copied
// together, and several PDUs can go out in one system call (AppendBuffers
// then WriteBuffers). A Writer is not safe for concurrent use.
type Writer struct {
	w            io.Writer
	headerDigest bool
	dataDigest   bool
	frame        Frame
	iov          [5][]byte
	vec          net.Buffers
}

// Frame holds the bytes a PDU needs on the wire besides its own header and
// data: the header digest and the padding plus data digest. It must stay
// unchanged until the buffers AppendBuffers returned have been written.
type Frame struct {
	hdig [4]byte
	tail [8]byte
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// SetDigests turns CRC32C header and data digests on or off.
func (w *Writer) SetDigests(header, data bool) { w.headerDigest, w.dataDigest = header, data }

// AppendBuffers appends the buffers that put p on the wire to vec: its
// header, AHS, header digest, data, padding and data digest, with the
// digests and padding kept in f. Nothing is copied: p's Header, AHS and
// Data and f must stay unchanged until vec has been written. The lengths in
// p's header are set from AHS and Data.
func (w *Writer) AppendBuffers(vec net.Buffers, p *PDU, f *Frame) (net.Buffers, error) {
	if len(p.Data) > MaxDataSegmentLength || len(p.AHS)%4 != 0 || len(p.AHS) > MaxAHSLength {
		return vec, fmt.Errorf("pdu: cannot write %v with %d AHS and %d data bytes", p.Opcode(), len(p.AHS), len(p.Data))
	}
	p.setLengths()
	vec = append(vec, p.Header[:])
	if len(p.AHS) > 0 {
		vec = append(vec, p.AHS)
	}
	if w.headerDigest {
		binary.LittleEndian.PutUint32(f.hdig[:], crc32c.Update(crc32c.Checksum(p.Header[:]), p.AHS))
		vec = append(vec, f.hdig[:])
	}
	if n := len(p.Data); n > 0 {
		vec = append(vec, p.Data)
		pad := Padding(n)
		f.tail = [8]byte{}
		tail := pad
		if w.dataDigest {
			binary.LittleEndian.PutUint32(f.tail[pad:], crc32c.Update(crc32c.Checksum(p.Data), f.tail[:pad]))
			tail += 4
		}
		if tail > 0 {
			vec = append(vec, f.tail[:tail])
		}
	}
	return vec, nil
}

// WriteBuffers writes vec, the buffers of one or more PDUs from
// AppendBuffers, with as few vectored writes as the system allows. The
// slice elements are consumed (set to nil); its backing array can be
// reused afterwards.
func (w *Writer) WriteBuffers(vec *net.Buffers) error {
	_, err := vec.WriteTo(w.w)
	return err
}

// WritePDU writes p with one vectored write. The lengths in p's header must
// match AHS and Data (the message Encode methods ensure that).
func (w *Writer) WritePDU(p *PDU) error {
	vec, err := w.AppendBuffers(w.iov[:0], p, &w.frame)
	if err != nil {
		return err
	}
	w.vec = vec
	return w.WriteBuffers(&w.vec)
}
