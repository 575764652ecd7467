package iscsi

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// writeTimeout bounds one PDU write, so an initiator that stops reading
// cannot pin a task forever.
const writeTimeout = 30 * time.Second

// statKind says how a PDU relates to the connection's StatSN.
type statKind int

const (
	statNone    statKind = iota // StatSN field reserved (Data-In without status)
	statCurrent                 // carries StatSN without advancing it (R2T, unsolicited NOP-In)
	statAdvance                 // consumes a StatSN (responses)
)

// conn is one TCP connection: one reader goroutine (serve), task workers
// reused across commands (worker), and an outbound queue drained by one
// writer at a time with vectored writes (see queue).
type conn struct {
	srv  *Server
	nc   net.Conn
	tpgt uint16 // portal group tag of the listener that accepted it
	log  *slog.Logger
	r    *pdu.Reader

	wmu    sync.Mutex
	w      *pdu.Writer
	statSN uint32
	iov    net.Buffers // scratch vector of a batch write, used under wmu

	// The outbound queue of the full feature phase (see queue).
	outq outQueue

	// work hands a runnable task to an idle worker goroutine; active
	// counts the tasks workers are running.
	work   chan *task
	active atomic.Int32
	// rmu is held by whoever handles this connection's PDUs: its reader
	// goroutine while it handles one, or the goroutine running control
	// PDUs handed over by another connection's reader (see handOff).
	// "Reader goroutine only" state below is guarded by it.
	rmu sync.Mutex
	// cmd is the SCSI Command being decoded; reader goroutine only.
	cmd pdu.SCSICommand
	// runnable collects the tasks the PDU being handled made runnable,
	// whatever their connection; reader goroutine only (see startReady).
	runnable []*task
	// deferred holds control PDUs whose CmdSN turn came while another PDU
	// was handled, in CmdSN order, whatever connection they arrived on;
	// reader goroutine only (see runDeferred).
	deferred []*deferredPDU
	// handed holds control PDUs of this connection whose CmdSN turn came
	// in another connection's reader, in CmdSN order; handing is set while
	// a goroutine runs them. Guarded by hmu.
	hmu     sync.Mutex
	handed  []*deferredPDU
	handing bool

	// params are the parameters in force on this connection: the
	// session's, with this connection's digests and data segment limits.
	params negotiate.Params
	// loggedOut is set once a logout closing this connection succeeded.
	loggedOut atomic.Bool
	// keep holds what SNACK may ask for again, at ErrorRecoveryLevel 1
	// or more (see erl.go).
	keep retention

	sessp atomic.Pointer[session] // set once login completes
	cid   uint16

	text textState // text exchange in progress; reader goroutine only

	lastRecv   atomic.Int64 // unix nanos of the last PDU received
	nopPending atomic.Uint32
	nopTTT     atomic.Uint32

	closeOnce sync.Once
	done      chan struct{}
	// readerGone is closed when the reader goroutine has stopped handling
	// PDUs (TASK REASSIGN waits for it before touching a task's state).
	readerGone chan struct{}
	closeErr   error
}

func newConn(s *Server, nc net.Conn, tpgt uint16) *conn {
	c := &conn{
		srv:        s,
		nc:         nc,
		tpgt:       tpgt,
		log:        s.log.With("remote", nc.RemoteAddr().String()),
		r:          pdu.NewReader(nc, 8192),
		w:          pdu.NewWriter(nc),
		done:       make(chan struct{}),
		readerGone: make(chan struct{}),
		work:       make(chan *task),
	}
	c.outq.wake = make(chan struct{}, 1)
	c.lastRecv.Store(time.Now().UnixNano())
	return c
}

// serve runs the connection: login, then the full feature phase, until the
// connection ends. A panic is recovered, logged with its stack, and ends
// this connection only.
func (c *conn) serve() {
	defer c.srv.removeConn(c)
	defer c.containPanic("connection handler")
	defer func() {
		c.close(nil)
		close(c.readerGone)
		c.dropRetained()
		if sess := c.sess(); sess != nil {
			sess.connClosed(c)
		}
	}()

	c.nc.SetDeadline(time.Now().Add(c.srv.opt.LoginTimeout))
	sess, err := c.login()
	if err != nil {
		if !errors.Is(err, io.EOF) && !isClosedErr(err) {
			c.log.Info("login failed", "err", err)
		}
		return
	}
	c.nc.SetDeadline(time.Time{})
	go c.writer()
	c.outq.mu.Lock()
	c.outq.started = true
	c.outq.mu.Unlock()
	c.log = c.log.With("initiator", sess.initiatorName, "tsih", sess.tsih)
	c.log.Info("session established", "target", sess.targetName(), "discovery", sess.discovery, "isid", fmt.Sprintf("%x", sess.isid[:]))
	if c.srv.opt.NopInterval > 0 {
		go c.keepAlive()
	}
	// fullFeature returns only when the connection ends, always with
	// the reason.
	err = c.fullFeature()
	if !errors.Is(err, io.EOF) && !isClosedErr(err) && !errors.Is(err, errLoggedOut) && !errors.Is(err, errRemovedForRecovery) {
		c.log.Info("connection ended", "err", err)
	}
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed)
}

// sess returns the connection's session, nil during login.
func (c *conn) sess() *session { return c.sessp.Load() }

// close ends the connection once; err is recorded as the reason.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		close(c.done)
		c.nc.Close()
	})
}

// closed reports whether the connection has ended.
func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// send writes p, filling StatSN, ExpCmdSN and MaxCmdSN (the latter two
// from the session once there is one), and returns once it is written. It
// is safe for concurrent use; in the full feature phase it goes through
// the outbound queue, so it keeps its place among queued responses.
func (c *conn) send(p *pdu.PDU, kind statKind) error {
	c.outq.mu.Lock()
	started := c.outq.started
	c.outq.mu.Unlock()
	if started {
		var e outPDU
		e.p, e.kind = *p, kind
		return c.queue(true, false, e)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sendLocked(p, kind)
}

func (c *conn) sendLocked(p *pdu.PDU, kind statKind) error {
	if c.closed() {
		return net.ErrClosed
	}
	c.stampStatSN(p, kind)
	if sess := c.sess(); sess != nil {
		p.SetCommandWindow(sess.window())
	}
	c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.w.WritePDU(p); err != nil {
		c.close(err)
		return err
	}
	return nil
}

// stampStatSN fills p's StatSN as kind says, advancing the connection's
// StatSN for a response. Called with wmu held.
func (c *conn) stampStatSN(p *pdu.PDU, kind statKind) {
	switch kind {
	case statCurrent:
		p.SetStatSN(c.statSN)
	case statAdvance:
		p.SetStatSN(c.statSN)
		c.statSN++
	}
}

// sendMessage encodes m and sends it like send.
func (c *conn) sendMessage(m pdu.Message, kind statKind) error {
	var p pdu.PDU
	m.Encode(&p)
	return c.send(&p, kind)
}

// sendReject answers a PDU whose header is hdr with a Reject.
func (c *conn) sendReject(hdr *[pdu.BHSLen]byte, reason pdu.RejectReason) error {
	saved := *hdr
	return c.sendMessage(&pdu.Reject{Reason: reason, DataSN: 0, Header: saved[:]}, statAdvance)
}

// keepAlive pings an idle connection with NOP-In and drops it when the
// initiator does not answer in time.
func (c *conn) keepAlive() {
	defer c.containPanic("keep-alive")
	interval, timeout := c.srv.opt.NopInterval, c.srv.opt.NopTimeout
	t := time.NewTicker(min(interval, timeout) / 2)
	defer t.Stop()
	var sentAt time.Time
	for {
		select {
		case <-c.done:
			return
		case now := <-t.C:
			last := time.Unix(0, c.lastRecv.Load())
			if c.nopPending.Load() != 0 {
				if now.Sub(sentAt) > timeout && now.Sub(last) > timeout {
					c.log.Warn("initiator did not answer NOP-In; dropping connection", "timeout", timeout)
					c.close(errors.New("nop-in timeout"))
					return
				}
				continue
			}
			if now.Sub(last) < interval {
				continue
			}
			ttt := c.nopTTT.Add(1)
			if ttt == pdu.ReservedTag {
				ttt = c.nopTTT.Add(1)
			}
			c.nopPending.Store(ttt)
			sentAt = now
			if err := c.sendMessage(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: ttt}, statCurrent); err != nil {
				return
			}
		}
	}
}

// requestLogout asks the initiator to log out (Async Message, event 1) so
// that Shutdown ends sessions cleanly; connections still in login are closed.
// logoutRequestTime is the time a logout request (Async Message event 1)
// gives the initiator to log out: its Parameter3, in seconds.
const logoutRequestTime = 2 * time.Second

func (c *conn) requestLogout() {
	if sess := c.sess(); sess == nil || sess.discovery {
		c.close(ErrServerClosed)
		return
	}
	if err := c.sendMessage(&pdu.AsyncMessage{AsyncEvent: pdu.AsyncLogoutRequest, Parameter3: uint16(logoutRequestTime / time.Second)}, statAdvance); err != nil {
		c.close(ErrServerClosed)
	}
}

// containPanic is deferred by the goroutines of a connection: a panic is
// recovered, logged with its stack, and ends this connection only.
func (c *conn) containPanic(where string) {
	if v := recover(); v != nil {
		c.log.Error("panic in "+where+"; connection closed", "panic", v, "stack", string(debug.Stack()))
		c.close(fmt.Errorf("internal error: %v", v))
	}
}
