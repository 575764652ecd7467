package initiator

import (
	"context"
	"sync"

	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// queue is an unbounded FIFO of PDUs with one or more consumers. The reader
// goroutine never blocks on it, so a slow caller cannot stall the
// connection (and with it every other task).
type queue struct {
	mu     sync.Mutex
	items  []*pdu.PDU
	err    error
	ready  chan struct{} // capacity 1: "items may be non-empty"
	closed chan struct{} // closed by close
}

func newQueue() *queue {
	return &queue{ready: make(chan struct{}, 1), closed: make(chan struct{})}
}

// push appends p; it reports false if the queue is closed.
func (q *queue) push(p *pdu.PDU) bool {
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, p)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// close ends the queue: pop returns the queued PDUs, then err. Only the
// first close counts.
func (q *queue) close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	q.err = err
	close(q.closed)
}

// pop returns the next PDU, waiting for one until ctx is done or the queue
// is closed.
func (q *queue) pop(ctx context.Context) (*pdu.PDU, error) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			p := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			more := len(q.items) > 0
			q.mu.Unlock()
			if more {
				select {
				case q.ready <- struct{}{}:
				default:
				}
			}
			return p, nil
		}
		if q.err != nil {
			err := q.err
			q.mu.Unlock()
			return nil, err
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-q.closed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
