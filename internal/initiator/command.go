package initiator

import (
	"context"
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Task attributes for Request.Attr.
const (
	AttrUntagged    = 0
	AttrSimple      = 1
	AttrOrdered     = 2
	AttrHeadOfQueue = 3
	AttrACA         = 4
)

// Request is one SCSI command for [Conn.Do].
type Request struct {
	// LUN is the raw 8-byte LUN field.
	LUN uint64
	// CDB is the command descriptor block; more than 16 bytes go in an
	// extended-CDB AHS.
	CDB []byte
	// DataOut is the data to write (W bit). Data is sent as immediate data
	// up to FirstBurstLength when ImmediateData=Yes, as unsolicited
	// Data-Out up to FirstBurstLength when InitialR2T=No, and the rest in
	// answer to R2Ts.
	DataOut []byte
	// DataInLen is the expected read length (R bit). A command may not
	// both read and write.
	DataInLen int
	// Attr is the task attribute (Attr* constants; Command uses
	// AttrSimple).
	Attr uint8
	// Immediate sets the I bit: the command does not advance CmdSN and
	// skips the command window.
	Immediate bool
	// OnSent, when set, is called with the ITT and CmdSN once the command
	// PDU has been written (for example to abort it from another
	// goroutine).
	OnSent func(itt, cmdSN uint32)
}

// Response is the outcome of a SCSI command.
type Response struct {
	// Response is the iSCSI response code (0: command completed at target).
	Response byte
	// Status is the SCSI status.
	Status byte
	// Sense is the sense data of a SCSI Response, if any.
	Sense []byte
	// Data is the data read: the extent of the buffer the Data-In PDUs
	// covered.
	Data []byte
	// Overflow, Underflow and Residual are the residual flags and count.
	Overflow, Underflow bool
	Residual            uint32
	// ITT is the task's initiator task tag and CmdSN its command number.
	ITT, CmdSN uint32
	// DataInPDUs and R2Ts count the PDUs the target sent for the command;
	// ExpDataSN is the value in its SCSI Response (0 with phase-collapsed
	// status).
	DataInPDUs, R2Ts int
	// DataDigestRejects counts Data-Out PDUs the target rejected for
	// their data digest and asked for again (ErrorRecoveryLevel 1).
	DataDigestRejects int
	// DataInRecovered counts Data-In PDUs whose data failed its digest
	// (or Options.CorruptDataIn said so) and that came back after a Data
	// SNACK (ErrorRecoveryLevel 1).
	DataInRecovered int
	ExpDataSN       uint32
	// StatusInDataIn reports that the status came in the last Data-In
	// (phase collapse) rather than in a SCSI Response.
	StatusInDataIn bool
}

// Command runs a SCSI command with a simple task attribute. See [Conn.Do].
func (c *Conn) Command(ctx context.Context, lun uint64, cdb, dataOut []byte, dataInLen int) (*Response, error) {
	return c.Do(ctx, &Request{LUN: lun, CDB: cdb, DataOut: dataOut, DataInLen: dataInLen, Attr: AttrSimple})
}

// Do runs a SCSI command to completion: it sends the command with any
// immediate and unsolicited data, answers R2Ts with Data-Out sequences cut
// to the target's MaxRecvDataSegmentLength, collects Data-In (checking
// DataSN order, offsets and bounds) and returns the status from the last
// Data-In or the SCSI Response. A non-GOOD status is not an error; an
// error means no status arrived: a Reject (*RejectError), an abort
// (ErrTaskAborted), a target protocol violation (ErrProtocol), the
// connection ending (ErrConnClosed) or ctx ending. A command abandoned
// that way stays outstanding at the target.
func (c *Conn) Do(ctx context.Context, req *Request) (*Response, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	write, read := len(req.DataOut) > 0, req.DataInLen > 0
	if write && read {
		return nil, errors.New("initiator: bidirectional commands are not supported")
	}
	if req.DataInLen < 0 {
		return nil, errors.New("initiator: negative DataInLen")
	}
	itt, t, err := c.newTask(kindCommand, req.LUN)
	if err != nil {
		return nil, err
	}
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	st := c.Settings()

	edtl := uint32(req.DataInLen)
	if write {
		edtl = uint32(len(req.DataOut))
	}
	immLen, unsolEnd := 0, 0
	if write {
		if st.ImmediateData {
			immLen = min(len(req.DataOut), st.FirstBurstLength, st.MaxXmitDataSegmentLength)
		}
		unsolEnd = immLen
		if !st.InitialR2T {
			unsolEnd = min(len(req.DataOut), st.FirstBurstLength)
		}
	}
	cmd := pdu.SCSICommand{
		Immediate:                  req.Immediate,
		Final:                      unsolEnd == immLen,
		Read:                       read,
		Write:                      write,
		Attr:                       req.Attr,
		LUN:                        req.LUN,
		ITT:                        itt,
		ExpectedDataTransferLength: edtl,
		CDB:                        req.CDB,
		Data:                       req.DataOut[:immLen],
	}
	cmdSN, err := c.issue(ctx, req.Immediate, func(p *pdu.PDU, cmdSN, expStatSN uint32) {
		cmd.CmdSN, cmd.ExpStatSN = cmdSN, expStatSN
		cmd.Encode(p)
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	t.cmdSN = cmdSN
	c.mu.Unlock()
	if req.OnSent != nil {
		req.OnSent(itt, cmdSN)
	}
	if unsolEnd > immLen {
		if err := c.sendDataOut(ctx, req.LUN, itt, pdu.ReservedTag, req.DataOut, immLen, unsolEnd-immLen, st.MaxXmitDataSegmentLength); err != nil {
			return nil, err
		}
	}

	return c.dataPhase(ctx, t, req, st, &Response{ITT: itt, CmdSN: cmdSN}, &completed, false)
}

// dataPhase answers the R2Ts of command t, collects its Data-In and
// returns its status. resumed is set after TASK REASSIGN: the R2TSNs then
// go on from where the old connection left them.
func (c *Conn) dataPhase(ctx context.Context, t *task, req *Request, st Settings, resp *Response, completed *bool, resumed bool) (*Response, error) {
	itt := resp.ITT
	write, read := len(req.DataOut) > 0, req.DataInLen > 0
	var buf []byte
	if read {
		buf = make([]byte, req.DataInLen)
	}
	received, extent := 0, 0
	nextR2TSN := uint32(0)
	ackTTT, wantACK := uint32(0), false
	// lost are the Data-In whose data failed its digest (ErrorRecoveryLevel
	// 1): asked for again with a Data SNACK once the status has come, which
	// is then held in done until they are all in.
	var lost map[uint32]int // DataSN -> SNACKs sent
	var done *Response
	for {
		p, err := await(ctx, t)
		if err != nil {
			if write && st.ErrorRecoveryLevel >= 1 && dataDigestRejected(err) {
				// A Data-Out failed its digest: the target asks for
				// it again with a recovery R2T (RFC 7143 §7.8).
				resp.DataDigestRejects++
				continue
			}
			return nil, err
		}
		switch p.Opcode() {
		case pdu.OpDataIn:
			var di pdu.DataIn
			if err := di.Decode(p); err != nil {
				return nil, protoErr("%v", err)
			}
			if !read {
				return nil, protoErr("Data-In for a command that reads nothing (ITT 0x%08x)", itt)
			}
			bad := len(di.Data) != p.DataSegmentLength()
			if done != nil {
				// Recovery: the Data-In asked for again.
				if _, want := lost[di.DataSN]; !want || int(di.BufferOffset)+len(di.Data) > len(buf) {
					return nil, protoErr("unexpected Data-In DataSN %d after the status", di.DataSN)
				}
				if bad {
					if err := c.snackData(ctx, req.LUN, itt, di.DataSN, lost); err != nil {
						return nil, err
					}
					continue
				}
				copy(buf[di.BufferOffset:], di.Data)
				delete(lost, di.DataSN)
				if len(lost) == 0 {
					return c.finishRead(ctx, req, done, ackTTT, wantACK)
				}
				continue
			}
			if bad {
				if st.ErrorRecoveryLevel < 1 {
					return nil, protoErr("Data-In DataSN %d lost at ErrorRecoveryLevel 0", di.DataSN)
				}
				resp.DataInPDUs++
				resp.DataInRecovered++
				if lost == nil {
					lost = make(map[uint32]int)
				}
				lost[di.DataSN] = 0
				received += p.DataSegmentLength()
				extent = max(extent, int(di.BufferOffset)+p.DataSegmentLength())
				continue
			}
			if di.DataSN != uint32(resp.DataInPDUs) {
				return nil, protoErr("Data-In DataSN %d, expected %d", di.DataSN, resp.DataInPDUs)
			}
			resp.DataInPDUs++
			off, n := int(di.BufferOffset), len(di.Data)
			if off+n > len(buf) {
				return nil, protoErr("Data-In at offset %d of %d bytes exceeds the expected length %d", off, n, len(buf))
			}
			if st.DataPDUInOrder && st.DataSequenceInOrder && off != received {
				return nil, protoErr("Data-In at offset %d, expected %d", off, received)
			}
			if n > st.MaxRecvDataSegmentLength {
				return nil, protoErr("Data-In of %d bytes exceeds MaxRecvDataSegmentLength %d", n, st.MaxRecvDataSegmentLength)
			}
			if di.Acknowledge {
				ackTTT, wantACK = di.TTT, true
			}
			copy(buf[off:], di.Data)
			received += n
			extent = max(extent, off+n)
			if di.HasStatus {
				resp.Status = di.Status
				resp.Overflow, resp.Underflow, resp.Residual = di.Overflow, di.Underflow, di.ResidualCount
				resp.StatusInDataIn = true
				resp.Data = buf[:extent]
				*completed = true
				return resp, nil
			}
		case pdu.OpR2T:
			var r2t pdu.R2T
			if err := r2t.Decode(p); err != nil {
				return nil, protoErr("%v", err)
			}
			if !write {
				return nil, protoErr("R2T for a command that writes nothing (ITT 0x%08x)", itt)
			}
			if resumed && resp.R2Ts == 0 {
				nextR2TSN = r2t.R2TSN
			}
			if r2t.R2TSN != nextR2TSN {
				return nil, protoErr("R2TSN %d, expected %d", r2t.R2TSN, nextR2TSN)
			}
			nextR2TSN++
			resp.R2Ts++
			off, n := int(r2t.BufferOffset), int(r2t.DesiredDataTransferLength)
			if off+n > len(req.DataOut) {
				return nil, protoErr("R2T for offset %d length %d exceeds the %d bytes to write", off, n, len(req.DataOut))
			}
			if n > st.MaxBurstLength {
				return nil, protoErr("R2T desired length %d exceeds MaxBurstLength %d", n, st.MaxBurstLength)
			}
			if r2t.TTT == pdu.ReservedTag {
				return nil, protoErr("R2T with the reserved target transfer tag")
			}
			if err := c.sendDataOut(ctx, req.LUN, itt, r2t.TTT, req.DataOut, off, n, st.MaxXmitDataSegmentLength); err != nil {
				return nil, err
			}
		case pdu.OpSCSIResponse:
			var sr pdu.SCSIResponse
			if err := sr.Decode(p); err != nil {
				return nil, protoErr("%v", err)
			}
			resp.Response, resp.Status = sr.Response, sr.Status
			resp.Overflow, resp.Underflow, resp.Residual = sr.Overflow, sr.Underflow, sr.ResidualCount
			resp.ExpDataSN = sr.ExpDataSN
			if s := pdu.SenseData(sr.Data); len(s) > 0 {
				resp.Sense = append([]byte(nil), s...)
			}
			if read {
				resp.Data = buf[:extent]
			}
			*completed = true
			if len(lost) > 0 {
				done = resp
				for sn := range lost {
					if err := c.snackData(ctx, req.LUN, itt, sn, lost); err != nil {
						return nil, err
					}
				}
				continue
			}
			// The target may have asked for a DataACK (A bit): all its
			// Data-In arrived.
			return c.finishRead(ctx, req, resp, ackTTT, wantACK)
		default:
			return nil, protoErr("unexpected %v for SCSI command ITT 0x%08x", p.Opcode(), itt)
		}
	}
}

// sendDataOut sends data[off:off+n] as one Data-Out sequence for ttt
// (ReservedTag for unsolicited data) in PDUs of at most maxSeg bytes.
func (c *Conn) sendDataOut(ctx context.Context, lun uint64, itt, ttt uint32, data []byte, off, n, maxSeg int) error {
	if maxSeg <= 0 {
		return fmt.Errorf("initiator: MaxRecvDataSegmentLength %d", maxSeg)
	}
	var dataSN uint32
	for done := 0; done < n; {
		chunk := min(maxSeg, n-done)
		m := pdu.DataOut{
			Final:        done+chunk == n,
			LUN:          lun,
			ITT:          itt,
			TTT:          ttt,
			DataSN:       dataSN,
			BufferOffset: uint32(off + done),
			Data:         data[off+done : off+done+chunk],
		}
		var err error
		if c.opt.CorruptDataOut != nil && c.opt.CorruptDataOut(itt, off+done) {
			err = c.sendCorrupt(ctx, &m)
		} else {
			err = c.send(ctx, func(p *pdu.PDU, expStatSN uint32) {
				m.ExpStatSN = expStatSN
				m.Encode(p)
			})
		}
		if err != nil {
			return err
		}
		dataSN++
		done += chunk
	}
	return nil
}

// sendCorrupt sends m with its data digest inverted.
func (c *Conn) sendCorrupt(ctx context.Context, m *pdu.DataOut) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	m.ExpStatSN = c.ackLocked()
	c.mu.Unlock()
	var p pdu.PDU
	m.Encode(&p)
	b := c.Encode(&p)
	for i := len(b) - 4; i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := c.Err(); err != nil {
		return err
	}
	return c.withDeadline(ctx, true, func() error {
		_, err := c.nc.Write(b)
		return err
	})
}

// Reassign moves the command req, sent with ITT itt on a connection of
// the session that failed or was logged out for recovery, to c with TASK
// REASSIGN (ErrorRecoveryLevel 2, RFC 7143 §11.5.1), and finishes it
// here: a write answers the R2Ts for the data the target still misses, a
// read collects its Data-In (all of it: ExpDataSN 0), and the status
// comes back here. Wait DefaultTime2Wait after the failure first.
func (c *Conn) Reassign(ctx context.Context, req *Request, itt uint32) (*Response, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	c.mu.Lock()
	if _, busy := c.tasks[itt]; busy || !c.full {
		c.mu.Unlock()
		return nil, fmt.Errorf("initiator: ITT 0x%08x busy or not logged in", itt)
	}
	t := &task{kind: kindCommand, q: newQueue(), lun: req.LUN}
	c.tasks[itt] = t
	c.mu.Unlock()
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	code, err := c.TaskManagement(ctx, pdu.TMFTaskReassign, req.LUN, itt)
	if err != nil {
		return nil, err
	}
	if code != pdu.TMFResponseComplete {
		return nil, fmt.Errorf("initiator: TASK REASSIGN of ITT 0x%08x answered %d", itt, code)
	}
	return c.dataPhase(ctx, t, req, c.Settings(), &Response{ITT: itt}, &completed, true)
}

// dataDigestRejected reports a Reject for a data digest error.
func dataDigestRejected(err error) bool {
	var rj *RejectError
	return errors.As(err, &rj) && rj.Reason == pdu.RejectDataDigest
}

// maxSNACKs bounds how often one lost Data-In is asked for.
const maxSNACKs = 3

// snackData asks for Data-In sn of task itt again (Data SNACK, RFC 7143
// §11.16), counting the attempts in lost.
func (c *Conn) snackData(ctx context.Context, lun uint64, itt, sn uint32, lost map[uint32]int) error {
	if lost[sn] >= maxSNACKs {
		return protoErr("Data-In DataSN %d of ITT 0x%08x lost %d times", sn, itt, lost[sn])
	}
	lost[sn]++
	return c.send(ctx, func(p *pdu.PDU, expStatSN uint32) {
		(&pdu.SNACKRequest{Type: pdu.SNACKDataR2T, LUN: lun, ITT: itt, TTT: pdu.ReservedTag, ExpStatSN: expStatSN, BegRun: sn, RunLength: 1}).Encode(p)
	})
}

// finishRead completes a read whose lost Data-In have all come back:
// it acknowledges the data when the target asked for it.
func (c *Conn) finishRead(ctx context.Context, req *Request, resp *Response, ackTTT uint32, wantACK bool) (*Response, error) {
	if !wantACK {
		return resp, nil
	}
	err := c.send(ctx, func(p *pdu.PDU, expStatSN uint32) {
		(&pdu.SNACKRequest{Type: pdu.SNACKDataACK, LUN: req.LUN, ITT: pdu.ReservedTag, TTT: ackTTT, ExpStatSN: expStatSN, BegRun: uint32(resp.DataInPDUs)}).Encode(p)
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
