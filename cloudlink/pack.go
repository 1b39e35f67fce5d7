package cloudlink

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/dialect"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// PropPack is the property that marks a packed message: the number of
// readings in its JSON array body.
const PropPack = "outpost-pack"

// packer collects records into per-device packs for one connection. Its
// mutex serialises all publishing of a packing forwarder, so each device's
// records leave in the order they were added.
type packer struct {
	f     *forwarder
	max   int
	delay time.Duration

	mu   sync.Mutex
	open map[string]*pack // by device
}

// pack is an open pack: records of one device with equal properties.
type pack struct {
	recs   []*msg.Record
	srcs   []*source
	props  string // the records' property bag, encoded
	size   int    // of the body when closed: brackets, bodies and commas
	opened time.Time
	bslot  bool // holds a backlog slot (for its first backlog record)
}

func newPacker(f *forwarder, o PackConfig) *packer {
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultPackMaxDelay
	}
	return &packer{f: f, max: int(o.MaxBytes), delay: o.MaxDelay, open: map[string]*pack{}}
}

// packable reports whether r may share a message: a JSON body small enough
// to leave room for another.
func (k *packer) packable(r *msg.Record) bool {
	if r.Size() > k.max/2 {
		return false
	}
	if ct, ok := r.Props.Get(msg.PropContentType); ok && !dialect.IsJSON(ct) {
		return false
	}
	return json.Valid(r.Payload)
}

// add packs r, publishing whatever it closes. It blocks while the
// in-flight window is full, like an unpacked publish.
func (k *packer) add(ctx context.Context, r *msg.Record, src *source) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.open[r.Device]
	if !k.packable(r) {
		if p != nil {
			if err := k.flush(ctx, r.Device, p); err != nil {
				return err
			}
		}
		return k.f.publishOne(ctx, r, src)
	}
	props := r.Props.Encode()
	if p != nil && (p.props != props || p.size+1+len(r.Payload)+k.overhead(p, r) > k.max) {
		if err := k.flush(ctx, r.Device, p); err != nil {
			return err
		}
		p = nil
	}
	if p == nil {
		p = &pack{props: props, size: 1, opened: time.Now()} // "["; each reading adds itself and "," or "]"
		k.open[r.Device] = p
	}
	p.recs = append(p.recs, r)
	p.srcs = append(p.srcs, src)
	p.size += 1 + len(r.Payload)
	if src == srcBacklog {
		// A pack is one publish: it keeps one backlog slot, so the backlog
		// can go on leasing while its packs fill.
		if p.bslot {
			<-k.f.backlogSlots
			k.f.wake()
		}
		p.bslot = true
	}
	return nil
}

// overhead estimates the pack's property bag: the readings' own, plus
// what the dialect adds ($.mid, outpost-seq, outpost-pack, $.ct, and for
// Azure outpost-device and $.ce: about 130 bytes and the device id). flush
// measures the real message.
func (k *packer) overhead(p *pack, r *msg.Record) int {
	return len(p.props) + 2*len(r.Device) + 192
}

// flushBacklog publishes every open pack that holds a backlog slot. The
// live-first leaser calls it before it waits for a backlog slot: with more
// devices than backlog slots, packs opened by backlog records would
// otherwise hold every slot until MaxDelay, and the backlog would move a
// few records per MaxDelay.
func (k *packer) flushBacklog(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for dev, p := range k.open {
		if p.bslot {
			if err := k.flush(ctx, dev, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// tick publishes every pack that has waited MaxDelay. It runs until ctx
// ends; what is still open then was leased and is released with the rest.
func (k *packer) tick(ctx context.Context) {
	t := time.NewTicker(max(k.delay/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			k.mu.Lock()
			for dev, p := range k.open {
				if now.Sub(p.opened) >= k.delay {
					if err := k.flush(ctx, dev, p); err != nil {
						k.mu.Unlock()
						k.f.cancel(err) // a store error: end the connection
						return
					}
				}
			}
			k.mu.Unlock()
		}
	}
}

// flush publishes p (under k.mu): a pack of one as the record itself. The
// size check in add estimates the property bag; here the real message is
// measured (topic, as encoded, and body) and, should it be over max_bytes,
// the pack is split: no message over the cap ever goes out (IoT Hub would
// drop the connection, and the same pack would form again after it).
func (k *packer) flush(ctx context.Context, dev string, p *pack) error {
	delete(k.open, dev)
	bslots := 0
	if p.bslot {
		bslots = 1 // the pack's one backlog slot goes with its first message
	}
	recs, srcs := p.recs, p.srcs
	for len(recs) > 0 {
		n, rec := len(recs), recs[0]
		for ; n > 1; n-- {
			rec = packRecord(recs[:n])
			if len(k.f.s.d.Topic(rec))+len(rec.Payload) <= k.max {
				break
			}
		}
		if n == 1 {
			rec = recs[0]
		}
		seqs := make([]uint64, n)
		for i, r := range recs[:n] {
			seqs[i] = r.Seq
		}
		if err := k.f.publishRec(ctx, rec, &pub{seqs: seqs, srcs: srcs[:n], bslots: bslots}); err != nil {
			return err
		}
		bslots = 0
		recs, srcs = recs[n:], srcs[n:]
	}
	return nil
}

// packRecord builds the message for recs (two or more, one device, equal
// properties).
func packRecord(recs []*msg.Record) *msg.Record {
	first := recs[0]
	var body strings.Builder
	h := sha256.New()
	body.WriteByte('[')
	for i, r := range recs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(r.Payload)
		h.Write([]byte(r.ID))
		h.Write([]byte{0})
	}
	body.WriteByte(']')
	props := append(msg.Props(nil), first.Props...)
	props = props.Set(PropPack, strconv.Itoa(len(recs)))
	if _, ok := props.Get(msg.PropContentType); !ok {
		props = props.Set(msg.PropContentType, "application/json")
	}
	id := "pack-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h.Sum(nil)[:15]))
	return &msg.Record{
		Seq:      first.Seq,
		ID:       id,
		Device:   first.Device,
		Priority: first.Priority,
		Props:    props,
		Payload:  []byte(body.String()),
		Enqueued: first.Enqueued,
	}
}
