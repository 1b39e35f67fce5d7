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
	order    []uint64       // every seq appended, ascending
	pos      int            // order[:pos] were handed out (leased, acked, ...)
	released []uint64       // released seqs (all < order[pos]), ascending
	live     map[uint64]int // LeaseFrom cursor per after value
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
	return &memQueue{wake: make(chan struct{}), recs: map[uint64]*msg.Record{}, leased: map[uint64]bool{}, dead: map[uint64]string{}, live: map[uint64]int{}}
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
	q.order = append(q.order, r.Seq)
	q.signal()
	return r.Seq
}

// AppendBurst stores n records for device at once (one wake-up for all of
// them, as a store batch commit gives) and returns their seqs and payloads.
func (q *memQueue) AppendBurst(device string, n int) ([]uint64, map[uint64]string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	seqs, payloads := make([]uint64, n), map[uint64]string{}
	for i := range n {
		q.next++
		p := fmt.Sprintf(`{"burst":%d}`, q.next)
		r := &msg.Record{Seq: q.next, ID: fmt.Sprintf("mid-%d", q.next), Device: device, Priority: msg.Normal,
			Payload: []byte(p), Enqueued: time.Now()}
		q.recs[r.Seq] = r
		q.order = append(q.order, r.Seq)
		seqs[i], payloads[r.Seq] = r.Seq, p
	}
	q.signal()
	return seqs, payloads
}

func (q *memQueue) Lease(ctx context.Context, max int) ([]*msg.Record, error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, errQueueClosed
		}
		var out []*msg.Record
		for len(out) < max && len(q.released) > 0 {
			seq := q.released[0]
			q.released = q.released[1:]
			out = append(out, q.recs[seq])
			q.leased[seq] = true
		}
		for len(out) < max && q.pos < len(q.order) {
			seq := q.order[q.pos]
			q.pos++
			if r, ok := q.recs[seq]; ok && !q.leased[seq] {
				out = append(out, r)
				q.leased[seq] = true
			}
		}
		if len(out) > 0 {
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

// LeaseFrom leases like Lease, only records with Seq >= from.
func (q *memQueue) LeaseFrom(ctx context.Context, from uint64, max int) ([]*msg.Record, error) {
	after := from - 1
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, errQueueClosed
		}
		var out []*msg.Record
		for _, seq := range q.released {
			if len(out) == max {
				break
			}
			if seq > after {
				out = append(out, q.recs[seq])
			}
		}
		for _, r := range out {
			q.leased[r.Seq] = true
			i, _ := slices.BinarySearch(q.released, r.Seq)
			q.released = slices.Delete(q.released, i, i+1)
		}
		i, ok := q.live[after]
		if !ok {
			i, _ = slices.BinarySearch(q.order, after+1)
		}
		for ; len(out) < max && i < len(q.order); i++ {
			seq := q.order[i]
			if r, ok := q.recs[seq]; ok && !q.leased[seq] && i >= q.pos {
				out = append(out, r)
				q.leased[seq] = true
			}
		}
		q.live[after] = i
		if len(out) > 0 {
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

// NextSeq is the seq the next append gets.
func (q *memQueue) NextSeq() uint64 { return q.lastSeq() + 1 }

// lastSeq is the last seq appended.
func (q *memQueue) lastSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next
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
		if q.pos < len(q.order) && s >= q.order[q.pos] {
			continue // leased by LeaseFrom ahead of the cursor: Lease finds it there
		}
		i, _ := slices.BinarySearch(q.released, s)
		q.released = slices.Insert(q.released, i, s)
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
// Depth is the queue's depth, as *store.Queue reports it.
func (q *memQueue) Depth() int { return q.Len() }

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
