package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// DeadLetter is a record the forwarder rejected as undeliverable.
type DeadLetter struct {
	Record *msg.Record
	Reason string
	At     time.Time
}

// dead value: version u8 | at varint ns | reason (uvarint len + bytes) | record encoding
func encodeDead(reason string, at time.Time, rec []byte) []byte {
	b := make([]byte, 0, len(rec)+len(reason)+16)
	b = append(b, 1)
	b = binary.AppendVarint(b, at.UnixNano())
	b = appendString(b, reason)
	return append(b, rec...)
}

func decodeDead(v []byte, seq uint64) (DeadLetter, error) {
	d := decoder{b: v}
	if d.byte() != 1 {
		return DeadLetter{}, fmt.Errorf("%w: dead letter %d: unknown version", errCorruptRecord, seq)
	}
	at := time.Unix(0, d.varint())
	reason := d.string()
	if d.err != nil {
		return DeadLetter{}, fmt.Errorf("%w: dead letter %d", d.err, seq)
	}
	rec, err := decodeRecord(d.b, seq)
	return DeadLetter{Record: rec, Reason: reason, At: at}, err
}

func (q *Queue) applyReject(b *batch, o *op) error {
	r := o.refs[0]
	item, err := b.txn.Get(outboxKey(r.class, r.seq))
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
	if err := b.set(deadKey(r.seq), encodeDead(o.reason, b.now, rec)); err != nil {
		return err
	}
	if err := b.del(outboxKey(r.class, r.seq)); err != nil {
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
	it := b.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pDead}})
	defer it.Close()
	for it.Seek(deadKey(q.m.DeadHead)); it.Valid() && q.m.DeadDepth > uint64(q.opt.MaxDead); it.Next() {
		k := it.Item().KeyCopy(nil)
		if err := b.del(k); err != nil {
			return err
		}
		q.m.DeadHead = binary.BigEndian.Uint64(k[1:]) + 1
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
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pDead}})
		defer it.Close()
		for it.Seek(deadKey(after + 1)); it.Valid() && (max <= 0 || len(out) < max); it.Next() {
			seq := binary.BigEndian.Uint64(it.Item().Key()[1:])
			var dl DeadLetter
			err := it.Item().Value(func(v []byte) error {
				var err error
				dl, err = decodeDead(v, seq)
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
			it := txn.NewIterator(badger.IteratorOptions{Prefix: classPrefix(c)})
			for it.Seek(outboxKey(c, from[c])); it.Valid() && len(out) < max; it.Next() {
				_, seq, _ := parseOutboxKey(it.Item().Key())
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
