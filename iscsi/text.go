package iscsi

import (
	"net"
	"sort"
	"strconv"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// maxTextRequest bounds the key=value text of one (possibly continued)
// Text Request.
const maxTextRequest = 64 << 10

// textState is a connection's text exchange in progress: request text
// gathered from continued PDUs, or a long response handed out in pieces.
type textState struct {
	request []byte
	pending []byte // response bytes not yet sent
	ttt     uint32
}

// handleText answers a Text Request: SendTargets, a continuation of a long
// response, or key negotiation (which full feature phase does not allow
// here: the keys are answered with Reject).
func (c *conn) handleText(p *pdu.PDU, admitted bool) error {
	var m pdu.TextRequest
	if err := m.Decode(p); err != nil {
		return c.reject(p, err)
	}
	if !m.Immediate && !admitted && !c.admitControl(p, m.CmdSN) {
		return nil
	}
	ts := &c.text
	if m.TTT != pdu.ReservedTag {
		if m.TTT != ts.ttt || (len(ts.pending) == 0 && len(ts.request) == 0) {
			return c.reject(p, &pdu.ProtocolError{Op: pdu.OpTextReq, Reason: pdu.RejectInvalidPDUField, Msg: "Target Transfer Tag does not continue a text exchange"})
		}
		if len(m.Data) == 0 && len(ts.pending) > 0 {
			return c.sendTextPiece(&m)
		}
	} else {
		// A new exchange discards any unfinished one (§6.2.1 reset).
		ts.pending, ts.request = nil, ts.request[:0]
	}
	if len(ts.request)+len(m.Data) > maxTextRequest {
		ts.request = ts.request[:0]
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpTextReq, Reason: pdu.RejectProtocolError, Msg: "text request too long"})
	}
	ts.request = append(ts.request, m.Data...)
	if m.Continue {
		ts.ttt = c.nextTTT()
		return c.sendMessage(&pdu.TextResponse{LUN: m.LUN, ITT: m.ITT, TTT: ts.ttt}, statAdvance)
	}
	pairs, err := negotiate.Parse(ts.request)
	ts.request = ts.request[:0]
	if err != nil {
		return c.reject(p, &pdu.ProtocolError{Op: pdu.OpTextReq, Reason: pdu.RejectProtocolError, Msg: err.Error()})
	}
	var answer []byte
	for _, kv := range pairs {
		if kv.Key == "SendTargets" {
			answer = c.sendTargets(kv.Value, answer)
			continue
		}
		answer = negotiate.Append(answer, negotiate.Pair{Key: kv.Key, Value: "Reject"})
	}
	ts.pending = answer
	return c.sendTextPiece(&m)
}

// sendTextPiece sends as much of the pending text response as the
// initiator's MaxRecvDataSegmentLength allows, with C=1 if more remains.
func (c *conn) sendTextPiece(m *pdu.TextRequest) error {
	ts := &c.text
	limit := int(c.params.InitiatorMaxRecvDataSegmentLength)
	data := ts.pending
	more := len(data) > limit
	if more {
		data = data[:limit]
	}
	ts.pending = ts.pending[len(data):]
	resp := pdu.TextResponse{Final: !more, Continue: more, LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag, Data: data}
	if more {
		ts.ttt = c.nextTTT()
		resp.TTT = ts.ttt
	} else {
		ts.pending = nil
	}
	return c.sendMessage(&resp, statAdvance)
}

// sendTargets appends the SendTargets answer for value (RFC 7143 §12.3 and
// Appendix C): "All" lists every target this initiator may see (discovery
// sessions only), a name lists that target, and an empty value lists the
// session's own target.
func (c *conn) sendTargets(value string, dst []byte) []byte {
	sess := c.sess()
	var names []string
	switch {
	case value == "All" && sess.discovery:
		names = c.srv.Targets()
	case value == "" && !sess.discovery:
		names = []string{sess.targetName()}
	case value != "All" && value != "":
		names = []string{value}
	}
	remote := c.nc.RemoteAddr().String()
	for _, name := range names {
		t := c.srv.Target(name)
		info := LoginInfo{InitiatorName: sess.initiatorName, RemoteAddr: remote, PortalGroupTag: c.tpgt, TargetName: name}
		if t == nil || !t.servedBy(c.tpgt) || !t.allows(info) {
			continue
		}
		dst = negotiate.Append(dst, negotiate.Pair{Key: "TargetName", Value: name})
		for _, a := range c.portalAddresses(t) {
			dst = negotiate.Append(dst, negotiate.Pair{Key: "TargetAddress", Value: a})
		}
	}
	return dst
}

// portalAddresses lists "host:port,tpgt" for every portal through which t
// can be reached (RFC 7143 §12.3 asks for all of them); a wildcard listener
// is named by the address this connection reached.
func (c *conn) portalAddresses(t *Target) []string {
	local := c.nc.LocalAddr().String()
	seen := map[string]bool{}
	var out []string
	for _, p := range c.srv.portals() {
		if !t.servedBy(p.tag) {
			continue
		}
		addr := p.addr
		if host, port, err := net.SplitHostPort(addr); err == nil {
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				lh, _, _ := net.SplitHostPort(local)
				addr = net.JoinHostPort(lh, port)
			}
		}
		addr += "," + strconv.Itoa(int(p.tag))
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	if len(out) == 0 {
		out = append(out, local+","+strconv.Itoa(int(c.tpgt)))
	}
	return out
}

// portal is one listening address and its portal group tag.
type portal struct {
	addr string
	tag  uint16
}

// portals returns the server's listeners and the remote portals ordered
// by tag and address.
func (s *Server) portals() []portal {
	s.mu.Lock()
	out := make([]portal, 0, len(s.listeners)+len(s.remote))
	for l, tag := range s.listeners {
		out = append(out, portal{addr: l.Addr().String(), tag: tag})
	}
	out = append(out, s.remote...)
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].tag != out[j].tag {
			return out[i].tag < out[j].tag
		}
		return out[i].addr < out[j].addr
	})
	return out
}
