package iscsi

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Login status (class << 8 | detail), RFC 7143 §11.13.5.
const (
	loginSuccess            = 0x0000
	loginInitiatorError     = 0x0200
	loginAuthFailure        = 0x0201
	loginAuthzFailure       = 0x0202
	loginNotFound           = 0x0203
	loginUnsupportedVersion = 0x0205
	loginTooManyConnections = 0x0206
	loginMissingParameter   = 0x0207
	loginSessionTypeBad     = 0x0209
	loginNoSession          = 0x020a
	loginInvalidRequest     = 0x020b
	loginTargetError        = 0x0300
	loginUnavailable        = 0x0301
	loginOutOfResources     = 0x0302
)

// loginError fails a login with a status sent to the initiator.
type loginError struct {
	status uint16
	msg    string
}

func (e *loginError) Error() string { return fmt.Sprintf("login status 0x%04x: %s", e.status, e.msg) }

func loginFail(status uint16, format string, args ...any) error {
	return &loginError{status: status, msg: fmt.Sprintf(format, args...)}
}

// loginState is what one connection's login phase has learnt so far.
type loginState struct {
	first          pdu.LoginRequest
	stage          uint8 // current stage as the target sees it
	initiatorName  string
	initiatorAlias string
	targetName     string
	sessionType    string
	target         *Target
	auth           AuthExchange
	authMethod     string
	authDone       bool
	neg            *negotiate.Negotiator
	statSN         uint32
	text           []byte            // continued (C bit) text being accumulated
	keys           int               // key=value pairs received so far
	declared       map[string]string // leading keys of the first request
}

// login runs the login phase and returns the session the connection joined.
func (c *conn) login() (*session, error) {
	var (
		p   pdu.PDU
		req pdu.LoginRequest
		st  loginState
	)
	lim := c.srv.opt.Limits
	for n := 0; ; n++ {
		if err := c.checkLoginHeader(); err != nil {
			return nil, c.loginDropped(&st, err)
		}
		if err := c.r.ReadPDU(&p); err != nil {
			return nil, c.loginDropped(&st, err)
		}
		c.srv.loginActivity(c, st.initiatorName)
		if exceeds(n, lim.MaxLoginPDUs) {
			return nil, c.loginReject(&req, &st, loginFail(loginInitiatorError, "login phase exceeds %d requests", lim.MaxLoginPDUs))
		}
		if err := req.Decode(&p); err != nil {
			return nil, c.loginReject(&req, &st, loginFail(loginInitiatorError, "%v", err))
		}
		if n == 0 {
			st.first = req
			st.first.Data = nil
			c.cid = req.CID
			st.stage = req.CSG
			st.statSN = req.ExpStatSN
			if req.VersionMin > 0 {
				return nil, c.loginReject(&req, &st, loginFail(loginUnsupportedVersion, "version %d-%d", req.VersionMin, req.VersionMax))
			}
		} else if req.ISID != st.first.ISID || req.TSIH != st.first.TSIH || req.CID != st.first.CID {
			return nil, c.loginReject(&req, &st, loginFail(loginInitiatorError, "ISID, TSIH or CID changed during login"))
		}
		if over(len(st.text)+len(req.Data), lim.MaxLoginText) {
			return nil, c.loginReject(&req, &st, loginFail(loginInitiatorError, "login text exceeds %d bytes", lim.MaxLoginText))
		}
		st.text = append(st.text, req.Data...)
		if req.Continue {
			// More text follows: acknowledge with an empty response.
			if err := c.loginRespond(&req, &st, false, st.stage, nil, loginSuccess); err != nil {
				return nil, err
			}
			continue
		}
		sess, done, err := c.loginStep(&req, &st)
		if err != nil {
			return nil, c.loginReject(&req, &st, err)
		}
		if done {
			return sess, nil
		}
	}
}

// loginDropped logs why a connection in login is being dropped without a
// Login Response (timeout, a stray first PDU, a broken header) and
// returns err.
func (c *conn) loginDropped(st *loginState, err error) error {
	c.loginFailed(st, err)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		c.log.Warn("login timed out; connection dropped", "initiator", st.initiatorName, "timeout", c.srv.opt.LoginTimeout)
	case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
	default:
		c.log.Warn("login dropped", "initiator", st.initiatorName, "err", err)
	}
	return err
}

// checkLoginHeader looks at the next PDU before it is read: anything but a
// Login Request without AHS ends the connection at once (RFC 7143 §6.1),
// instead of waiting for bytes a stray client's header claims will follow.
func (c *conn) checkLoginHeader() error {
	b, err := c.r.Peek(1)
	if err != nil {
		return err
	}
	if op := pdu.Opcode(b[0] & 0x3f); op != pdu.OpLoginReq {
		return fmt.Errorf("%v received before login completed", op)
	}
	h, err := c.r.Peek(pdu.BHSLen)
	if err != nil {
		return err
	}
	if h[4] != 0 {
		return fmt.Errorf("login request announcing %d bytes of AHS", int(h[4])*4)
	}
	return nil
}

// loginStep handles one complete login request (text gathered) and sends the
// response. done reports that the connection is now in full feature phase.
func (c *conn) loginStep(req *pdu.LoginRequest, st *loginState) (*session, bool, error) {
	pairs, err := negotiate.Parse(st.text)
	st.text = st.text[:0]
	if err != nil {
		return nil, false, loginFail(loginInitiatorError, "%v", err)
	}
	st.keys += len(pairs)
	if lim := c.srv.opt.Limits.MaxLoginKeys; over(st.keys, lim) {
		return nil, false, loginFail(loginInitiatorError, "login phase exceeds %d keys", lim)
	}
	if req.CSG != st.stage {
		return nil, false, loginFail(loginInitiatorError, "request in stage %d, expected %d", req.CSG, st.stage)
	}
	first := st.neg == nil
	if first {
		if err := c.loginBegin(pairs, st); err != nil {
			return nil, false, err
		}
	}
	secKeys, opKeys, err := splitLoginKeys(pairs, st, first)
	if err != nil {
		return nil, false, err
	}
	resp, err := c.stageKeys(req.CSG, secKeys, opKeys, st)
	if err != nil {
		return nil, false, err
	}
	if first && st.sessionType == "Normal" {
		resp = append(resp, negotiate.Pair{Key: "TargetPortalGroupTag", Value: strconv.Itoa(int(c.tpgt))})
		if st.target.Alias != "" {
			resp = append(resp, negotiate.Pair{Key: "TargetAlias", Value: st.target.Alias})
		}
	}

	transit := req.Transit
	if transit && req.CSG == pdu.StageSecurity && !st.authDone {
		// The exchange is not finished: stay in the security stage.
		transit = false
	}
	if !transit {
		return nil, false, c.loginRespond(req, st, false, st.stage, resp, loginSuccess)
	}
	if req.NSG != pdu.StageFullFeature {
		st.stage = req.NSG
		return nil, false, c.loginRespond(req, st, true, req.NSG, resp, loginSuccess)
	}
	sess, err := c.enterFullFeature(req, st, resp)
	return sess, err == nil, err
}

// splitLoginKeys sorts a login request's keys into security and
// operational ones. The declarations of the first request (InitiatorName,
// TargetName, SessionType, InitiatorAlias) may come again, unchanged.
func splitLoginKeys(pairs []negotiate.Pair, st *loginState, first bool) (sec, op []negotiate.Pair, err error) {
	for _, kv := range pairs {
		switch kv.Key {
		case "InitiatorName", "TargetName", "SessionType", "InitiatorAlias":
			// libiscsi repeats them when it enters the operational stage;
			// the same value again is harmless, a different one is not.
			if !first && kv.Value != st.declared[kv.Key] {
				return nil, nil, loginFail(loginInitiatorError, "%s changed after the first login request", kv.Key)
			}
		default:
			if negotiate.IsSecurityKey(kv.Key) {
				sec = append(sec, kv)
			} else {
				op = append(op, kv)
			}
		}
	}
	return sec, op, nil
}

// stageKeys runs the keys of a request in stage csg (security exchange,
// operational negotiation) and returns the keys to answer with.
func (c *conn) stageKeys(csg uint8, secKeys, opKeys []negotiate.Pair, st *loginState) ([]negotiate.Pair, error) {
	var resp []negotiate.Pair
	switch csg {
	case pdu.StageSecurity:
		out, err := c.securityStep(secKeys, st)
		if err != nil {
			return nil, err
		}
		resp = append(resp, out...)
	case pdu.StageOperational:
		if !st.authDone {
			if st.auth.Required() {
				return nil, loginFail(loginAuthFailure, "authentication required")
			}
			st.authDone = true
		}
		if len(secKeys) > 0 {
			return nil, loginFail(loginInitiatorError, "security key %s in the operational stage", secKeys[0].Key)
		}
	default:
		return nil, loginFail(loginInitiatorError, "invalid current stage %d", csg)
	}
	if len(opKeys) > 0 {
		out, err := st.neg.Negotiate(opKeys, st.sessionType)
		if err != nil {
			return nil, loginFail(loginInitiatorError, "%v", err)
		}
		resp = append(resp, out...)
	}
	return resp, nil
}

// enterFullFeature ends a login that moves to the full feature phase: it
// declares what the target must, creates (or reinstates) the session,
// answers with resp, and turns on the negotiated digests and limits.
func (c *conn) enterFullFeature(req *pdu.LoginRequest, st *loginState, resp []negotiate.Pair) (*session, error) {
	if err := st.neg.Complete(); err != nil {
		return nil, loginFail(loginInitiatorError, "%v", err)
	}
	resp = append(resp, st.neg.Final()...)
	if st.target != nil {
		if lim := c.srv.opt.Limits.MaxSessionsPerTarget; exceeds(c.srv.targetSessions(st.target.Name, st.initiatorName, st.first.ISID), lim) {
			return nil, loginFail(loginOutOfResources, "target %s has its maximum of %d sessions", st.target.Name, lim)
		}
	}
	if !c.srv.loginDone(c) {
		return nil, errDisplaced
	}
	sess, err := c.srv.createSession(c, st)
	if err != nil {
		return nil, err
	}
	if st.target != nil {
		c.srv.recordLogin(sess, LoginInfo{InitiatorName: st.initiatorName, RemoteAddr: c.nc.RemoteAddr().String(), PortalGroupTag: c.tpgt, TargetName: st.targetName})
	}
	params := sess.params
	if st.first.TSIH != 0 {
		// A secondary connection: the session's parameters, with the
		// digests and data segment limits negotiated on this one.
		own := st.neg.Params()
		params.HeaderDigest, params.DataDigest = own.HeaderDigest, own.DataDigest
		params.InitiatorMaxRecvDataSegmentLength = own.InitiatorMaxRecvDataSegmentLength
		params.TargetMaxRecvDataSegmentLength = own.TargetMaxRecvDataSegmentLength
	}
	c.params = params
	c.keep.on = params.ErrorRecoveryLevel >= 1
	c.limitRetention(sess)
	c.sessp.Store(sess)
	if err := c.loginRespond(req, st, true, pdu.StageFullFeature, resp, loginSuccess); err != nil {
		return nil, err
	}
	c.r.SetDigests(params.HeaderDigest, params.DataDigest)
	c.r.SetMaxDataSegmentLength(int(params.TargetMaxRecvDataSegmentLength))
	c.wmu.Lock()
	c.w.SetDigests(params.HeaderDigest, params.DataDigest)
	c.wmu.Unlock()
	return sess, nil
}

// loginBegin reads the first request's declarations and finds the target.
func (c *conn) loginBegin(pairs []negotiate.Pair, st *loginState) error {
	st.sessionType = "Normal"
	st.declared = map[string]string{}
	for _, kv := range pairs {
		switch kv.Key {
		case "InitiatorName", "InitiatorAlias", "TargetName", "SessionType":
			st.declared[kv.Key] = kv.Value
		}
		switch kv.Key {
		case "InitiatorName":
			st.initiatorName = kv.Value
		case "InitiatorAlias":
			st.initiatorAlias = kv.Value
		case "TargetName":
			st.targetName = kv.Value
		case "SessionType":
			st.sessionType = kv.Value
		}
	}
	if st.initiatorName == "" {
		return loginFail(loginMissingParameter, "InitiatorName missing")
	}
	if err := ValidateName(st.initiatorName); err != nil {
		return loginFail(loginInitiatorError, "%v", err)
	}
	c.srv.loginActivity(c, st.initiatorName)
	info := LoginInfo{InitiatorName: st.initiatorName, RemoteAddr: c.nc.RemoteAddr().String(), PortalGroupTag: c.tpgt}
	switch st.sessionType {
	case "Discovery":
		st.targetName = ""
	case "Normal":
		if st.targetName == "" {
			return loginFail(loginMissingParameter, "TargetName missing")
		}
		st.target = c.srv.Target(st.targetName)
		if st.target == nil || !st.target.servedBy(c.tpgt) {
			return loginFail(loginNotFound, "no target %s on portal group %d", st.targetName, c.tpgt)
		}
		info.TargetName = st.targetName
		if !st.target.allows(info) {
			return loginFail(loginAuthzFailure, "initiator %s from %s may not log in to %s", st.initiatorName, info.RemoteAddr, st.targetName)
		}
	default:
		return loginFail(loginSessionTypeBad, "session type %q", st.sessionType)
	}
	if tsih := st.first.TSIH; tsih != 0 && c.srv.sessionFor(tsih, st, c.tpgt) == nil {
		// Checked before any key is answered: a secondary connection's
		// keys mean nothing without its session.
		return loginFail(loginNoSession, "no session with TSIH %d for this initiator port and target", tsih)
	}
	ex, err := c.srv.authenticator().Begin(info)
	if err != nil {
		if errors.Is(err, ErrNotAuthorized) {
			return loginFail(loginAuthzFailure, "%v", err)
		}
		return loginFail(loginAuthFailure, "%v", err)
	}
	st.auth = ex
	ncfg := c.srv.opt.Negotiation
	if st.target != nil {
		ncfg = st.target.negotiation(ncfg)
	}
	// A login with a TSIH adds a connection to a session: only the
	// connection's own keys are negotiated (RFC 7143 §6.2).
	st.neg = negotiate.New(ncfg, st.first.TSIH == 0)
	if st.first.CSG == pdu.StageOperational && ex.Required() {
		return loginFail(loginAuthFailure, "authentication required but login skipped the security stage")
	}
	return nil
}

// securityStep negotiates AuthMethod and runs the authentication exchange.
func (c *conn) securityStep(keys []negotiate.Pair, st *loginState) ([]negotiate.Pair, error) {
	var resp []negotiate.Pair
	var rest []negotiate.Pair
	for _, kv := range keys {
		if kv.Key != "AuthMethod" {
			rest = append(rest, kv)
			continue
		}
		if st.authMethod != "" {
			return nil, loginFail(loginInitiatorError, "AuthMethod negotiated twice")
		}
		chosen := ""
	offers:
		for _, offer := range splitList(kv.Value) {
			for _, m := range st.auth.Methods() {
				if offer == m {
					chosen = m
					break offers
				}
			}
		}
		if chosen == "" {
			return nil, loginFail(loginAuthFailure, "no acceptable AuthMethod in %q", kv.Value)
		}
		st.authMethod = chosen
		resp = append(resp, negotiate.Pair{Key: "AuthMethod", Value: chosen})
	}
	if st.authMethod == "" {
		if len(rest) > 0 {
			return nil, loginFail(loginInitiatorError, "security keys before AuthMethod")
		}
		return resp, nil
	}
	if st.authDone {
		if len(rest) > 0 {
			return nil, loginFail(loginInitiatorError, "security keys after authentication completed")
		}
		return resp, nil
	}
	out, done, err := st.auth.Step(st.authMethod, rest)
	if err != nil {
		return nil, loginFail(loginAuthFailure, "%v", err)
	}
	st.authDone = done
	return append(resp, out...), nil
}

func splitList(v string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(v); i++ {
		if i == len(v) || v[i] == ',' {
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return out
}

// loginRespond sends a Login Response.
func (c *conn) loginRespond(req *pdu.LoginRequest, st *loginState, transit bool, nsg uint8, keys []negotiate.Pair, status uint16) error {
	m := pdu.LoginResponse{
		Transit:      transit,
		CSG:          req.CSG,
		NSG:          nsg,
		ISID:         req.ISID,
		TSIH:         req.TSIH,
		ITT:          req.ITT,
		StatSN:       st.statSN,
		ExpCmdSN:     st.first.CmdSN,
		MaxCmdSN:     st.first.CmdSN,
		StatusClass:  uint8(status >> 8),
		StatusDetail: uint8(status),
	}
	if !transit {
		m.NSG = 0
	}
	if sess := c.sess(); sess != nil {
		m.TSIH = sess.tsih
	}
	if len(keys) > 0 {
		m.Data = negotiate.Append(nil, keys...)
	}
	var p pdu.PDU
	m.Encode(&p)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.statSN = st.statSN
	err := c.sendLocked(&p, statAdvance)
	st.statSN = c.statSN
	return err
}

// loginReject sends a failing Login Response for err and returns err.
func (c *conn) loginReject(req *pdu.LoginRequest, st *loginState, err error) error {
	var le *loginError
	if !errors.As(err, &le) {
		le = &loginError{status: loginTargetError, msg: err.Error()}
	}
	c.loginFailed(st, le)
	c.log.Warn("login rejected", "initiator", st.initiatorName, "target", st.targetName, "session", st.sessionType, "status", fmt.Sprintf("0x%04x", le.status), "reason", le.msg)
	m := pdu.LoginResponse{
		CSG:          req.CSG,
		ISID:         req.ISID,
		TSIH:         req.TSIH,
		ITT:          req.ITT,
		StatSN:       st.statSN,
		ExpCmdSN:     st.first.CmdSN,
		MaxCmdSN:     st.first.CmdSN,
		StatusClass:  uint8(le.status >> 8),
		StatusDetail: uint8(le.status),
	}
	var p pdu.PDU
	m.Encode(&p)
	c.send(&p, statNone)
	return err
}
