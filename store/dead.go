package store

import (
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// DeadLetter is a record the forwarder rejected as undeliverable.
type DeadLetter struct {
	Record *msg.Record
	Reason string
	At     time.Time
}

func (q *Queue) applyReject(b *batch, o *op) error {
	r := o.refs[0]
	item, err := b.txn.Get(layout.OutboxKey(r.class, r.seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		o.err = fmt.Errorf("store: record %d is gone", r.seq)
		return nil
	}
	if err != nil {
		o.err = err
		return nil
	}
	rec, err := item.ValueCopy(nil)
	if err != nil {
		o.err = err
		return nil
	}
	if err := b.set(layout.DeadKey(r.seq), layout.EncodeDead(o.reason, b.now, rec)); err != nil {
		return err
	}
	if err := b.del(layout.OutboxKey(r.class, r.seq)); err != nil {
		return err
	}
	q.m.uncount(r)
	q.m.Dead++
	q.m.DeadDepth++
	return q.trimDead(b)
}

// trimDead deletes the oldest dead letters beyond MaxDead.
func (q *Queue) trimDead(b *batch) error {
	if q.m.DeadDepth <= uint64(q.opt.MaxDead) {
		return nil
	}
	it := b.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{layout.Dead}})
	defer it.Close()
	for it.Seek(layout.DeadKey(q.m.DeadHead)); it.Valid() && q.m.DeadDepth > uint64(q.opt.MaxDead); it.Next() {
		k := it.Item().KeyCopy(nil)
		if err := b.del(k); err != nil {
			return err
		}
		q.m.DeadHead = layout.DeadSeq(k) + 1
		q.m.DeadDepth--
		q.m.DeadDropped++
	}
	return nil
}

// Dead lists up to max dead letters with Seq > after, oldest first (max <=
// 0: all). Pass the last Seq returned to page on.
func (q *Queue) Dead(after uint64, max int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := q.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{layout.Dead}})
		defer it.Close()
		for it.Seek(layout.DeadKey(after + 1)); it.Valid() && (max <= 0 || len(out) < max); it.Next() {
			seq := layout.DeadSeq(it.Item().Key())
			var dl DeadLetter
			err := it.Item().Value(func(v []byte) error {
				rec, reason, at, err := layout.DecodeDead(v, seq)
				dl = DeadLetter{Record: rec, Reason: reason, At: at}
				return err
			})
			if err != nil {
				return err
			}
			out = append(out, dl)
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("store: dead letters: %w", err)
	}
	return out, nil
}

// Peek returns up to max of the oldest outbox records in lease order (High,
// Normal, Low; FIFO inside a class), leased ones included, without leasing
// them. It works on a read-only store.
func (q *Queue) Peek(max int) ([]*msg.Record, error) {
	q.mu.Lock()
	var from [msg.NumPriorities]uint64
	for c := range from {
		from[c] = q.pub.Classes[c].Head
	}
	q.mu.Unlock()
	var out []*msg.Record
	err := q.view(func(txn *badger.Txn) error {
		for c := msg.Priority(0); c < msg.NumPriorities && len(out) < max; c++ {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: layout.ClassPrefix(c)})
			for it.Seek(layout.OutboxKey(c, from[c])); it.Valid() && len(out) < max; it.Next() {
				_, seq, _ := layout.ParseOutboxKey(it.Item().Key())
				rec, err := itemRecord(it.Item(), seq)
				if err != nil {
					it.Close()
					return err
				}
				out = append(out, rec)
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("store: peek: %w", err)
	}
	return out, nil
}
