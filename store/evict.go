package store

import (
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// evict deletes, in b, the oldest records that are not leased (released,
// then parked, then from the cursor), Low class first, until need bytes are
// freed. Records appended earlier in the same
// batch are candidates too (the newest of their class). Leased records are
// never evicted: they are in flight and will be acked or released. If need
// cannot be freed nothing is evicted and evict returns false (the caller
// fails the append with ErrFull).
func (q *Queue) evict(b *batch, need int64) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var victims []ref
	var got int64
	var nReleased, parkedCut [msg.NumPriorities]int
	cursors := [msg.NumPriorities]uint64{}
	for c := range q.cls {
		cursors[c] = q.cls[c].cursor
	}
	fits := func() bool { return q.room(b, int64(len(victims))+1, int64(len(victims)+1)*32) }
	for c := msg.Low; got < need; c-- {
		cs := &q.cls[c]
		for _, r := range cs.released {
			if got >= need || !fits() {
				break
			}
			victims = append(victims, r)
			nReleased[c]++
			got += int64(r.size)
		}
		for i := 0; i < len(cs.parked) && got < need && fits(); i++ {
			parkedCut[c] = i + 1
			if p := cs.parked[i]; !p.taken {
				victims = append(victims, p.ref)
				got += int64(p.size)
			}
		}
		if got < need {
			if err := q.evictScan(b, c, need-got, fits, &cursors[c], &victims, &got); err != nil {
				return false, err
			}
		}
		if c == msg.High {
			break
		}
	}
	if got < need {
		return false, nil
	}
	for c := range q.cls {
		cs := &q.cls[c]
		cs.released = cs.released[nReleased[c]:]
		for _, p := range cs.parked[:parkedCut[c]] {
			if p.taken {
				cs.parkedTaken--
			}
		}
		cs.parked = cs.parked[parkedCut[c]:]
		cs.compactParked()
		cs.cursor = cursors[c]
	}
	for _, r := range victims {
		if err := b.del(layout.OutboxKey(r.class, r.seq)); err != nil {
			return false, err
		}
		q.m.uncount(r)
		q.deleted(int64(r.size))
		q.m.Dropped++
		q.m.Gap.add(r.seq, true)
	}
	b.evicted = append(b.evicted, victims...)
	return true, nil
}

// evictScan collects victims from the cursor of class c (q.mu held),
// advancing *cursor past them. The write transaction's iterator also sees
// records appended earlier in this batch.
func (q *Queue) evictScan(b *batch, c msg.Priority, need int64, fits func() bool, cursor *uint64, victims *[]ref, got *int64) error {
	it := b.txn.NewIterator(badger.IteratorOptions{Prefix: layout.ClassPrefix(c)})
	defer it.Close()
	var freed int64
	for it.Seek(layout.OutboxKey(c, *cursor)); it.Valid() && freed < need && fits(); it.Next() {
		_, seq, ok := layout.ParseOutboxKey(it.Item().Key())
		if !ok {
			continue
		}
		if q.busyLocked(c, seq) { // parked ones are taken from the parked list, if at all
			continue
		}
		var size int
		err := it.Item().Value(func(v []byte) error {
			var err error
			size, _, err = layout.RecordHead(v)
			return err
		})
		if err != nil {
			q.log.Error("store: unreadable record evicted", "seq", seq, "error", err)
		}
		*cursor = seq + 1
		*victims = append(*victims, ref{seq, c, size})
		*got += int64(size)
		freed += int64(size)
	}
	return nil
}

// sweepExpired queues the deletion of expired records that are not leased
// (q.m is not touched: it runs on the writer goroutine but only enqueues).
// Records are in enqueue order inside a class, so each class stops at its
// first live record. It reports whether it stopped at its limit.
func (q *Queue) sweepExpired(now time.Time) bool {
	limit := int(q.db.MaxBatchCount() / 4)
	var drops []ref
	q.mu.Lock()
	_ = q.view(func(txn *badger.Txn) error {
		for c := msg.Priority(0); c < msg.NumPriorities; c++ {
			cs := &q.cls[c]
			for len(cs.released) > 0 && len(drops) < limit {
				r := cs.released[0]
				enq, ok := q.enqueuedAt(txn, r)
				if ok && now.Sub(enq) <= q.opt.TTL {
					break
				}
				cs.released = cs.released[1:]
				if ok {
					q.pendingDel[r.seq] = c
					drops = append(drops, r)
				}
			}
			for len(drops) < limit {
				r, ok := cs.oldestParked()
				if !ok {
					break
				}
				enq, ok := q.enqueuedAt(txn, r)
				if ok && now.Sub(enq) <= q.opt.TTL {
					break
				}
				q.takeParked(r.seq)
				if ok {
					q.pendingDel[r.seq] = c
					drops = append(drops, r)
				}
			}
			if r, ok := cs.oldestParked(); (ok && r.seq < cs.cursor) || len(cs.released) > 0 {
				continue // a live released or parked record is older than anything at the cursor
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: layout.ClassPrefix(c)})
			for it.Seek(layout.OutboxKey(c, cs.cursor)); it.Valid() && len(drops) < limit; it.Next() {
				_, seq, _ := layout.ParseOutboxKey(it.Item().Key())
				if q.busyLocked(c, seq) { // parked ones: the parked list's own sweep handles them
					continue
				}
				var size int
				var enq time.Time
				err := it.Item().Value(func(v []byte) error {
					var err error
					size, enq, err = layout.RecordHead(v)
					return err
				})
				if err != nil || now.Sub(enq) <= q.opt.TTL {
					break
				}
				cs.cursor = seq + 1
				q.pendingDel[seq] = c
				drops = append(drops, ref{seq, c, size})
			}
			it.Close()
		}
		return nil
	})
	q.mu.Unlock()
	if len(drops) > 0 {
		q.enqueue(&op{kind: opDrop, refs: drops, n: int64(len(drops)), est: int64(len(drops)) * 26})
	}
	return len(drops) >= limit
}

func (q *Queue) enqueuedAt(txn *badger.Txn, r ref) (time.Time, bool) {
	item, err := txn.Get(layout.OutboxKey(r.class, r.seq))
	if err != nil {
		return time.Time{}, false
	}
	var enq time.Time
	err = item.Value(func(v []byte) error {
		var err error
		_, enq, err = layout.RecordHead(v)
		return err
	})
	return enq, err == nil
}
