// Package layout is the store's on-disk format: the Badger keys (one
// prefix byte and big-endian numbers, so that iteration order is FIFO
// order) and the encodings of outbox records and dead letters. The store
// package comment lists the key layout; this package builds and parses it
// and knows nothing of transactions, counters or leases.
package layout

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Key prefixes, one per kind of key (see the store package comment).
const (
	Outbox   = 'q' // class seq: an outbox record
	Dead     = 'x' // seq: a dead letter
	Meta     = 'm' // "meta": the counters
	Cmd      = 'c' // id: an inbox command
	Pending  = 'p' // device 0x00 seq: the inbox's pending index
	Finished = 'f' // finished-ns id: the inbox's finished index
)

// MetaKey is the key of the store's counters.
var MetaKey = []byte{Meta, 'm', 'e', 't', 'a'}

// OutboxKey is the key of the outbox record seq of class.
func OutboxKey(class msg.Priority, seq uint64) []byte {
	k := make([]byte, 10)
	k[0] = Outbox
	k[1] = byte(class)
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

// ClassPrefix is the prefix of every outbox key of class.
func ClassPrefix(class msg.Priority) []byte { return []byte{Outbox, byte(class)} }

// ParseOutboxKey returns the class and seq of an outbox key.
func ParseOutboxKey(k []byte) (msg.Priority, uint64, bool) {
	if len(k) != 10 || k[0] != Outbox || k[1] >= msg.NumPriorities {
		return 0, 0, false
	}
	return msg.Priority(k[1]), binary.BigEndian.Uint64(k[2:]), true
}

// DeadKey is the key of the dead letter seq.
func DeadKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = Dead
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// DeadSeq returns the seq of a dead-letter key.
func DeadSeq(k []byte) uint64 { return binary.BigEndian.Uint64(k[1:]) }

// CmdKey is the key of the inbox command id.
func CmdKey(id string) []byte { return append([]byte{Cmd}, id...) }

// PendingPrefix is the prefix of device's entries in the pending index.
func PendingPrefix(device string) []byte {
	k := append([]byte{Pending}, device...)
	return append(k, 0)
}

// PendingKey is the pending-index key of device's command seq; its value
// is the command id.
func PendingKey(device string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(PendingPrefix(device), seq)
}

// FinishedKey is the finished-index key of command id, finished at at.
// Keys sort by time; FinishedKey(t, "") is below every key of commands
// finished at t or later.
func FinishedKey(at time.Time, id string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{Finished}, uint64(max(at.UnixNano(), 0)))
	return append(k, id...)
}

// FinishedID returns the command id of a finished-index key.
func FinishedID(k []byte) string { return string(k[9:]) }

const recordVersion = 1

var errCorruptRecord = errors.New("store: corrupt record")

// EncodeRecord appends r's encoding to b. Seq is not encoded: it is the key.
//
//	version u8 | size uvarint | enqueued varint ns | priority u8 |
//	id, device: uvarint len + bytes | nprops uvarint, (key, value)... | payload (rest)
func EncodeRecord(b []byte, r *msg.Record) []byte {
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, uint64(r.Size()))
	b = binary.AppendVarint(b, r.Enqueued.UnixNano())
	b = append(b, byte(r.Priority))
	b = appendString(b, r.ID)
	b = appendString(b, r.Device)
	b = binary.AppendUvarint(b, uint64(len(r.Props)))
	for _, p := range r.Props {
		b = appendString(b, p.Key)
		b = appendString(b, p.Value)
	}
	return append(b, r.Payload...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// RecordHead decodes only the size and enqueue time of an encoded record.
func RecordHead(v []byte) (size int, enqueued time.Time, err error) {
	d := decoder{b: v}
	if d.byte() != recordVersion {
		return 0, time.Time{}, fmt.Errorf("%w: unknown version", errCorruptRecord)
	}
	size = int(d.uvarint())
	enqueued = time.Unix(0, d.varint())
	return size, enqueued, d.err
}

// DecodeRecord decodes an encoded record; it copies everything out of v.
func DecodeRecord(v []byte, seq uint64) (*msg.Record, error) {
	d := decoder{b: v}
	if d.byte() != recordVersion {
		return nil, fmt.Errorf("%w: seq %d: unknown version", errCorruptRecord, seq)
	}
	d.uvarint() // size
	r := &msg.Record{Seq: seq}
	r.Enqueued = time.Unix(0, d.varint())
	r.Priority = msg.Priority(d.byte())
	r.ID = d.string()
	r.Device = d.string()
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: seq %d: %d props", errCorruptRecord, seq, n)
	}
	if n > 0 {
		r.Props = make(msg.Props, n)
		for i := range r.Props {
			r.Props[i].Key = d.string()
			r.Props[i].Value = d.string()
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: seq %d", d.err, seq)
	}
	r.Payload = append([]byte(nil), d.b...)
	return r, nil
}

// EncodeDead encodes a dead letter: the record's encoding rec, rejected at
// at for reason.
//
//	version u8 | at varint ns | reason (uvarint len + bytes) | record encoding
func EncodeDead(reason string, at time.Time, rec []byte) []byte {
	b := make([]byte, 0, len(rec)+len(reason)+16)
	b = append(b, 1)
	b = binary.AppendVarint(b, at.UnixNano())
	b = appendString(b, reason)
	return append(b, rec...)
}

// DecodeDead decodes a dead letter; it copies everything out of v.
func DecodeDead(v []byte, seq uint64) (rec *msg.Record, reason string, at time.Time, err error) {
	d := decoder{b: v}
	if d.byte() != 1 {
		return nil, "", time.Time{}, fmt.Errorf("%w: dead letter %d: unknown version", errCorruptRecord, seq)
	}
	at = time.Unix(0, d.varint())
	reason = d.string()
	if d.err != nil {
		return nil, "", time.Time{}, fmt.Errorf("%w: dead letter %d", d.err, seq)
	}
	rec, err = DecodeRecord(d.b, seq)
	return rec, reason, at, err
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", errCorruptRecord)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
