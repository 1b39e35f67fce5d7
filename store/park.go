package store

import (
	"errors"
	"fmt"
	"slices"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// Parking is for a forwarder that cannot send some records now (their
// device's upstream connection is down) and must not let them hold up the
// others: Park takes leased records out of the lease order without keeping
// them leased. A parked record is not handed out by Lease or LeaseFrom, but
// is otherwise an ordinary queued record: it counts in the budget, it is
// evicted oldest-first under drop-oldest and dropped by the TTL, and it
// survives a restart (where it is simply queued again). LeaseParked leases
// parked records back by sequence number, and Release puts them back in
// the lease order.
//
// Parked records are kept per class in seq order, with taken entries
// marked rather than removed (a forwarder takes a few at a time from
// anywhere in the list) and compacted once they are half of it.

// parkedRef is a parked record; taken marks one leased back or dropped.
type parkedRef struct {
	ref
	taken bool
}

// Park moves leased records to the parked state. Seqs not leased are
// reported with ErrNotLeased (the others are still parked).
func (q *Queue) Park(seqs ...uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var missing []uint64
	for _, s := range seqs {
		r, ok := q.leased[s]
		if !ok {
			missing = append(missing, s)
			continue
		}
		delete(q.leased, s)
		q.cls[r.class].insertParked(r)
	}
	if len(missing) > 0 {
		return fmt.Errorf("store: park %v: %w", missing, ErrNotLeased)
	}
	return nil
}

// LeaseParked leases the parked records seqs, in the order given, and
// returns those still there: a parked record evicted or expired meanwhile
// is gone, and a seq that is not parked is skipped.
func (q *Queue) LeaseParked(seqs ...uint64) ([]*msg.Record, error) {
	if q.readOnly {
		return nil, ErrReadOnly
	}
	q.mu.Lock()
	if q.closed.Load() {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	now := q.opt.Now()
	out := make([]*msg.Record, 0, len(seqs))
	var drops []ref
	err := q.view(func(txn *badger.Txn) error {
		for _, s := range seqs {
			r, ok := q.takeParked(s)
			if !ok {
				continue
			}
			item, err := txn.Get(layout.OutboxKey(r.class, r.seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			var rec *msg.Record
			if err == nil {
				rec, err = itemRecord(item, r.seq)
			}
			if err != nil {
				q.cls[r.class].insertParked(r) // still parked
				return err
			}
			if q.opt.TTL > 0 && now.Sub(rec.Enqueued) > q.opt.TTL {
				q.pendingDel[r.seq] = r.class // expired: never leased
				drops = append(drops, r)
				continue
			}
			q.leased[r.seq] = r
			out = append(out, rec)
		}
		return nil
	})
	q.mu.Unlock()
	if len(drops) > 0 {
		q.enqueue(&op{kind: opDrop, refs: drops, n: int64(len(drops)), est: int64(len(drops)) * 26})
	}
	if err != nil {
		return out, fmt.Errorf("store: lease parked: %w", err)
	}
	return out, nil
}

// takeParked removes seq from the parked records (q.mu held).
func (q *Queue) takeParked(seq uint64) (ref, bool) {
	for c := range q.cls {
		cs := &q.cls[c]
		if i, ok := cs.findParked(seq); ok && !cs.parked[i].taken {
			cs.parked[i].taken = true
			cs.parkedTaken++
			r := cs.parked[i].ref
			cs.compactParked()
			return r, true
		}
	}
	return ref{}, false
}

// Parked is the number of parked records.
func (q *Queue) Parked() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.parkedLocked()
}

func (q *Queue) parkedLocked() int {
	n := 0
	for c := range q.cls {
		n += len(q.cls[c].parked) - q.cls[c].parkedTaken
	}
	return n
}

// isParked reports whether seq is parked (and not taken).
func (cs *classState) isParked(seq uint64) bool {
	if len(cs.parked) == 0 {
		return false
	}
	i, ok := cs.findParked(seq)
	return ok && !cs.parked[i].taken
}

func (cs *classState) findParked(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(cs.parked, seq, func(a parkedRef, s uint64) int { return cmpUint(a.seq, s) })
}

func (cs *classState) insertParked(r ref) {
	if n := len(cs.parked); n == 0 || cs.parked[n-1].seq < r.seq {
		cs.parked = append(cs.parked, parkedRef{ref: r}) // the usual case: parked in order
		return
	}
	i, found := cs.findParked(r.seq)
	if found {
		if cs.parked[i].taken {
			cs.parked[i].taken = false
			cs.parkedTaken--
		}
		return
	}
	cs.parked = slices.Insert(cs.parked, i, parkedRef{ref: r})
}

// compactParked drops taken entries once they are half the list (and
// always from its front, where eviction and the TTL take them).
func (cs *classState) compactParked() {
	for len(cs.parked) > 0 && cs.parked[0].taken {
		cs.parked = cs.parked[1:]
		cs.parkedTaken--
	}
	if cs.parkedTaken > 0 && cs.parkedTaken*2 >= len(cs.parked) {
		cs.parked = slices.DeleteFunc(cs.parked, func(p parkedRef) bool { return p.taken })
		cs.parkedTaken = 0
	}
	if len(cs.parked) == 0 {
		cs.parked = nil
	}
}

// oldestParked is the first parked record not taken, if any.
func (cs *classState) oldestParked() (ref, bool) {
	for _, p := range cs.parked {
		if !p.taken {
			return p.ref, true
		}
	}
	return ref{}, false
}
