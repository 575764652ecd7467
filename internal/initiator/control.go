package initiator

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// maxTextRounds bounds the PDUs of one text exchange.
const maxTextRounds = 4096

// TaskManagement sends an immediate task management function request and
// returns the target's response code (pdu.TMFResponse*). refITT names the
// task for ABORT TASK (its RefCmdSN is filled in when the task is one of
// this Conn's). When the function completes, commands of this Conn it
// aborted fail with ErrTaskAborted.
func (c *Conn) TaskManagement(ctx context.Context, function uint8, lun uint64, refITT uint32) (uint8, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	itt, t, err := c.newTask(kindTMF, lun)
	if err != nil {
		return 0, err
	}
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	c.mu.Lock()
	t.tmfFn, t.tmfRef = function, refITT
	refCmdSN := c.CmdSN()
	if ref := c.tasks[refITT]; ref != nil && ref.kind == kindCommand {
		refCmdSN = ref.cmdSN
	}
	c.mu.Unlock()
	rtt := uint32(pdu.ReservedTag)
	if function == pdu.TMFAbortTask || function == pdu.TMFTaskReassign {
		rtt = refITT
	}
	m := pdu.TaskMgmtRequest{Immediate: true, Function: function, LUN: lun, ITT: itt, RTT: rtt, RefCmdSN: refCmdSN}
	if _, err := c.issue(ctx, true, func(p *pdu.PDU, cmdSN, expStatSN uint32) {
		m.CmdSN, m.ExpStatSN = cmdSN, expStatSN
		m.Encode(p)
	}); err != nil {
		return 0, err
	}
	p, err := await(ctx, t)
	if err != nil {
		return 0, err
	}
	var r pdu.TaskMgmtResponse
	if err := r.Decode(p); err != nil {
		return 0, protoErr("answer to a task management request: %v", err)
	}
	completed = true
	return r.Response, nil
}

// Nop sends an immediate NOP-Out ping carrying data and waits for the
// NOP-In echo, which must return data unchanged.
func (c *Conn) Nop(ctx context.Context, data []byte) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	itt, t, err := c.newTask(kindNOP, 0)
	if err != nil {
		return err
	}
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	m := pdu.NOPOut{Immediate: true, ITT: itt, TTT: pdu.ReservedTag, Data: data}
	if _, err := c.issue(ctx, true, func(p *pdu.PDU, cmdSN, expStatSN uint32) {
		m.CmdSN, m.ExpStatSN = cmdSN, expStatSN
		m.Encode(p)
	}); err != nil {
		return err
	}
	p, err := await(ctx, t)
	if err != nil {
		return err
	}
	var in pdu.NOPIn
	if err := in.Decode(p); err != nil {
		return protoErr("answer to a NOP-Out: %v", err)
	}
	completed = true
	if in.TTT != pdu.ReservedTag {
		return protoErr("NOP-In echo with TTT 0x%08x", in.TTT)
	}
	if !bytes.Equal(in.Data, data) {
		return protoErr("NOP-In echoed %d bytes that differ from the %d sent", len(in.Data), len(data))
	}
	return nil
}

// Logout sends an immediate Logout Request closing the session, waits for
// the response and closes the connection. It returns an error when the
// target's response code is not success.
func (c *Conn) Logout(ctx context.Context) error {
	resp, err := c.LogoutReason(ctx, pdu.LogoutCloseSession)
	if err != nil {
		return err
	}
	if resp != pdu.LogoutResponseSuccess {
		return fmt.Errorf("initiator: logout response %d", resp)
	}
	return nil
}

// LogoutReason sends an immediate Logout Request with the given reason
// code and returns the target's response code. After a successful close
// of the session or connection the Conn is closed.
func (c *Conn) LogoutReason(ctx context.Context, reason uint8) (uint8, error) {
	return c.LogoutCID(ctx, reason, c.opt.CID)
}

// LogoutCID is LogoutReason naming the connection cid, which for reasons 1
// and 2 may be another connection of the session (RFC 7143 §11.14.3).
// This connection ends on success only when the logout concerns it.
func (c *Conn) LogoutCID(ctx context.Context, reason uint8, cid uint16) (uint8, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	itt, t, err := c.newTask(kindLogout, 0)
	if err != nil {
		return 0, err
	}
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	m := pdu.LogoutRequest{Immediate: true, ReasonCode: reason, ITT: itt, CID: cid}
	if _, err := c.issue(ctx, true, func(p *pdu.PDU, cmdSN, expStatSN uint32) {
		m.CmdSN, m.ExpStatSN = cmdSN, expStatSN
		m.Encode(p)
	}); err != nil {
		return 0, err
	}
	p, err := await(ctx, t)
	if err != nil {
		return 0, err
	}
	var r pdu.LogoutResponse
	if err := r.Decode(p); err != nil {
		return 0, protoErr("answer to a logout request: %v", err)
	}
	completed = true
	if r.Response == pdu.LogoutResponseSuccess && reason != pdu.LogoutRemoveRecovery && (reason == pdu.LogoutCloseSession || cid == c.opt.CID) {
		c.shutdown(errors.New("logged out"))
	}
	return r.Response, nil
}

// Text runs a text negotiation: it sends pairs in one Text Request and
// collects the whole answer, following the target's continuation (C bit,
// and F clear with a target transfer tag) with empty requests.
func (c *Conn) Text(ctx context.Context, pairs []negotiate.Pair) ([]negotiate.Pair, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	data := negotiate.Append(nil, pairs...)
	if max := c.Settings().MaxXmitDataSegmentLength; len(data) > max {
		return nil, fmt.Errorf("initiator: text request of %d bytes exceeds the target's MaxRecvDataSegmentLength %d", len(data), max)
	}
	itt, t, err := c.newTask(kindText, 0)
	if err != nil {
		return nil, err
	}
	completed := false
	defer func() { c.endTask(itt, t, completed) }()
	ttt := uint32(pdu.ReservedTag)
	var text []byte
	for round := 0; ; round++ {
		if round >= maxTextRounds {
			return nil, protoErr("text response did not end after %d PDUs", round)
		}
		m := pdu.TextRequest{Final: true, ITT: itt, TTT: ttt, LUN: 0, Data: data}
		if _, err := c.issue(ctx, false, func(p *pdu.PDU, cmdSN, expStatSN uint32) {
			m.CmdSN, m.ExpStatSN = cmdSN, expStatSN
			m.Encode(p)
		}); err != nil {
			return nil, err
		}
		data = nil
		p, err := await(ctx, t)
		if err != nil {
			return nil, err
		}
		var r pdu.TextResponse
		if err := r.Decode(p); err != nil {
			return nil, protoErr("answer to a text request: %v", err)
		}
		text = append(text, r.Data...)
		if r.Final {
			if r.TTT != pdu.ReservedTag {
				return nil, protoErr("final text response with TTT 0x%08x", r.TTT)
			}
			completed = true
			break
		}
		if r.TTT == pdu.ReservedTag {
			return nil, protoErr("continued text response with the reserved TTT")
		}
		ttt = r.TTT
	}
	out, err := negotiate.Parse(text)
	if err != nil {
		return nil, protoErr("text response: %v", err)
	}
	return out, nil
}

// SendTargets runs SendTargets=what (All, a target name, or "" for the
// session's target) on a discovery or normal session and returns each
// target name with its TargetAddress values, in the order given.
func (c *Conn) SendTargets(ctx context.Context, what string) (map[string][]string, error) {
	pairs, err := c.Text(ctx, []negotiate.Pair{{Key: "SendTargets", Value: what}})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string)
	cur := ""
	for _, kv := range pairs {
		switch kv.Key {
		case "TargetName":
			cur = kv.Value
			if _, ok := out[cur]; !ok {
				out[cur] = []string{}
			}
		case "TargetAddress":
			if cur == "" {
				return nil, protoErr("TargetAddress before any TargetName in a SendTargets response")
			}
			out[cur] = append(out[cur], kv.Value)
		default:
			return nil, protoErr("unexpected key %q in a SendTargets response", kv.Key)
		}
	}
	return out, nil
}
