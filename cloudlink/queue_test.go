package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// memQueue is an in-memory stand-in for *store.Queue with the same lease
// contract: oldest first, leased records invisible until acked or released.
type memQueue struct {
	mu       sync.Mutex
	wake     chan struct{} // closed and replaced on every change
	recs     map[uint64]*msg.Record
	ready    []uint64 // unleased, sorted
	leased   map[uint64]bool
	dead     map[uint64]string
	next     uint64
	acks     int
	releases int
	closed   bool
	failAck  error
}

var errQueueClosed = errors.New("memqueue: closed")

func newMemQueue() *memQueue {
	return &memQueue{wake: make(chan struct{}), recs: map[uint64]*msg.Record{}, leased: map[uint64]bool{}, dead: map[uint64]string{}}
}

func (q *memQueue) signal() {
	close(q.wake)
	q.wake = make(chan struct{})
}

// Append stores a record for device and returns its seq.
func (q *memQueue) Append(device string, payload []byte, props ...msg.Prop) uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next++
	r := &msg.Record{Seq: q.next, ID: fmt.Sprintf("mid-%d", q.next), Device: device, Priority: msg.Normal,
		Props: slices.Clone(msg.Props(props)), Payload: payload, Enqueued: time.Now()}
	q.recs[r.Seq] = r
	q.ready = append(q.ready, r.Seq)
	q.signal()
	return r.Seq
}

func (q *memQueue) Lease(ctx context.Context, max int) ([]*msg.Record, error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, errQueueClosed
		}
		if len(q.ready) > 0 {
			n := min(max, len(q.ready))
			out := make([]*msg.Record, n)
			for i, seq := range q.ready[:n] {
				out[i] = q.recs[seq]
				q.leased[seq] = true
			}
			q.ready = slices.Delete(q.ready, 0, n)
			q.mu.Unlock()
			return out, nil
		}
		w := q.wake
		q.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (q *memQueue) Ack(seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failAck != nil {
		return q.failAck
	}
	for _, s := range seqs {
		if !q.leased[s] {
			return fmt.Errorf("memqueue: ack of %d, which is not leased", s)
		}
		delete(q.leased, s)
		delete(q.recs, s)
		q.acks++
	}
	q.signal()
	return nil
}

func (q *memQueue) Release(seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range seqs {
		if !q.leased[s] {
			return fmt.Errorf("memqueue: release of %d, which is not leased", s)
		}
		delete(q.leased, s)
		i, _ := slices.BinarySearch(q.ready, s)
		q.ready = slices.Insert(q.ready, i, s)
		q.releases++
	}
	q.signal()
	return nil
}

func (q *memQueue) Reject(seq uint64, reason string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.leased[seq] {
		return fmt.Errorf("memqueue: reject of %d, which is not leased", seq)
	}
	delete(q.leased, seq)
	delete(q.recs, seq)
	q.dead[seq] = reason
	q.signal()
	return nil
}

// Len is the number of records not yet acked or rejected.
func (q *memQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.recs)
}

// waitEmpty waits until every record is acked or rejected.
func (q *memQueue) waitEmpty(ctx context.Context) error {
	for {
		q.mu.Lock()
		n, w := len(q.recs), q.wake
		q.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-w:
		case <-ctx.Done():
			return fmt.Errorf("%d records still queued: %w", n, ctx.Err())
		}
	}
}
