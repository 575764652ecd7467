package initiator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// sequence is a session's command numbering: the CmdSN of the next
// command, the target's command window and the initiator task tags in
// use. The connections of a Session share one (RFC 7143 §4.2.2.1: CmdSN
// is session-wide); a lone Conn has its own.
type sequence struct {
	mu       sync.Mutex
	cmdSN    uint32
	expCmdSN uint32
	maxCmdSN uint32
	window   chan struct{} // closed and replaced whenever the window opens
	// lastITT hands out task tags unique across the session's
	// connections.
	lastITT atomic.Uint32
}

func newSequence(cmdSN uint32) *sequence {
	q := &sequence{cmdSN: cmdSN, expCmdSN: cmdSN, maxCmdSN: cmdSN - 1, window: make(chan struct{})}
	q.lastITT.Store(0x1000)
	return q
}

// connectionKeys are the keys a connection joining a session negotiates
// for itself (RFC 7143 §6.2: the others are leading-only).
var connectionKeys = map[string]bool{"HeaderDigest": true, "DataDigest": true, "MaxRecvDataSegmentLength": true}

// Session is a session of several connections (MC/S, RFC 7143 §4.3.2):
// a leading Conn and the Conns that joined it, sharing one CmdSN counter,
// command window and task tag space. Commands go on whichever Conn the
// caller picks; each one's data and status travel on that Conn.
type Session struct {
	opt  Options
	lead *Conn

	mu    sync.Mutex
	conns []*Conn
}

// DialSession opens the leading connection of a new session (CID
// opt.CID) and logs in. Propose MaxConnections above 1 in opt.Keys for
// connections to join it.
func DialSession(ctx context.Context, addr string, opt Options) (*Session, error) {
	if opt.TargetName == "" {
		return nil, errors.New("initiator: a session of several connections needs a target")
	}
	c, err := Dial(ctx, addr, opt)
	if err != nil {
		return nil, err
	}
	return &Session{opt: opt, lead: c, conns: []*Conn{c}}, nil
}

// Lead returns the session's leading connection.
func (s *Session) Lead() *Conn { return s.lead }

// TSIH returns the session's handle.
func (s *Session) TSIH() uint16 { return s.lead.Settings().TSIH }

// Join opens another connection to addr with connection ID cid and logs
// it in to the session (the session's ISID and TSIH); only the
// connection's own keys are negotiated and the session's settings apply.
// A cid already in use replaces that connection at the target
// (connection reinstatement). The new Conn shares the session's CmdSN.
func (s *Session) Join(ctx context.Context, addr string, cid uint16) (*Conn, error) {
	opt := s.opt
	opt.TSIH = s.TSIH()
	opt.CID = cid
	c, err := DialRaw(ctx, addr, opt)
	if err != nil {
		return nil, err
	}
	c.seq = s.lead.seq
	c.lead = s.lead
	if err := c.Login(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("initiator: joining session %d as CID %d: %w", opt.TSIH, cid, err)
	}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	return c, nil
}

// Conns returns the session's connections in the order they were opened
// (the leading one first), including those that have ended.
func (s *Session) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Conn(nil), s.conns...)
}

// Close closes every connection of the session without logging out.
func (s *Session) Close() error {
	for _, c := range s.Conns() {
		c.Close()
	}
	return nil
}

// joinKeys keeps the connection's own keys of a proposal.
func joinKeys(pairs []negotiate.Pair) []negotiate.Pair {
	out := pairs[:0:0]
	for _, kv := range pairs {
		if connectionKeys[kv.Key] {
			out = append(out, kv)
		}
	}
	return out
}
