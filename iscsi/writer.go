package iscsi

import (
	"net"
	"sync"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// outPDU is one PDU waiting in a connection's outbound queue. Its header
// is a copy; its Data is referenced, kept alive by owner (a task's buffer
// reference, dropped once written) or by a sender waiting on done.
type outPDU struct {
	p     pdu.PDU
	f     pdu.Frame
	kind  statKind
	owner *task      // released after the write, or nil
	done  chan error // receives the write's outcome, or nil
}

// outQueue orders everything the full feature phase sends. One goroutine
// at a time writes (busy): a sender that finds the connection idle writes
// its own PDUs at once, in its own goroutine, so a lone command costs no
// hand-off; PDUs sent while a write is in progress are queued and the
// connection's writer goroutine sends all of them with one vectored write.
// StatSN, ExpCmdSN and MaxCmdSN are filled in at write time, in queue order.
type outQueue struct {
	mu      sync.Mutex
	started bool     // the writer goroutine runs (full feature phase)
	busy    bool     // a goroutine is writing to the socket
	handed  bool     // ... and it is the writer goroutine
	closed  bool     // the connection failed or ended; nothing more is written
	pending []outPDU // queued while busy
	spare   []outPDU // the writer's other batch buffer
	wake    chan struct{}
}

// queue sends PDUs in order. With wait it returns once they are written
// (or failed); without, it returns at once and the PDUs' owners are
// released when written. Data of PDUs sent without wait must be owned by
// their owner task. With drain, a caller that finds the connection idle
// and writes its own PDUs goes on to write whatever queued up meanwhile
// (task workers do; the reader goroutine does not, so that it never sits
// in a long write while the initiator waits for it to read).
func (c *conn) queue(wait, drain bool, es ...outPDU) error {
	q := &c.outq
	var done chan error
	if wait {
		done = make(chan error, 1)
		es[len(es)-1].done = done
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		complete(es, net.ErrClosed)
		return net.ErrClosed
	}
	if !q.busy && len(q.pending) == 0 {
		// Idle: write in this goroutine.
		q.busy = true
		q.mu.Unlock()
		err := c.writeBatch(es)
		q.mu.Lock()
		for drain && !q.closed && len(q.pending) > 0 {
			batch := q.pending
			q.pending = q.spare[:0]
			q.mu.Unlock()
			c.writeBatch(batch)
			q.mu.Lock()
			q.spare = batch[:0]
		}
		c.handOffLocked()
		q.mu.Unlock()
		if wait {
			return <-done
		}
		return err
	}
	q.pending = append(q.pending, es...)
	if !q.busy {
		q.busy = true
		q.handed = true
		c.wakeWriter()
	}
	q.mu.Unlock()
	if wait {
		return <-done
	}
	return nil
}

// handOffLocked ends a write: PDUs queued meanwhile go to the writer
// goroutine (or are failed when the connection is closed). Called with
// outq.mu held by the goroutine that was writing.
func (c *conn) handOffLocked() {
	q := &c.outq
	switch {
	case len(q.pending) == 0:
		q.busy = false
	case q.closed:
		es := q.pending
		q.pending = nil
		q.busy = false
		complete(es, net.ErrClosed)
	default:
		q.handed = true
		c.wakeWriter()
	}
}

func (c *conn) wakeWriter() {
	select {
	case c.outq.wake <- struct{}{}:
	default:
	}
}

// writer is the connection's writer goroutine: it sends whatever queued
// up while another goroutine was writing, a batch per vectored write.
func (c *conn) writer() {
	defer c.containPanic("writer")
	q := &c.outq
	for {
		select {
		case <-q.wake:
		case <-c.done:
			q.mu.Lock()
			q.closed = true
			var es []outPDU
			if !q.busy || q.handed {
				es, q.pending = q.pending, nil
				q.busy, q.handed = false, false
			}
			q.mu.Unlock()
			complete(es, net.ErrClosed)
			return
		}
		q.mu.Lock()
		for q.handed && len(q.pending) > 0 {
			batch := q.pending
			q.pending = q.spare[:0]
			q.mu.Unlock()
			c.writeBatch(batch)
			q.mu.Lock()
			q.spare = batch[:0]
			if q.closed {
				es := q.pending
				q.pending = nil
				q.mu.Unlock()
				complete(es, net.ErrClosed)
				q.mu.Lock()
			}
		}
		if q.handed {
			q.busy, q.handed = false, false
		}
		q.mu.Unlock()
	}
}

// writeBatch writes es with vectored writes, filling in the sequence
// numbers, then releases their owners and reports to waiting senders.
// Only the goroutine that set outq.busy calls it.
func (c *conn) writeBatch(es []outPDU) error {
	c.wmu.Lock()
	var exp, max uint32
	sess := c.sess()
	if sess != nil {
		exp, max = sess.window()
	}
	vec := c.iov[:0]
	var err, kept error
	for i := range es {
		e := &es[i]
		c.stampStatSN(&e.p, e.kind)
		if sess != nil {
			e.p.SetCommandWindow(exp, max)
		}
		if e.kind == statAdvance && c.keep.on {
			if rerr := c.retain(e); rerr != nil && kept == nil {
				kept = rerr
			}
		}
		if vec, err = c.w.AppendBuffers(vec, &e.p, &e.f); err != nil {
			break
		}
	}
	if err == nil {
		c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
		c.iov = vec
		c.sent(len(es), vec)
		err = c.w.WriteBuffers(&c.iov)
	}
	clear(vec)
	c.iov = vec[:0]
	c.wmu.Unlock()
	if err == nil && kept != nil {
		// The initiator stopped acknowledging: what the connection
		// keeps for SNACK would grow without bound (see retention).
		c.log.Warn("initiator does not acknowledge status; dropping the connection", "err", kept)
		err = kept
	}
	if err != nil {
		c.outq.mu.Lock()
		c.outq.closed = true
		c.outq.mu.Unlock()
		c.close(err)
	}
	complete(es, err)
	return err
}

// complete reports the outcome of queued PDUs: owners are released and
// waiting senders told.
func complete(es []outPDU, err error) {
	for i := range es {
		e := &es[i]
		if e.owner != nil {
			e.owner.release()
		}
		if e.done != nil {
			e.done <- err
		}
		*e = outPDU{}
	}
}
