package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Key prefixes; see the package comment.
const (
	pOutbox   = 'q'
	pDead     = 'x'
	pMeta     = 'm'
	pCmd      = 'c'
	pPending  = 'p'
	pFinished = 'f'
)

var metaKey = []byte{pMeta, 'm', 'e', 't', 'a'}

func outboxKey(class msg.Priority, seq uint64) []byte {
	k := make([]byte, 10)
	k[0] = pOutbox
	k[1] = byte(class)
	binary.BigEndian.PutUint64(k[2:], seq)
	return k
}

func classPrefix(class msg.Priority) []byte { return []byte{pOutbox, byte(class)} }

// parseOutboxKey returns the class and seq of an outbox key.
func parseOutboxKey(k []byte) (msg.Priority, uint64, bool) {
	if len(k) != 10 || k[0] != pOutbox || k[1] >= msg.NumPriorities {
		return 0, 0, false
	}
	return msg.Priority(k[1]), binary.BigEndian.Uint64(k[2:]), true
}

func deadKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = pDead
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

const recordVersion = 1

var errCorruptRecord = errors.New("store: corrupt record")

// encodeRecord appends r's encoding to b. Seq is not encoded: it is the key.
//
//	version u8 | size uvarint | enqueued varint ns | priority u8 |
//	id, device: uvarint len + bytes | nprops uvarint, (key, value)... | payload (rest)
func encodeRecord(b []byte, r *msg.Record) []byte {
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

// recordHead decodes only the size and enqueue time of an encoded record.
func recordHead(v []byte) (size int, enqueued time.Time, err error) {
	d := decoder{b: v}
	if d.byte() != recordVersion {
		return 0, time.Time{}, fmt.Errorf("%w: unknown version", errCorruptRecord)
	}
	size = int(d.uvarint())
	enqueued = time.Unix(0, d.varint())
	return size, enqueued, d.err
}

// decodeRecord decodes an encoded record; it copies everything out of v.
func decodeRecord(v []byte, seq uint64) (*msg.Record, error) {
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

// bytes returns the next length-prefixed byte string (aliasing the input).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	s := d.b[:n]
	d.b = d.b[n:]
	return s
}
