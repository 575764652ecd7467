package initiator

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// maxLoginRounds bounds the request/response exchanges of one login.
const maxLoginRounds = 32

// leadingKey reports whether k belongs in the first login request.
func leadingKey(k string) bool {
	return k == "InitiatorName" || k == "SessionType" || k == "TargetName"
}

// targetDeclarative are keys the target declares rather than negotiates.
var targetDeclarative = map[string]bool{
	"MaxRecvDataSegmentLength": true,
	"TargetAlias":              true,
	"TargetAddress":            true,
	"TargetPortalGroupTag":     true,
}

// special reports an answer value that is not a negotiated outcome.
func special(v string) bool {
	return v == "Reject" || v == "Irrelevant" || v == "NotUnderstood"
}

// mergeKeys applies the overrides accepted by accept to base.
func mergeKeys(base, overrides []negotiate.Pair, accept func(string) bool) []negotiate.Pair {
	out := append([]negotiate.Pair(nil), base...)
	for _, o := range overrides {
		if !accept(o.Key) {
			continue
		}
		i := 0
		for i < len(out) && out[i].Key != o.Key {
			i++
		}
		switch {
		case i < len(out) && o.Value == "":
			out = append(out[:i], out[i+1:]...)
		case i < len(out):
			out[i].Value = o.Value
		case o.Value != "":
			out = append(out, o)
		}
	}
	return out
}

func (c *Conn) leadingPairs() []negotiate.Pair {
	base := []negotiate.Pair{{Key: "InitiatorName", Value: c.opt.InitiatorName}}
	if c.opt.TargetName == "" {
		base = append(base, negotiate.Pair{Key: "SessionType", Value: "Discovery"})
	} else {
		base = append(base, negotiate.Pair{Key: "SessionType", Value: "Normal"},
			negotiate.Pair{Key: "TargetName", Value: c.opt.TargetName})
	}
	return mergeKeys(base, c.opt.Keys, leadingKey)
}

func (c *Conn) operationalPairs() []negotiate.Pair {
	pairs := mergeKeys(DefaultOperationalKeys(c.opt), c.opt.Keys, func(k string) bool {
		return !leadingKey(k) && (k != "AuthMethod" || c.opt.SkipSecurity)
	})
	if c.lead != nil {
		pairs = joinKeys(pairs)
	}
	return pairs
}

// Login performs the login phase on a connection made with [NewConn] or
// [DialRaw]: an optional security stage (AuthMethod=None or CHAP), then the
// operational stage, then the switch to the full feature phase with the
// negotiated digests. A target refusal is a *LoginError.
func (c *Conn) Login(ctx context.Context) error {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	c.mu.Lock()
	full := c.full
	c.mu.Unlock()
	if full {
		return errors.New("initiator: already logged in")
	}
	if err := c.Err(); err != nil {
		return err
	}

	auth := &authState{chap: c.opt.CHAP}
	lead := c.leadingPairs()
	ops := c.operationalPairs()
	declared := 8192
	for _, kv := range ops {
		if kv.Key == "MaxRecvDataSegmentLength" {
			if n, err := strconv.Atoi(kv.Value); err == nil && n > 0 {
				declared = n
			}
		}
	}
	proposed := make(map[string]bool)
	propose := func(pairs []negotiate.Pair) []negotiate.Pair {
		for _, kv := range pairs {
			proposed[kv.Key] = true
		}
		return pairs
	}

	stage := uint8(pdu.StageSecurity)
	var out []negotiate.Pair
	opsSent := false
	if c.opt.SkipSecurity {
		stage = pdu.StageOperational
		out = append(lead, propose(ops)...)
		opsSent = true
	} else {
		out = append(lead, mergeKeys(auth.first(), c.opt.Keys, func(k string) bool { return k == "AuthMethod" })...)
	}
	itt := c.NextITT()

	for round := 0; ; round++ {
		if round >= maxLoginRounds {
			return protoErr("login did not complete in %d exchanges", round)
		}
		req := pdu.LoginRequest{CSG: stage, ISID: c.opt.ISID, TSIH: c.opt.TSIH, ITT: itt, CID: c.opt.CID}
		switch stage {
		case pdu.StageSecurity:
			if auth.ready {
				req.Transit, req.NSG = true, pdu.StageOperational
			}
		case pdu.StageOperational:
			req.Transit, req.NSG = true, pdu.StageFullFeature
		}
		req.Data = negotiate.Append(nil, out...)
		resp, pairs, err := c.loginExchange(ctx, &req)
		if err != nil {
			return err
		}
		if resp.StatusClass != 0 {
			params := make(map[string]string, len(pairs))
			for _, kv := range pairs {
				params[kv.Key] = kv.Value
			}
			return &LoginError{Class: resp.StatusClass, Detail: resp.StatusDetail, Params: params}
		}
		if resp.CSG != stage {
			return protoErr("login response for stage %d, request was in stage %d", resp.CSG, stage)
		}
		switch stage {
		case pdu.StageSecurity:
			out, err = auth.step(pairs, resp.Transit)
			if err != nil {
				return err
			}
			c.recordAnswers(pairs, nil)
		case pdu.StageOperational:
			out = c.recordAnswers(pairs, proposed)
		}
		if !resp.Transit {
			continue
		}
		if !req.Transit {
			return protoErr("target set T in a login response to a request without T")
		}
		switch {
		case resp.NSG == pdu.StageFullFeature && stage == pdu.StageOperational:
			c.finishLogin(resp.TSIH, declared)
			return nil
		case resp.NSG == pdu.StageOperational && stage == pdu.StageSecurity:
			if !auth.done() {
				return protoErr("target left the security stage before authentication completed")
			}
			stage = pdu.StageOperational
			if !opsSent {
				out = append(out, propose(ops)...)
				opsSent = true
			}
		default:
			return protoErr("login response transits from stage %d to stage %d", stage, resp.NSG)
		}
	}
}

// loginExchange sends req and reads the response, fetching the rest of a
// response sent with the C bit with empty requests. It returns the last
// response and the keys of the whole response text.
func (c *Conn) loginExchange(ctx context.Context, req *pdu.LoginRequest) (*pdu.LoginResponse, []negotiate.Pair, error) {
	send := func(req *pdu.LoginRequest) error {
		c.mu.Lock()
		req.CmdSN, req.ExpStatSN = c.CmdSN(), c.expStatSN
		c.mu.Unlock()
		var p pdu.PDU
		req.Encode(&p)
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.writeLocked(ctx, &p)
	}
	if err := send(req); err != nil {
		return nil, nil, err
	}
	var text []byte
	for {
		in, err := c.readSync(ctx)
		if err != nil {
			return nil, nil, err
		}
		if in.Opcode() != pdu.OpLoginResp {
			return nil, nil, protoErr("expected a Login Response, got %v", in.Opcode())
		}
		resp := new(pdu.LoginResponse)
		if err := resp.Decode(in); err != nil {
			return nil, nil, protoErr("%v", err)
		}
		if resp.ITT != req.ITT {
			return nil, nil, protoErr("login response ITT 0x%08x, request ITT 0x%08x", resp.ITT, req.ITT)
		}
		c.mu.Lock()
		c.expStatSN = resp.StatSN + 1
		c.updateWindowLocked(pdu.OpLoginResp, resp.ExpCmdSN, resp.MaxCmdSN)
		c.mu.Unlock()
		text = append(text, resp.Data...)
		if resp.StatusClass != 0 {
			pairs, _ := negotiate.Parse(text)
			return resp, pairs, nil
		}
		if !resp.Continue {
			pairs, err := negotiate.Parse(text)
			if err != nil {
				return nil, nil, protoErr("login response text: %v", err)
			}
			return resp, pairs, nil
		}
		more := pdu.LoginRequest{CSG: req.CSG, ISID: req.ISID, TSIH: req.TSIH, ITT: req.ITT, CID: req.CID}
		if err := send(&more); err != nil {
			return nil, nil, err
		}
	}
}

// recordAnswers stores the target's keys in params and the negotiated
// outcomes in result, and returns answers to keys the target offered on
// its own. proposed lists the keys we offered; nil means "security stage,
// record only".
func (c *Conn) recordAnswers(pairs []negotiate.Pair, proposed map[string]bool) []negotiate.Pair {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []negotiate.Pair
	for _, kv := range pairs {
		k, v := kv.Key, kv.Value
		c.params[k] = v
		switch {
		case targetDeclarative[k]:
			c.result[k] = v
		case proposed == nil:
		case proposed[k]:
			if !special(v) {
				c.result[k] = v
			}
		case special(v):
		default:
			a := c.answerOffer(k, v)
			if !special(a) {
				c.result[k] = a
			}
			out = append(out, negotiate.Pair{Key: k, Value: a})
		}
	}
	return out
}

// answerOffer answers a key the target offered without our proposing it.
func (c *Conn) answerOffer(k, v string) string {
	digest := func(want bool) string {
		vals := strings.Split(v, ",")
		has := func(s string) bool {
			for _, x := range vals {
				if x == s {
					return true
				}
			}
			return false
		}
		switch {
		case want && has("CRC32C"):
			return "CRC32C"
		case has("None"):
			return "None"
		case has("CRC32C"):
			return "CRC32C"
		}
		return "Reject"
	}
	switch k {
	case "HeaderDigest":
		return digest(c.opt.HeaderDigest)
	case "DataDigest":
		return digest(c.opt.DataDigest)
	case "ErrorRecoveryLevel":
		return "0"
	case "MaxConnections":
		return "1"
	case "IFMarker", "OFMarker":
		return "No"
	case "iSCSIProtocolLevel":
		if n, err := strconv.Atoi(v); err == nil && n < 1 {
			return v
		}
		return "1"
	case "TaskReporting":
		return "RFC3720"
	case "InitialR2T", "ImmediateData", "DataPDUInOrder", "DataSequenceInOrder",
		"MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain",
		"MaxOutstandingR2T":
		return v
	}
	return "NotUnderstood"
}

// finishLogin computes the settings and enters the full feature phase.
func (c *Conn) finishLogin(tsih uint16, declared int) {
	c.mu.Lock()
	get := func(k, def string) string {
		if v, ok := c.result[k]; ok && !special(v) {
			return v
		}
		return def
	}
	num := func(k string, def int) int {
		if n, err := strconv.Atoi(get(k, "")); err == nil {
			return n
		}
		return def
	}
	c.settings = Settings{
		HeaderDigest:             get("HeaderDigest", "None") == "CRC32C",
		DataDigest:               get("DataDigest", "None") == "CRC32C",
		InitialR2T:               get("InitialR2T", "Yes") == "Yes",
		ImmediateData:            get("ImmediateData", "Yes") == "Yes",
		FirstBurstLength:         num("FirstBurstLength", 65536),
		MaxBurstLength:           num("MaxBurstLength", 262144),
		MaxOutstandingR2T:        num("MaxOutstandingR2T", 1),
		DataPDUInOrder:           get("DataPDUInOrder", "Yes") == "Yes",
		DataSequenceInOrder:      get("DataSequenceInOrder", "Yes") == "Yes",
		ErrorRecoveryLevel:       num("ErrorRecoveryLevel", 0),
		MaxRecvDataSegmentLength: declared,
		MaxXmitDataSegmentLength: num("MaxRecvDataSegmentLength", 8192),
		TSIH:                     tsih,
	}
	if c.settings.MaxXmitDataSegmentLength <= 0 {
		c.settings.MaxXmitDataSegmentLength = 8192
	}
	if c.lead != nil {
		// A connection that joined a session: the session's settings,
		// with this connection's digests and segment limits.
		own := c.settings
		c.settings = c.lead.Settings()
		c.settings.HeaderDigest, c.settings.DataDigest = own.HeaderDigest, own.DataDigest
		c.settings.MaxRecvDataSegmentLength, c.settings.MaxXmitDataSegmentLength = own.MaxRecvDataSegmentLength, own.MaxXmitDataSegmentLength
		if own.TSIH != c.settings.TSIH {
			c.violation("login response of a joining connection carries TSIH %d, the session's is %d", own.TSIH, c.settings.TSIH)
		}
	}
	if c.opt.TargetName != "" && tsih == 0 {
		c.violation("final login response of a normal session carries TSIH 0")
	}
	c.mu.Unlock()
	c.startFullFeature()
}
