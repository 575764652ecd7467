package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Error recovery level 1 (RFC 7143 §7.1.4, §7.8, §11.16): a data digest
// error on a Data-Out is recovered with a recovery R2T for the lost bytes,
// and an initiator that lost a Data-In, R2T or status PDU asks for it
// again with a SNACK. For that a connection at ErrorRecoveryLevel 1 or
// more keeps a copy of every PDU that consumed a StatSN, and the data
// buffer of every read task, until the initiator acknowledges the StatSN
// with its ExpStatSN. Status is never folded into the last Data-In there,
// so a status copy is a header and its sense data. At level 0 none of this
// runs.
//
// What is kept is bounded, against an initiator that never acknowledges
// (its ExpStatSN stalls): a read's data buffer keeps its share of the
// session's buffer budget until it is let go (so further commands get
// TASK SET FULL once the budget is spent), and a connection keeping more
// than maxEntries PDUs or maxCopied bytes of copied data segments (sense
// data, NOP-In echoes) is ended. RFC 7143 §4.2.2.2 has an initiator
// acknowledge statuses with ExpStatSN and lets either side take a large
// StatSN/ExpStatSN gap for a failed connection.

// retention is what a connection keeps for SNACK; guarded by mu.
type retention struct {
	mu      sync.Mutex
	on      bool // ErrorRecoveryLevel >= 1
	closed  bool
	entries []retained // in StatSN order
	// copied is the bytes of the entries' data copies; maxEntries and
	// maxCopied bound entries and copied (set with on).
	copied     int
	maxEntries int
	maxCopied  int
}

// errRetention ends a connection whose initiator does not acknowledge
// the statuses it receives.
var errRetention = errors.New("initiator does not acknowledge status (ExpStatSN stalls)")

// limitRetention sets the bounds of what c keeps for SNACK from the
// session's queue depth and buffer budget: twice the PDUs and data an
// initiator that acknowledges as it goes can have unacknowledged.
func (c *conn) limitRetention(sess *session) {
	k := &c.keep
	k.maxEntries = 2*int(sess.depth) + 64
	k.maxCopied = int(sess.bufBudget) + 2*int(c.params.InitiatorMaxRecvDataSegmentLength)
}

// retained is one PDU that consumed a StatSN, as it was sent.
type retained struct {
	statSN uint32
	hdr    [pdu.BHSLen]byte
	data   []byte
	// t is the read task whose Data-In came before this status: its data
	// buffer is referenced for Data SNACK until the status is
	// acknowledged (or its data by DataACK).
	t *task
	// ackTTT is the target transfer tag of the task's last Data-In, sent
	// with the A bit; acked the DataSN a DataACK acknowledged up to.
	ackTTT uint32
	acked  uint32
	// owner is the task whose status this is, at ErrorRecoveryLevel 2:
	// its acknowledgment lets the session forget the task.
	owner *task
}

// erl returns the session's negotiated ErrorRecoveryLevel.
func (c *conn) erl() uint32 { return c.params.ErrorRecoveryLevel }

// retain keeps a copy of e, a PDU that just consumed a StatSN. Called by
// the writer with wmu held, at ErrorRecoveryLevel 1 or more only. It
// returns errRetention (wrapped) when the connection now keeps more than
// its bounds allow; the caller ends the connection.
func (c *conn) retain(e *outPDU) error {
	k := &c.keep
	r := retained{statSN: e.p.StatSN(), hdr: e.p.Header, data: append([]byte(nil), e.p.Data...)}
	if t := e.owner; t != nil && t.read && t.dataInLen > 0 {
		t.refs.Add(1)
		r.t, r.ackTTT = t, t.ackTTT
	}
	if c.erl() >= 2 {
		r.owner = e.owner
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		if r.t != nil {
			r.t.release()
		}
		return nil
	}
	k.entries = append(k.entries, r)
	k.copied += len(r.data)
	n, copied := len(k.entries), k.copied
	k.mu.Unlock()
	if n > k.maxEntries || copied > k.maxCopied {
		return fmt.Errorf("%w: %d PDUs and %d bytes of data segments kept for SNACK since StatSN %d (at most %d and %d)",
			errRetention, n, copied, r.statSN-uint32(n-1), k.maxEntries, k.maxCopied)
	}
	return nil
}

// acknowledge drops what the initiator acknowledged: every PDU whose
// StatSN comes before its ExpStatSN exp (RFC 7143 §4.2.2.2).
func (c *conn) acknowledge(exp uint32) {
	k := &c.keep
	k.mu.Lock()
	n := 0
	for n < len(k.entries) && snGreater(exp, k.entries[n].statSN) {
		n++
	}
	gone := k.entries[:n:n]
	k.entries = k.entries[n:]
	for i := range gone {
		k.copied -= len(gone[i].data)
	}
	k.mu.Unlock()
	for i := range gone {
		if gone[i].t != nil {
			gone[i].t.release()
		}
		if o := gone[i].owner; o != nil {
			o.sess.forget(o)
		}
	}
}

// dropRetained lets go of everything kept, when the connection ends.
func (c *conn) dropRetained() {
	k := &c.keep
	k.mu.Lock()
	k.closed = true
	gone := k.entries
	k.entries = nil
	k.copied = 0
	k.mu.Unlock()
	for i := range gone {
		if gone[i].t != nil {
			gone[i].t.release()
		}
	}
}

// errSNACK is a SNACK the target cannot honour.
var errSNACK = errors.New("SNACK")

func snackError(format string, args ...any) *pdu.ProtocolError {
	return &pdu.ProtocolError{Op: pdu.OpSNACKReq, Reason: pdu.RejectProtocolError, Err: errSNACK, Msg: fmt.Sprintf(format, args...)}
}

// handleSNACK answers a SNACK Request (RFC 7143 §11.16): status SNACK
// resends responses by StatSN, Data/R2T SNACK resends a read's Data-In by
// DataSN or a write's R2Ts by R2TSN, R-Data SNACK resends all of a read's
// Data-In and then its status carrying the SNACK Tag, DataACK releases
// acknowledged read data. A SNACK for anything acknowledged or never sent
// (any part of its run) is answered with a Reject, reason protocol error,
// as §11.16 requires. The resent PDUs are written before the reader goes
// on, so an initiator that sends SNACKs without reading what they bring
// back is held up by TCP instead of filling the outbound queue.
func (c *conn) handleSNACK(p *pdu.PDU) error {
	if c.erl() == 0 {
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpSNACKReq, Reason: pdu.RejectProtocolError, Msg: "SNACK at ErrorRecoveryLevel 0"})
	}
	var m pdu.SNACKRequest
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	var perr *pdu.ProtocolError
	switch m.Type {
	case pdu.SNACKStatus:
		perr = c.resendStatus(m.BegRun, m.RunLength)
	case pdu.SNACKDataR2T:
		// A write's SNACK asks for R2Ts, a read's for Data-In; the
		// Data-In of a read are kept with its status (see retain).
		if t := c.sess().taskRef(m.ITT); t != nil && t.write {
			perr = c.resendR2Ts(t, m.BegRun, m.RunLength)
			t.release()
			break
		} else if t != nil {
			t.release()
		}
		perr = c.resendDataIn(m.ITT, m.BegRun, m.RunLength, false, 0)
	case pdu.SNACKRDataACK:
		switch {
		case m.BegRun != 0 || m.RunLength != 0:
			perr = snackError("R-Data SNACK with BegRun %d and RunLength %d (both must be 0)", m.BegRun, m.RunLength)
		case m.TTT == 0 || m.TTT == pdu.ReservedTag:
			perr = snackError("R-Data SNACK with SNACK Tag 0x%x (must be neither 0 nor 0xffffffff)", m.TTT)
		default:
			perr = c.resendDataIn(m.ITT, 0, 0, true, m.TTT)
		}
	case pdu.SNACKDataACK:
		perr = c.dataACK(m.TTT, m.BegRun)
	}
	if perr != nil {
		return c.reject(p, perr)
	}
	return nil
}

// runEnd returns the end of the run of n from beg within count numbered
// PDUs starting at 0 (n 0: all from beg on), or false when any of the run
// is beyond count (never sent).
func runEnd(beg, n, count uint32) (uint32, bool) {
	if beg >= count {
		return 0, false
	}
	if n == 0 {
		return count, true
	}
	if n > count-beg {
		return 0, false
	}
	return beg + n, true
}

// resendStatus sends again the retained PDUs whose StatSN is in the run;
// BegRun and RunLength 0 ask for all that are retained. The retained PDUs
// have consecutive StatSNs, from the oldest unacknowledged one.
func (c *conn) resendStatus(beg, n uint32) *pdu.ProtocolError {
	k := &c.keep
	k.mu.Lock()
	first := uint32(0)
	count := uint32(len(k.entries))
	if count > 0 && (beg != 0 || n != 0) {
		// The run's place among the retained StatSNs; an acknowledged
		// one wraps to a large offset, one never sent is past count.
		first = beg - k.entries[0].statSN
	}
	end, ok := runEnd(first, n, count)
	var out []outPDU
	if ok {
		out = make([]outPDU, 0, end-first)
		for _, r := range k.entries[first:end] {
			var e outPDU
			e.p.Header = r.hdr
			e.p.Data = r.data // immutable once retained
			out = append(out, e)
		}
	}
	k.mu.Unlock()
	if !ok {
		return snackError("status SNACK for StatSN %d+%d: not all retained (acknowledged or never sent)", beg, n)
	}
	c.queue(true, false, out...)
	return nil
}

// resendDataIn sends again the Data-In PDUs of the finished read task itt
// whose DataSN is in the run, cut as they were first sent. For an R-Data
// SNACK (rdata) it sends all of them and then the task's status again,
// with the same StatSN and SNACK Tag tag (RFC 7143 §11.16.3); a later
// status SNACK gets that tag too.
func (c *conn) resendDataIn(itt, beg, n uint32, rdata bool, tag uint32) *pdu.ProtocolError {
	k := &c.keep
	k.mu.Lock()
	var t *task
	var acked uint32
	var status outPDU
	for i := range k.entries {
		if r := &k.entries[i]; r.t != nil && r.t.itt == itt {
			t, acked = r.t, r.acked
			t.refs.Add(1)
			if rdata {
				binary.BigEndian.PutUint32(r.hdr[20:24], tag)
				status.p.Header, status.p.Data = r.hdr, r.data
			}
			break
		}
	}
	k.mu.Unlock()
	if t == nil {
		return snackError("Data SNACK for task 0x%x: no unacknowledged Data-In", itt)
	}
	defer t.release()
	if snGreater(acked, beg) {
		return snackError("Data SNACK for DataSN %d of task 0x%x, acknowledged up to %d", beg, itt, acked)
	}
	seg, burst := c.params.InitiatorMaxRecvDataSegmentLength, c.params.MaxBurstLength
	count := uint32(0)
	for off := uint32(0); off < t.dataInLen; count++ {
		l, _ := dataInSegment(off, t.dataInLen, seg, burst)
		off += l
	}
	end, ok := runEnd(beg, n, count)
	if !ok {
		return snackError("Data SNACK for DataSN %d+%d of task 0x%x, which sent %d", beg, n, itt, count)
	}
	out := make([]outPDU, 0, end-beg+1)
	sn := uint32(0)
	for off := uint32(0); off < t.dataInLen && sn < end; sn++ {
		l, final := dataInSegment(off, t.dataInLen, seg, burst)
		if sn >= beg {
			din := pdu.DataIn{Final: final, LUN: t.lun, ITT: t.itt, TTT: pdu.ReservedTag, DataSN: sn, BufferOffset: off, Data: t.buf()[off : off+l]}
			if off+l == t.dataInLen {
				din.Acknowledge, din.TTT = true, t.ackTTT
			}
			out = append(out, outPDU{})
			din.Encode(&out[len(out)-1].p)
		}
		off += l
	}
	if rdata {
		out = append(out, status)
	}
	t.refs.Add(1)
	out[len(out)-1].owner = t
	c.queue(true, false, out...)
	return nil
}

// dataACK records that the initiator received the Data-In of the read
// whose last Data-In carried ttt up to DataSN beg: that data will not be
// asked for again, so its buffer goes.
func (c *conn) dataACK(ttt, beg uint32) *pdu.ProtocolError {
	k := &c.keep
	k.mu.Lock()
	var t *task
	for i := range k.entries {
		r := &k.entries[i]
		if r.t != nil && r.ackTTT == ttt {
			r.acked = beg
			t, r.t = r.t, nil
			break
		}
	}
	k.mu.Unlock()
	if t == nil {
		return snackError("DataACK for TTT 0x%x: no Data-In awaits it", ttt)
	}
	t.release()
	return nil
}

// resendR2Ts sends again the outstanding R2Ts of write task t whose R2TSN
// is in the run. Reader goroutine only.
func (c *conn) resendR2Ts(t *task, beg, n uint32) *pdu.ProtocolError {
	if t.conn() != c || !t.write {
		return snackError("R2T SNACK for task 0x%x, which is not a write of this connection", t.itt)
	}
	end, ok := runEnd(beg, n, t.r2tSN)
	if !ok {
		return snackError("R2T SNACK for R2TSN %d+%d of task 0x%x, which sent %d", beg, n, t.itt, t.r2tSN)
	}
	var out []outPDU
	for _, r := range t.r2ts {
		if r.finished || r.sn < beg || r.sn >= end {
			continue
		}
		m := pdu.R2T{LUN: t.lun, ITT: t.itt, TTT: r.ttt, R2TSN: r.sn, BufferOffset: r.start, DesiredDataTransferLength: r.end - r.start}
		out = append(out, outPDU{kind: statCurrent})
		m.Encode(&out[len(out)-1].p)
	}
	if len(out) == 0 {
		return snackError("R2T SNACK for R2TSN %d+%d of task 0x%x: none outstanding", beg, n, t.itt)
	}
	c.queue(true, false, out...)
	return nil
}

// dataInSegment returns the length of the Data-In at offset off of a read
// of n bytes, cut by the initiator's MaxRecvDataSegmentLength seg and the
// session's MaxBurstLength burst, and whether it ends its sequence (F).
func dataInSegment(off, n, seg, burst uint32) (uint32, bool) {
	l := min(seg, n-off, burst-off%burst)
	end := off + l
	return l, end == n || end%burst == 0
}

// recoverDataOut handles write data that failed its digest at
// ErrorRecoveryLevel 1 or more (RFC 7143 §7.8): the PDU is rejected and
// discarded, its bytes are remembered as a hole, and once the sequence it
// belonged to has ended they are asked for again with a recovery R2T. The
// rest of the sequence is taken meanwhile. Reader goroutine only.
func (c *conn) recoverDataOut(t *task, m *pdu.DataOut, r *r2t, n uint32, p *pdu.PDU) error {
	c.log.Info("write data failed its digest; asking for it again", "itt", fmt.Sprintf("0x%x", m.ITT), "offset", m.BufferOffset, "length", n)
	if err := c.sendReject(&p.Header, pdu.RejectDataDigest); err != nil {
		return err
	}
	if t.recoveries++; t.recoveries > maxRecoveries(t.edtl) {
		// The data keeps failing: the command ends with CHECK
		// CONDITION (once its open sequences end) instead of asking
		// again for ever, each time keeping one more R2T.
		c.log.Warn("write data failed its digest too often; failing the command", "itt", fmt.Sprintf("0x%x", m.ITT), "recoveries", t.recoveries)
		t.failSense = t.sess.device.Transport().DataPhaseErrorSense()
		t.endSequence(m)
		t.settleFailed(c)
		return nil
	}
	t.holes = append(t.holes, span{m.BufferOffset, m.BufferOffset + n})
	// The sequence goes on as if the PDU had come, without its bytes.
	if r == nil {
		t.unsolDataSN++
		t.unsolNext += n
		if m.Final || t.unsolNext == t.unsolicited {
			t.unsolOpen = false
		}
	} else {
		r.dataSN++
		r.offset += n
		if r.offset == r.end || m.Final {
			r.finished = true
		}
	}
	return c.solicit(t)
}

// maxRecoveries is how many Data-Out PDUs of a write of n bytes may fail
// their digest before the command fails: 16, plus one per 8 KiB.
func maxRecoveries(n uint32) int { return 16 + int(n/8192) }

// span is a byte range [from, to) of a task's data.
type span struct{ from, to uint32 }

// solicitHoles sends recovery R2Ts for the holes of t whose sequences
// have ended, as long as MaxOutstandingR2T allows. Reader goroutine only.
func (c *conn) solicitHoles(t *task, outstanding *uint32) error {
	params := t.sess.params
	for len(t.holes) > 0 && *outstanding < params.MaxOutstandingR2T {
		h := t.holes[0]
		if t.sequenceOpenAt(h.from) {
			return nil
		}
		t.holes = t.holes[1:]
		if err := c.sendR2T(t, h.from, h.to-h.from); err != nil {
			return err
		}
		*outstanding++
	}
	return nil
}

// sequenceOpenAt reports whether the Data-Out sequence holding offset off
// has not seen its last PDU yet.
func (t *task) sequenceOpenAt(off uint32) bool {
	if t.unsolOpen && off < t.unsolicited {
		return true
	}
	for _, r := range t.r2ts {
		if !r.finished && off >= r.start && off < r.end {
			return true
		}
	}
	return false
}

// ackSN reads the ExpStatSN of a PDU from the initiator (bytes 28-31 of
// every opcode but login).
func ackSN(p *pdu.PDU) uint32 { return binary.BigEndian.Uint32(p.Header[28:32]) }
