package initiator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Defaults applied by [NewConn], [Dial] and [DialRaw] to zero Options fields.
const (
	DefaultInitiatorName            = "iqn.2026-11.io.iscsikit:test-initiator"
	DefaultTimeout                  = 10 * time.Second
	DefaultMaxRecvDataSegmentLength = 262144
)

// DefaultISID is the ISID used when Options.ISID is all zeros: a "random"
// format (type 10b) ISID with a fixed value, so tests are reproducible.
var DefaultISID = [6]byte{0x80, 0x12, 0x34, 0x56, 0x78, 0x9a}

// Options configure a connection and its login.
type Options struct {
	// InitiatorName is the iSCSI name sent at login (DefaultInitiatorName
	// when empty).
	InitiatorName string
	// ISID is the initiator part of the session ID (DefaultISID when zero).
	ISID [6]byte
	// TSIH is sent in the first login request; 0 (the default) asks for a
	// new session. This initiator never adds a second connection to a
	// session; a non-zero TSIH is for negative tests.
	TSIH uint16
	// CID is the connection ID sent at login and logout.
	CID uint16
	// InitialCmdSN is the CmdSN of the login requests and hence of the
	// first command.
	InitialCmdSN uint32
	// TargetName is the target to log in to; empty means a discovery
	// session.
	TargetName string
	// HeaderDigest and DataDigest propose CRC32C (only) for the digest;
	// false proposes None.
	HeaderDigest, DataDigest bool
	// Keys are operational (or leading) keys to propose in addition to, or
	// instead of, the defaults (see [DefaultOperationalKeys]). A key that
	// is already present takes the new value; a Pair with an empty Value
	// removes the key from the proposal. Keys named InitiatorName,
	// SessionType, TargetName or AuthMethod replace the value sent in the
	// first login request of their stage.
	Keys []negotiate.Pair
	// SkipSecurity starts the login in the operational stage (CSG=1),
	// sending the leading and operational keys in the first request. By
	// default the login starts with a security stage (AuthMethod=None, or
	// CHAP when CHAP is set) and transits to the operational stage.
	SkipSecurity bool
	// CHAP, when set, authenticates with CHAP in the security stage.
	CHAP *CHAP
	// ManualNOPIn delivers every NOP-In with the reserved ITT to
	// [Conn.ReadPDU] instead of answering target pings automatically.
	ManualNOPIn bool
	// CorruptDataOut, when set, is asked about every Data-Out [Conn.Do]
	// sends (by ITT and buffer offset); for true the PDU goes out with a
	// wrong data digest (fault injection; needs DataDigest). At
	// ErrorRecoveryLevel 1 Do then takes the target's Reject and answers
	// its recovery R2T.
	CorruptDataOut func(itt uint32, offset int) bool
	// CorruptDataIn, when set, is asked about every Data-In received (by
	// ITT and DataSN); for true its data is treated as if it had failed
	// its digest (fault injection). At ErrorRecoveryLevel 1 [Conn.Do]
	// then asks for it again with a Data SNACK; at 0 the command fails.
	CorruptDataIn func(itt, dataSN uint32) bool
	// Timeout bounds every operation (DefaultTimeout when zero); a
	// context with an earlier deadline wins.
	Timeout time.Duration
}

// DefaultOperationalKeys returns the operational keys proposed when
// Options.Keys does not override them. Discovery sessions propose only the
// digests and MaxRecvDataSegmentLength.
func DefaultOperationalKeys(opt Options) []negotiate.Pair {
	digest := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	keys := []negotiate.Pair{
		{Key: "HeaderDigest", Value: digest(opt.HeaderDigest)},
		{Key: "DataDigest", Value: digest(opt.DataDigest)},
		{Key: "MaxRecvDataSegmentLength", Value: fmt.Sprint(DefaultMaxRecvDataSegmentLength)},
	}
	if opt.TargetName == "" {
		return keys
	}
	return append(keys,
		negotiate.Pair{Key: "DefaultTime2Wait", Value: "2"},
		negotiate.Pair{Key: "DefaultTime2Retain", Value: "0"},
		negotiate.Pair{Key: "MaxConnections", Value: "1"},
		negotiate.Pair{Key: "ErrorRecoveryLevel", Value: "0"},
		negotiate.Pair{Key: "InitialR2T", Value: "Yes"},
		negotiate.Pair{Key: "ImmediateData", Value: "Yes"},
		negotiate.Pair{Key: "MaxBurstLength", Value: "262144"},
		negotiate.Pair{Key: "FirstBurstLength", Value: "65536"},
		negotiate.Pair{Key: "MaxOutstandingR2T", Value: "1"},
		negotiate.Pair{Key: "DataPDUInOrder", Value: "Yes"},
		negotiate.Pair{Key: "DataSequenceInOrder", Value: "Yes"},
	)
}

// Settings are the negotiated parameters the initiator acts on, computed at
// the end of login from the answers in [Conn.Params] and the RFC 7143
// defaults.
type Settings struct {
	HeaderDigest, DataDigest  bool
	InitialR2T, ImmediateData bool
	FirstBurstLength          int
	MaxBurstLength            int
	MaxOutstandingR2T         int
	DataPDUInOrder            bool
	DataSequenceInOrder       bool
	ErrorRecoveryLevel        int
	// MaxRecvDataSegmentLength is the limit this initiator declared.
	MaxRecvDataSegmentLength int
	// MaxXmitDataSegmentLength is the target's declared
	// MaxRecvDataSegmentLength: the largest data segment sent to it.
	MaxXmitDataSegmentLength int
	// TSIH is the session handle the target assigned.
	TSIH uint16
}

type taskKind int

const (
	kindCommand taskKind = iota
	kindTMF
	kindNOP
	kindText
	kindLogout
)

// task is one outstanding exchange identified by its ITT.
type task struct {
	kind      taskKind
	q         *queue
	lun       uint64
	cmdSN     uint32
	tmfFn     uint8
	tmfRef    uint32
	abandoned bool // the caller gave up; drop its PDUs until it ends
	// lostData: a Data-In of the command failed its digest
	// (ErrorRecoveryLevel 1). held: its status came meanwhile, and the
	// ExpStatSN this connection sends stays at heldSN, the status's StatSN,
	// until the command ends: a SNACK for the lost Data-In must precede the
	// status acknowledgement (RFC 7143 §11.16.1), or the target may
	// already have let the data go.
	lostData bool
	held     bool
	heldSN   uint32
}

// Conn is one iSCSI connection (and session) to a target. See the package
// documentation for its concurrency guarantees.
type Conn struct {
	opt Options
	nc  net.Conn
	r   *pdu.Reader // login phase: callers under wmu/serially; then the reader goroutine
	w   *pdu.Writer // under wmu

	wmu  sync.Mutex
	dlmu sync.Mutex // guards the deadline generations
	wgen uint64
	rgen uint64

	// seq is the session's command numbering, shared by the connections
	// of a Session; lock it after mu.
	seq *sequence
	// lead is the session's leading connection when this one joined it
	// (see Session.Join): its settings are the session's.
	lead *Conn

	mu         sync.Mutex
	expStatSN  uint32
	holds      int // tasks whose status acknowledgement is held
	tasks      map[uint32]*task
	violations []error
	params     map[string]string // keys as the target sent them
	result     map[string]string // negotiated outcome per key
	settings   Settings
	full       bool          // in the full feature phase, reader running
	readerDone chan struct{} // closed when the reader goroutine exits
	held       chan struct{} // non-nil: the reader waits until it is closed

	raw   *queue
	pings atomic.Int64
	// rejects counts the Reject PDUs the target sent.
	rejects atomic.Int64
	bg      sync.WaitGroup
	done    chan struct{}
	once    sync.Once
	closed  error // set before done is closed
}

// NewConn wraps an established transport connection. The returned Conn is
// in the login phase: call [Conn.Login], or drive the login by hand with
// [Conn.SendPDU] and [Conn.ReadPDU] (which then read synchronously).
func NewConn(nc net.Conn, opt Options) *Conn {
	if opt.InitiatorName == "" {
		opt.InitiatorName = DefaultInitiatorName
	}
	if opt.ISID == ([6]byte{}) {
		opt.ISID = DefaultISID
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	c := &Conn{
		opt:    opt,
		nc:     nc,
		r:      pdu.NewReader(nc, 8192),
		w:      pdu.NewWriter(nc),
		seq:    newSequence(opt.InitialCmdSN),
		tasks:  make(map[uint32]*task),
		params: make(map[string]string),
		result: make(map[string]string),
		raw:    newQueue(),
		done:   make(chan struct{}),
	}
	return c
}

// DialRaw opens a TCP connection to addr without logging in.
func DialRaw(ctx context.Context, addr string, opt Options) (*Conn, error) {
	timeout := opt.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return NewConn(nc, opt), nil
}

// Dial opens a TCP connection to addr and logs in. On error the connection
// is closed.
func Dial(ctx context.Context, addr string, opt Options) (*Conn, error) {
	c, err := DialRaw(ctx, addr, opt)
	if err != nil {
		return nil, err
	}
	if err := c.Login(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NetConn returns the underlying transport connection. Writing to it
// directly races with the Conn's own writes; use [Conn.WriteRaw].
func (c *Conn) NetConn() net.Conn { return c.nc }

// Done returns a channel closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is open, and then the *ClosedError
// describing why it ended.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.closed
	default:
		return nil
	}
}

// Close closes the connection without logging out and waits for the
// reader goroutine to exit. Calls waiting on the connection fail with an
// error matching ErrConnClosed. Close is idempotent.
func (c *Conn) Close() error {
	c.shutdown(errors.New("closed by the initiator"))
	c.mu.Lock()
	rd := c.readerDone
	c.mu.Unlock()
	if rd != nil {
		<-rd
	}
	c.bg.Wait()
	return nil
}

// shutdown ends the connection with cause, failing every waiter.
func (c *Conn) shutdown(cause error) {
	c.once.Do(func() {
		c.closed = &ClosedError{Cause: cause}
		c.nc.Close()
		close(c.done)
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, t := range c.tasks {
			t.q.close(c.closed)
		}
		c.raw.close(c.closed)
	})
}

// Params returns a copy of the keys the target sent during login (its
// answers to our proposals, its declarations and its own offers), last
// value per key.
func (c *Conn) Params() map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]string, len(c.params))
	for k, v := range c.params {
		m[k] = v
	}
	return m
}

// Settings returns the negotiated parameters in effect (zero before login
// completes).
func (c *Conn) Settings() Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings
}

// Violations returns the protocol violations noticed on the connection
// that were not reported to a caller as an error: StatSN gaps, invalid
// command windows, PDUs for unknown tasks.
func (c *Conn) Violations() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.violations...)
}

// PingsAnswered returns how many target NOP-In pings were answered
// automatically.
func (c *Conn) PingsAnswered() int64 { return c.pings.Load() }

// Rejects returns how many Reject PDUs the target has sent on this
// connection in the full feature phase, whether or not a call was waiting
// for them.
func (c *Conn) Rejects() int64 { return c.rejects.Load() }

// CmdSN returns the CmdSN the next non-immediate command will carry (and
// that immediate PDUs carry) without consuming it.
func (c *Conn) CmdSN() uint32 {
	c.seq.mu.Lock()
	defer c.seq.mu.Unlock()
	return c.seq.cmdSN
}

// NextCmdSN consumes and returns a CmdSN for a raw non-immediate PDU, so
// that later commands stay in sequence. It does not wait for the window.
func (c *Conn) NextCmdSN() uint32 {
	c.seq.mu.Lock()
	defer c.seq.mu.Unlock()
	sn := c.seq.cmdSN
	c.seq.cmdSN++
	return sn
}

// ExpStatSN returns the StatSN expected next from the target.
func (c *Conn) ExpStatSN() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.expStatSN
}

// Window returns the target's current ExpCmdSN and MaxCmdSN.
func (c *Conn) Window() (expCmdSN, maxCmdSN uint32) {
	c.seq.mu.Lock()
	defer c.seq.mu.Unlock()
	return c.seq.expCmdSN, c.seq.maxCmdSN
}

// NextITT returns an initiator task tag that is not in use and not the
// reserved value. PDUs the target sends with it go to [Conn.ReadPDU].
func (c *Conn) NextITT() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.allocITTLocked()
}

func (c *Conn) allocITTLocked() uint32 {
	for {
		itt := c.seq.lastITT.Add(1)
		if itt == pdu.ReservedTag {
			continue
		}
		if _, busy := c.tasks[itt]; !busy {
			return itt
		}
	}
}

func (c *Conn) violation(format string, args ...any) {
	if len(c.violations) < 1000 {
		c.violations = append(c.violations, protoErr(format, args...))
	}
}

// opCtx bounds ctx by the per-operation timeout.
func (c *Conn) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opt.Timeout)
}

// withDeadline runs fn with the read or write deadline of the connection
// set from ctx, and interrupts it when ctx is cancelled.
func (c *Conn) withDeadline(ctx context.Context, write bool, fn func() error) error {
	dl := time.Now().Add(c.opt.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	set, gen := c.nc.SetReadDeadline, &c.rgen
	if write {
		set, gen = c.nc.SetWriteDeadline, &c.wgen
	}
	c.dlmu.Lock()
	*gen++
	mine := *gen
	set(dl)
	c.dlmu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.dlmu.Lock()
		if *gen == mine {
			set(time.Unix(1, 0))
		}
		c.dlmu.Unlock()
	})
	err := fn()
	c.dlmu.Lock()
	*gen++
	c.dlmu.Unlock()
	stop()
	return err
}

// writeLocked writes p; the caller holds wmu. A failed write leaves the
// stream unusable, so it ends the connection.
func (c *Conn) writeLocked(ctx context.Context, p *pdu.PDU) error {
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.withDeadline(ctx, true, func() error { return c.w.WritePDU(p) }); err != nil {
		c.shutdown(fmt.Errorf("writing %v: %w", p.Opcode(), err))
		return c.closed
	}
	return nil
}

// SendPDU writes p as built, with no sequence-number bookkeeping: use
// [Conn.NextCmdSN], [Conn.CmdSN], [Conn.ExpStatSN] and [Conn.NextITT] to
// fill it in. TotalAHSLength and DataSegmentLength are set from p.AHS and
// p.Data and the negotiated digests are added; to send lying lengths or
// bad digests, encode the bytes yourself and use [Conn.WriteRaw].
func (c *Conn) SendPDU(p *pdu.PDU) error {
	ctx, cancel := c.opCtx(context.Background())
	defer cancel()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(ctx, p)
}

// Encode returns p's wire bytes with the digests the connection currently
// uses, for tests that corrupt them before [Conn.WriteRaw].
func (c *Conn) Encode(p *pdu.PDU) []byte {
	var buf bytes.Buffer
	w := pdu.NewWriter(&buf)
	c.mu.Lock()
	if c.full {
		w.SetDigests(c.settings.HeaderDigest, c.settings.DataDigest)
	}
	c.mu.Unlock()
	w.WritePDU(p)
	return buf.Bytes()
}

// WriteRaw writes b to the connection as is (for malformed framing and
// digest tests), serialized with the Conn's other writes.
func (c *Conn) WriteRaw(b []byte) error {
	ctx, cancel := c.opCtx(context.Background())
	defer cancel()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	err := c.withDeadline(ctx, true, func() error {
		_, err := c.nc.Write(b)
		return err
	})
	if err != nil {
		c.shutdown(fmt.Errorf("raw write: %w", err))
		return c.closed
	}
	return nil
}

// ReadPDU returns the next PDU from the target that no call is waiting
// for: answers to raw PDUs, Async Messages, Rejects of raw PDUs, PDUs for
// unknown tags and (with ManualNOPIn) target NOP-Ins. In the login phase
// it reads the connection directly; a *pdu.ProtocolError is returned with
// the PDU it concerns.
func (c *Conn) ReadPDU(ctx context.Context) (*pdu.PDU, error) {
	ctx, cancel := c.opCtx(ctx)
	defer cancel()
	c.mu.Lock()
	full := c.full
	c.mu.Unlock()
	if full {
		return c.raw.pop(ctx)
	}
	return c.readSync(ctx)
}

// readSync reads one PDU in the login phase.
func (c *Conn) readSync(ctx context.Context) (*pdu.PDU, error) {
	if err := c.Err(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := new(pdu.PDU)
	err := c.withDeadline(ctx, false, func() error { return c.r.ReadPDU(p) })
	if err != nil {
		var perr *pdu.ProtocolError
		if errors.As(err, &perr) {
			if perr.Fatal {
				c.shutdown(err)
			}
			return p, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		c.shutdown(fmt.Errorf("read: %w", err))
		return nil, c.closed
	}
	return p, nil
}

// startFullFeature switches to the full feature phase: digests on, our
// receive limit in force, reader goroutine running.
func (c *Conn) startFullFeature() {
	c.nc.SetReadDeadline(time.Time{})
	st := c.settings
	c.r.SetDigests(st.HeaderDigest, st.DataDigest)
	c.r.SetMaxDataSegmentLength(st.MaxRecvDataSegmentLength)
	c.wmu.Lock()
	c.w.SetDigests(st.HeaderDigest, st.DataDigest)
	c.wmu.Unlock()
	c.mu.Lock()
	c.full = true
	c.readerDone = make(chan struct{})
	c.mu.Unlock()
	go c.readLoop()
}

func (c *Conn) readLoop() {
	defer close(c.readerDone)
	for {
		c.mu.Lock()
		held := c.held
		c.mu.Unlock()
		if held != nil {
			select {
			case <-held:
			case <-c.done:
				return
			}
		}
		p := new(pdu.PDU)
		if err := c.r.ReadPDU(p); err != nil {
			if !errors.Is(err, pdu.ErrDataDigest) || p.Opcode() != pdu.OpDataIn || !c.recovers() {
				c.shutdown(fmt.Errorf("read: %w", err))
				return
			}
			// A Data-In whose data failed its digest, at
			// ErrorRecoveryLevel 1: its command asks for it again.
			p.Data = nil
		} else if p.Opcode() == pdu.OpDataIn && c.opt.CorruptDataIn != nil && c.opt.CorruptDataIn(p.ITT(), u32(p, 36)) {
			p.Data = nil
		}
		c.dispatch(p)
	}
}

// HoldReads stops the reader goroutine taking PDUs from the connection
// after the one it is reading, so what the target sends stays in TCP's
// buffers and holds the target's writes up, as an initiator that stops
// reading its socket does; the function it returns lets the reader go on.
// Calls waiting for answers meanwhile wait until then or their context
// ends.
func (c *Conn) HoldReads() (release func()) {
	held := make(chan struct{})
	c.mu.Lock()
	c.held = held
	c.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.held == held {
				c.held = nil
			}
			c.mu.Unlock()
			close(held)
		})
	}
}

// recovers reports whether the session runs at ErrorRecoveryLevel 1 or
// more.
func (c *Conn) recovers() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings.ErrorRecoveryLevel >= 1
}

func u32(p *pdu.PDU, off int) uint32 { return binary.BigEndian.Uint32(p.Header[off : off+4]) }

// serial arithmetic (RFC 1982) on 32-bit sequence numbers.
func snAfter(a, b uint32) bool { return int32(a-b) > 0 }

// dispatch routes one PDU from the target.
func (c *Conn) dispatch(p *pdu.PDU) {
	op := p.Opcode()
	itt := p.ITT()
	c.mu.Lock()
	c.trackLocked(p)
	switch op {
	case pdu.OpNOPIn:
		if itt == pdu.ReservedTag {
			c.mu.Unlock()
			if c.opt.ManualNOPIn {
				c.raw.push(p)
			} else if u32(p, 20) != pdu.ReservedTag {
				c.bg.Add(1)
				go c.answerPing(p)
			}
			return
		}
	case pdu.OpReject:
		c.rejects.Add(1)
		itt = pdu.ReservedTag
		if len(p.Data) >= pdu.BHSLen {
			itt = binary.BigEndian.Uint32(p.Data[16:20])
		}
	case pdu.OpAsyncMsg:
		c.mu.Unlock()
		c.raw.push(p)
		return
	case pdu.OpTaskMgmtResp:
		if t := c.tasks[itt]; t != nil && t.kind == kindTMF && !t.abandoned && p.Header[2] == pdu.TMFResponseComplete {
			c.abortLocked(t)
		}
	}
	t := c.tasks[itt]
	if t == nil || itt == pdu.ReservedTag {
		c.mu.Unlock()
		c.raw.push(p)
		return
	}
	if t.abandoned {
		if endsTask(p) {
			delete(c.tasks, itt)
		}
		c.mu.Unlock()
		return
	}
	switch {
	case op == pdu.OpDataIn && p.Data == nil && p.DataSegmentLength() > 0:
		t.lostData = true
	case op == pdu.OpSCSIResponse && t.lostData && !t.held:
		t.held, t.heldSN = true, u32(p, 24)
		c.holds++
	}
	c.mu.Unlock()
	t.q.push(p)
}

// ackLocked returns the ExpStatSN to send: the StatSN expected next, or
// the oldest status held back because Data-In of its command are being
// asked for again (see task.held). Called with mu held.
func (c *Conn) ackLocked() uint32 {
	ack := c.expStatSN
	if c.holds == 0 {
		return ack
	}
	for _, t := range c.tasks {
		if t.held && snAfter(ack, t.heldSN) {
			ack = t.heldSN
		}
	}
	return ack
}

// endsTask reports whether p is the last PDU the target sends for its task.
func endsTask(p *pdu.PDU) bool {
	switch p.Opcode() {
	case pdu.OpDataIn:
		return p.Header[1]&0x01 != 0
	case pdu.OpR2T:
		return false
	case pdu.OpTextResp:
		return p.Final()
	}
	return true
}

// abortLocked fails the commands a completed task management function
// aborted. Targets send nothing more for them after the TMF response.
func (c *Conn) abortLocked(tmf *task) {
	for itt, t := range c.tasks {
		if t.kind != kindCommand {
			continue
		}
		hit := false
		switch tmf.tmfFn {
		case pdu.TMFAbortTask:
			hit = itt == tmf.tmfRef
		case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset:
			hit = t.lun == tmf.lun
		case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
			hit = true
		}
		if !hit {
			continue
		}
		if t.abandoned {
			delete(c.tasks, itt)
			continue
		}
		t.q.close(fmt.Errorf("%w (ITT 0x%08x)", ErrTaskAborted, itt))
	}
}

// trackLocked updates ExpStatSN and the command window from a target PDU.
func (c *Conn) trackLocked(p *pdu.PDU) {
	op := p.Opcode()
	if !op.Known() || op.FromInitiator() {
		return
	}
	statSN := u32(p, 24)
	switch {
	case op == pdu.OpDataIn && p.Header[1]&0x01 == 0:
		// no status, StatSN reserved
	case op == pdu.OpR2T || (op == pdu.OpNOPIn && p.ITT() == pdu.ReservedTag):
		if statSN != c.expStatSN {
			c.violation("%v carries StatSN %d, expected %d", op, statSN, c.expStatSN)
		}
		if snAfter(statSN, c.expStatSN) {
			c.expStatSN = statSN
		}
	default:
		if statSN != c.expStatSN {
			c.violation("%v carries StatSN %d, expected %d", op, statSN, c.expStatSN)
		}
		if !snAfter(c.expStatSN, statSN) {
			c.expStatSN = statSN + 1
		}
	}
	c.updateWindowLocked(op, u32(p, 28), u32(p, 32))
}

func (c *Conn) updateWindowLocked(op pdu.Opcode, exp, max uint32) {
	if int32(max-exp) < -1 {
		c.violation("%v carries MaxCmdSN %d < ExpCmdSN-1 (%d)", op, max, exp)
		return
	}
	q := c.seq
	q.mu.Lock()
	defer q.mu.Unlock()
	changed := false
	if snAfter(exp, q.expCmdSN) {
		q.expCmdSN = exp
		changed = true
	}
	if snAfter(max, q.maxCmdSN) {
		q.maxCmdSN = max
		changed = true
	}
	if changed {
		close(q.window)
		q.window = make(chan struct{})
	}
}

// answerPing answers a target NOP-In ping.
func (c *Conn) answerPing(in *pdu.PDU) {
	defer c.bg.Done()
	ctx, cancel := c.opCtx(context.Background())
	defer cancel()
	data := in.Data
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if max := c.settings.MaxXmitDataSegmentLength; len(data) > max {
		data = data[:max]
	}
	m := pdu.NOPOut{Immediate: true, LUN: in.LUN(), ITT: pdu.ReservedTag, TTT: u32(in, 20),
		CmdSN: c.CmdSN(), ExpStatSN: c.ackLocked(), Data: data}
	c.mu.Unlock()
	var p pdu.PDU
	m.Encode(&p)
	if c.writeLocked(ctx, &p) == nil {
		c.pings.Add(1)
	}
}

// newTask registers a task under a fresh ITT.
func (c *Conn) newTask(kind taskKind, lun uint64) (uint32, *task, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.full {
		return 0, nil, ErrNotLoggedIn
	}
	if err := c.Err(); err != nil {
		return 0, nil, err
	}
	t := &task{kind: kind, q: newQueue(), lun: lun}
	itt := c.allocITTLocked()
	c.tasks[itt] = t
	return itt, t, nil
}

// endTask unregisters a task. One that did not complete is kept as
// abandoned until the target's last PDU for it arrives, so that PDU does
// not surface in ReadPDU.
func (c *Conn) endTask(itt uint32, t *task, completed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.held {
		t.held = false
		c.holds--
	}
	if completed || c.Err() != nil {
		delete(c.tasks, itt)
		return
	}
	t.q.mu.Lock()
	ended := t.q.err != nil
	for _, p := range t.q.items {
		ended = ended || endsTask(p)
	}
	t.q.items = nil
	t.q.mu.Unlock()
	if ended {
		delete(c.tasks, itt)
		return
	}
	t.abandoned = true
}

// issue writes the PDU built by build, assigning it a CmdSN (advanced
// unless immediate) in send order and, for non-immediate PDUs, waiting for
// the command window first. It returns the CmdSN used.
func (c *Conn) issue(ctx context.Context, immediate bool, build func(p *pdu.PDU, cmdSN, expStatSN uint32)) (uint32, error) {
	for {
		c.wmu.Lock()
		c.mu.Lock()
		if err := c.Err(); err != nil {
			c.mu.Unlock()
			c.wmu.Unlock()
			return 0, err
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			c.wmu.Unlock()
			return 0, err
		}
		q := c.seq
		q.mu.Lock()
		if immediate || !snAfter(q.cmdSN, q.maxCmdSN) {
			sn := q.cmdSN
			if !immediate {
				q.cmdSN++
			}
			q.mu.Unlock()
			exp := c.ackLocked()
			c.mu.Unlock()
			var p pdu.PDU
			build(&p, sn, exp)
			err := c.writeLocked(ctx, &p)
			c.wmu.Unlock()
			return sn, err
		}
		ch := q.window
		q.mu.Unlock()
		c.mu.Unlock()
		c.wmu.Unlock()
		select {
		case <-ch:
		case <-c.done:
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the command window: %w", ctx.Err())
		}
	}
}

// send writes a PDU that carries no CmdSN (Data-Out), filling ExpStatSN.
func (c *Conn) send(ctx context.Context, build func(p *pdu.PDU, expStatSN uint32)) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	exp := c.ackLocked()
	c.mu.Unlock()
	var p pdu.PDU
	build(&p, exp)
	return c.writeLocked(ctx, &p)
}

// await returns the next PDU for task t, turning a Reject into a
// *RejectError.
func await(ctx context.Context, t *task) (*pdu.PDU, error) {
	p, err := t.q.pop(ctx)
	if err != nil {
		return nil, err
	}
	if p.Opcode() == pdu.OpReject {
		var rj pdu.Reject
		if err := rj.Decode(p); err != nil {
			return nil, protoErr("%v", err)
		}
		e := &RejectError{Reason: rj.Reason}
		copy(e.Header[:], rj.Header)
		return nil, e
	}
	return p, nil
}
