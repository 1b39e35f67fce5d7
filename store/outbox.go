package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// classState is the in-memory lease state of one priority class, guarded by
// q.mu. Every record of the class with seq < cursor is leased, released,
// parked, awaiting deletion, or gone; so Lease never iterates over deleted
// keys. (Records at or past the cursor may be leased or parked too: LeaseFrom
// leases ahead of it; the scans skip those.)
type classState struct {
	cursor   uint64
	released []ref // sorted by seq; handed out before the cursor
	// parked is sorted by seq (see Park); parkedTaken counts its entries
	// marked taken.
	parked      []parkedRef
	parkedTaken int
}

func (cs *classState) insertReleased(r ref) {
	if i, found := cs.findReleased(r.seq); !found {
		cs.released = slices.Insert(cs.released, i, r)
	}
}

func (cs *classState) findReleased(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(cs.released, seq, func(a ref, s uint64) int { return cmpUint(a.seq, s) })
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// signalLocked wakes Lease callers waiting for records. q.mu must be held.
func (q *Queue) signalLocked() {
	close(q.avail)
	q.avail = make(chan struct{})
}

// Append durably stores recs, all or nothing, and returns after they are
// synced: nil is the acknowledgement to the producer. It assigns Seq, ID
// (when empty: <instance>-<seq>, unique to this store) and Enqueued in
// place; recs must not be touched until Append returns. Concurrent callers
// share one transaction and one sync (group commit).
//
// Errors: ErrFull (not stored; retry later), ErrTooLarge and invalid records
// (final), ErrClosed (final), ctx.Err() (ctx was done before the batch
// synced: the records may or may not be stored, and the writer may still be
// assigning their fields; do not reuse them), or a wrapped Badger error.
func (q *Queue) Append(ctx context.Context, recs ...*msg.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	q.Submit(recs, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Submit is Append without waiting: done is called exactly once, after the
// records are synced (nil) or have failed (see Append for the errors). done
// calls happen in submission order (for all producers together), on the
// writer goroutine, so done must not block; when Submit fails at once
// (closed queue, invalid records) done runs before Submit returns. recs are
// owned by the store until done is called.
func (q *Queue) Submit(recs []*msg.Record, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if len(recs) == 0 {
		done(nil)
		return
	}
	for _, r := range recs {
		if r == nil || r.Priority >= msg.NumPriorities {
			done(fmt.Errorf("store: append: invalid record (nil or priority out of range)"))
			return
		}
	}
	est, n := q.estimate(recs)
	if est >= q.db.MaxBatchSize()/2 || n >= q.db.MaxBatchCount()/2 {
		done(fmt.Errorf("%w: %d records, ~%d bytes (limit ~%d)", ErrTooLarge, len(recs), est, q.db.MaxBatchSize()/2))
		return
	}
	if err := q.enqueue(&op{kind: opAppend, recs: recs, done: done, est: est, n: n}); err != nil {
		done(err)
	}
}

// Lease returns up to n (at least 1, at most 4096) of the oldest records not leased:
// every High record before any Normal, Normal before Low, FIFO by Seq inside
// a class. It blocks until at least one is available, ctx is done
// (ctx.Err()) or the queue is closed (ErrClosed). Expired records met on the
// way are removed (counted in Expired), never returned. The records are the
// caller's. A leased record is not handed out again until Released; leases
// live in memory, so after a restart everything not acked is leased again.
func (q *Queue) Lease(ctx context.Context, n int) ([]*msg.Record, error) {
	return q.lease(ctx, n, 0, false)
}

// LeaseFrom is Lease restricted to records with Seq >= from: the oldest of
// those not leased, High before Normal before Low. It is for live-first
// replay: at link-up the forwarder takes mark := NextSeq() and prefers
// LeaseFrom(ctx, mark, n) (what producers send now) over Lease (the backlog,
// oldest first, which skips what LeaseFrom has leased). It keeps its own
// cursor per class, so it costs no more than Lease; changing from starts
// that cursor again at from.
func (q *Queue) LeaseFrom(ctx context.Context, from uint64, n int) ([]*msg.Record, error) {
	return q.lease(ctx, n, from, true)
}

// NextSeq is the sequence number the next appended record will get.
func (q *Queue) NextSeq() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pub.NextSeq
}

func (q *Queue) lease(ctx context.Context, n int, from uint64, live bool) ([]*msg.Record, error) {
	if q.readOnly {
		return nil, ErrReadOnly
	}
	n = min(max(n, 1), 4096)
	for {
		q.mu.Lock()
		if q.closed.Load() {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		if live && q.liveFrom != from {
			q.liveFrom = from
			for c := range q.liveCursor {
				q.liveCursor[c] = from
			}
		}
		recs, drops, err := q.leaseLocked(n, q.opt.Now(), live)
		avail := q.avail
		q.mu.Unlock()
		if len(drops) > 0 {
			q.enqueue(&op{kind: opDrop, refs: drops, n: int64(len(drops)), est: int64(len(drops)) * 26})
		}
		if err != nil || len(recs) > 0 {
			return recs, err
		}
		if len(drops) > 0 {
			continue // stopped at the drop limit: there may be more
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-q.closing:
			return nil, ErrClosed
		case <-avail:
		}
	}
}

// leaseLocked collects up to max records; q.mu must be held. Records that
// turn out expired are returned as drops (already in pendingDel).
//
// Per class it first takes released records below the scan's start (in
// order: they are older than anything the scan finds), then scans from the
// cursor, skipping leased records and records awaiting deletion and taking
// released ones it meets (LeaseFrom can release records beyond the
// backlog's cursor). With live, the scan starts at the LeaseFrom cursor and
// only released records >= liveFrom are taken.
func (q *Queue) leaseLocked(max int, now time.Time, live bool) (out []*msg.Record, drops []ref, err error) {
	expired := func(r *msg.Record) bool { return q.opt.TTL > 0 && now.Sub(r.Enqueued) > q.opt.TTL }
	dropLimit := int(q.db.MaxBatchCount() / 4)
	more := func() bool { return len(out) < max && len(drops) < dropLimit }
	take := func(c msg.Priority, rec *msg.Record, r ref) {
		if expired(rec) {
			q.pendingDel[r.seq] = c
			drops = append(drops, r)
			return
		}
		q.leased[r.seq] = r
		out = append(out, rec)
	}
	defer func() {
		var n int64
		for _, r := range out {
			n += int64(r.Size())
		}
		q.touched(n)
	}()
	err = q.view(func(txn *badger.Txn) error {
		for c := msg.Priority(0); c < msg.NumPriorities && more(); c++ {
			cs := &q.cls[c]
			cursor := &cs.cursor
			lo := uint64(0)
			if live {
				cursor, lo = &q.liveCursor[c], q.liveFrom
			}
			// Released records in [lo, *cursor), in order.
			i := sort.Search(len(cs.released), func(i int) bool { return cs.released[i].seq >= lo })
			for i < len(cs.released) && cs.released[i].seq < *cursor && more() {
				r := cs.released[i]
				cs.released = slices.Delete(cs.released, i, i+1)
				item, err := txn.Get(layout.OutboxKey(c, r.seq))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err == nil {
					var rec *msg.Record
					if rec, err = itemRecord(item, r.seq); err == nil {
						take(c, rec, r)
						continue
					}
				}
				cs.insertReleased(r)
				return err
			}
			if !more() {
				break
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: layout.ClassPrefix(c)})
			for it.Seek(layout.OutboxKey(c, *cursor)); it.Valid() && more(); it.Next() {
				_, seq, ok := layout.ParseOutboxKey(it.Item().Key())
				if !ok {
					continue
				}
				if q.busyLocked(c, seq) { // parked ones are ahead of the cursor: LeaseFrom leased them
					*cursor = seq + 1
					continue
				}
				rec, err := itemRecord(it.Item(), seq)
				if err != nil {
					it.Close()
					return err
				}
				*cursor = seq + 1
				if j, found := cs.findReleased(seq); found {
					cs.released = slices.Delete(cs.released, j, j+1)
				}
				take(c, rec, ref{seq, c, rec.Size()})
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("store: lease: %w", err)
	}
	return out, drops, err
}

// busyLocked reports whether the record seq of class c is leased, awaiting
// its deletion or parked: the scans of Lease, eviction and the TTL sweep
// pass over such a record (eviction and the sweep take parked ones from the
// parked list instead). q.mu must be held.
func (q *Queue) busyLocked(c msg.Priority, seq uint64) bool {
	if _, ok := q.leased[seq]; ok {
		return true
	}
	if _, ok := q.pendingDel[seq]; ok {
		return true
	}
	return q.cls[c].isParked(seq)
}

func itemRecord(item *badger.Item, seq uint64) (*msg.Record, error) {
	var rec *msg.Record
	err := item.Value(func(v []byte) error {
		var err error
		rec, err = layout.DecodeRecord(v, seq)
		return err
	})
	return rec, err
}

// maxPendingDel bounds the acked records waiting for their deletion to
// commit; beyond it Ack waits for the writer.
const maxPendingDel = 16384

// Ack deletes leased records for good (upstream PUBACK). It returns once the
// deletion is queued (waiting only when many deletions are already queued); it becomes durable with the next group commit, and a
// crash before that only means the records are delivered again. Seqs that
// are not leased are skipped and reported with ErrNotLeased (the others are
// still acked).
func (q *Queue) Ack(seqs ...uint64) error {
	refs, missing := q.unlease(seqs, true)
	if len(refs) > 0 {
		if err := q.enqueue(&op{kind: opAck, refs: refs, n: int64(len(refs)), est: int64(len(refs)) * 26}); err != nil {
			return err
		}
		q.mu.Lock()
		for len(q.pendingDel) > maxPendingDel && !q.closed.Load() && q.failed == nil {
			// Backpressure: the writer is behind (a Badger flush or
			// compaction stall); wait for it instead of piling up.
			progress := q.progress
			q.mu.Unlock()
			select {
			case <-progress:
			case <-q.closing:
			}
			q.mu.Lock()
		}
		failed := q.failed
		q.mu.Unlock()
		if failed != nil {
			return fmt.Errorf("store: ack: %w", failed)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("store: ack %v: %w", missing, ErrNotLeased)
	}
	return nil
}

// unlease removes seqs from the leased set; with forDelete they are parked
// in pendingDel until their deletion commits.
func (q *Queue) unlease(seqs []uint64, forDelete bool) (refs []ref, missing []uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range seqs {
		r, ok := q.leased[s]
		if !ok {
			missing = append(missing, s)
			continue
		}
		delete(q.leased, s)
		if forDelete {
			q.pendingDel[s] = r.class
			q.pendingDelPeak = max(q.pendingDelPeak, len(q.pendingDel))
		}
		refs = append(refs, r)
	}
	return refs, missing
}

// Release puts leased (or parked) records back at the front of the queue,
// in their original place, to be leased again. Seqs neither leased nor
// parked are reported with ErrNotLeased (the others are still released).
func (q *Queue) Release(seqs ...uint64) error {
	q.mu.Lock()
	var missing []uint64
	for _, s := range seqs {
		r, ok := q.leased[s]
		if ok {
			delete(q.leased, s)
		} else if r, ok = q.takeParked(s); !ok {
			missing = append(missing, s)
			continue
		}
		q.cls[r.class].insertReleased(r)
	}
	if len(missing) < len(seqs) {
		q.signalLocked()
	}
	q.mu.Unlock()
	if len(missing) > 0 {
		return fmt.Errorf("store: release %v: %w", missing, ErrNotLeased)
	}
	return nil
}

// Reject moves a leased record to the dead letters with reason, durably
// (it waits for the sync). The record is never leased again; `outpost
// queue dead` and Dead list it. On failure the record is released.
func (q *Queue) Reject(seq uint64, reason string) error {
	refs, missing := q.unlease([]uint64{seq}, true)
	if len(missing) > 0 {
		return fmt.Errorf("store: reject %d: %w", seq, ErrNotLeased)
	}
	ch := make(chan error, 1)
	o := &op{kind: opReject, refs: refs, reason: reason, n: 3, est: int64(refs[0].size) + 256,
		done: func(err error) { ch <- err }}
	err := q.enqueue(o)
	if err == nil {
		err = <-ch
	}
	if err != nil {
		q.mu.Lock()
		delete(q.pendingDel, seq)
		q.cls[refs[0].class].insertReleased(refs[0])
		q.signalLocked()
		q.mu.Unlock()
		return fmt.Errorf("store: reject %d: %w", seq, err)
	}
	return nil
}
