package cloudlink

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-iot/outpost/cloudlink/internal/dialect"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// forwarder moves records over one connection: a leaser goroutine leases and
// publishes (in lease order, so each device's records leave in queue order),
// an acker goroutine awaits the PUBACKs in publish order and acks the store
// in batches. Slots bound the publishes awaiting a PUBACK to MaxInflight.
type forwarder struct {
	s     *Session
	c     paho.Client
	slots chan struct{} // one token per publish in flight
	// backlogSlots is the backlog stream's share of slots (live-first).
	backlogSlots chan struct{}
	pending      chan *pub               // published, awaiting PUBACK, in publish order
	pk           *packer                 // nil unless packing
	cancel       context.CancelCauseFunc // ends the connection (set by run)

	mu     sync.Mutex
	leased map[uint64]struct{} // leased from the store and not yet acked or rejected
	serr   error               // the first store error
	closed bool                // releaseAll ran: nothing may be held any more
	sent   int                 // publishes on this connection
	start  time.Time
	// wakeup, when set, is called when a backlog slot frees: the leaser
	// waits for that (leaseLiveUntil).
	wakeup context.CancelFunc
}

// pub is one publish awaiting its PUBACK: one record, or a pack of several.
type pub struct {
	seqs []uint64
	tok  paho.Token
	at   time.Time
	srcs []*source // where each record came from (live or backlog)
	// bslots is the backlog slots it holds: one if it has backlog records
	// (a pack gives back the slots of all but its first at once).
	bslots int
	// seq1 and src1 back seqs and srcs for a single record: no extra
	// allocations on the unpacked path.
	seq1 [1]uint64
	src1 [1]*source
}

func newForwarder(s *Session, c paho.Client) *forwarder {
	n := s.opt.MaxInflight
	f := &forwarder{s: s, c: c, slots: make(chan struct{}, n), pending: make(chan *pub, n),
		backlogSlots: make(chan struct{}, max(n*3/4, 1)),
		leased:       make(map[uint64]struct{}), start: time.Now()}
	if s.opt.Pack.MaxBytes > 0 {
		f.pk = newPacker(f, s.opt.Pack)
	}
	return f
}

// run forwards until ctx is done (returns nil) or the connection or store
// fails (returns why). It waits for the acker, but not for a leaser stuck in
// paho's Publish after the connection died (that call only returns after
// paho's write timeout): the leaser cleans up after itself (see hold) and
// Session.Run waits for it before returning.
func (f *forwarder) run(ctx context.Context, cancel context.CancelCauseFunc) error {
	f.cancel = cancel
	ackc, leasec := make(chan error, 1), make(chan error, 1)
	go func() { ackc <- f.ack(ctx) }()
	f.s.wg.Add(1)
	go func() {
		defer f.s.wg.Done()
		leasec <- f.lease(ctx)
	}()
	if f.pk != nil {
		f.s.wg.Go(func() { f.pk.tick(ctx) })
	}
	if gq := f.s.gaps; gq != nil {
		f.s.wg.Go(func() { f.reportGaps(ctx, gq) })
	}
	var err error
	select {
	case err = <-ackc:
		if err != nil {
			cancel(err)
		}
		select {
		case lerr := <-leasec:
			if err == nil {
				err = lerr
			}
		default:
		}
	case err = <-leasec:
		if err != nil {
			cancel(err)
		}
		if aerr := <-ackc; err == nil {
			err = aerr
		}
	}
	return err
}

// publish sends r, through the packer when packing.
func (f *forwarder) publish(ctx context.Context, r *msg.Record, src *source) error {
	if f.pk != nil {
		return f.pk.add(ctx, r, src)
	}
	return f.publishOne(ctx, r, src)
}

// publishOne sends one record as it is, or rejects it to dead letters when
// it is over the upstream's cap.
func (f *forwarder) publishOne(ctx context.Context, r *msg.Record, src *source) error {
	reason := ""
	if limit := f.s.opt.MaxMessageBytes; limit > 0 && r.Size() > limit {
		reason = fmt.Sprintf("message is %d bytes, over the upstream cap of %d", r.Size(), limit)
	} else if n := topicLen(f.s.d, r); n > maxTopic {
		reason = fmt.Sprintf("topic is %d bytes, over MQTT's %d", n, maxTopic)
	}
	if reason != "" {
		f.mu.Lock()
		if f.closed {
			// releaseAll already gave the record back; the next
			// connection rejects it.
			f.mu.Unlock()
			return nil
		}
		err := f.s.q.Reject(r.Seq, reason)
		delete(f.leased, r.Seq)
		f.mu.Unlock()
		if err != nil {
			return f.storeFail("reject", err)
		}
		if src == srcBacklog {
			<-f.backlogSlots
			f.wake()
		}
		f.s.update(func(st *Status) { st.Rejected++ })
		f.s.log.Warn("record rejected to dead letters", "seq", r.Seq, "device", r.Device, "mid", r.ID, "reason", reason)
		return nil
	}
	p := &pub{}
	p.seq1[0], p.src1[0] = r.Seq, src
	p.seqs, p.srcs = p.seq1[:], p.src1[:]
	if src == srcBacklog {
		p.bslots = 1
	}
	return f.publishRec(ctx, r, p)
}

// maxTopic is MQTT's limit on a topic's length; paho silently cuts a
// longer one.
const maxTopic = 65535

// topicLen is the length of r's upstream topic, built only when its
// properties could make it longer than maxTopic (escaping at most triples
// a byte).
func topicLen(d dialect.Dialect, r *msg.Record) int {
	n := len(r.ID) + 2*len(r.Device) + 512
	for _, p := range r.Props {
		n += len(p.Key) + len(p.Value) + 2
	}
	if 3*n <= maxTopic {
		return 0
	}
	return len(d.Topic(r))
}

// publishRec takes an in-flight slot and publishes rec, which stands for
// the records p.seqs. Without a slot before ctx ends it publishes nothing:
// the records stay leased and releaseAll gives them back.
func (f *forwarder) publishRec(ctx context.Context, rec *msg.Record, p *pub) error {
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	if ctx.Err() != nil {
		// Both were ready: the connection is over and releaseAll may have
		// given the records back already; do not send them on it.
		<-f.slots
		return nil
	}
	tok := f.c.Publish(f.s.d.Topic(rec), 1, false, rec.Payload)
	f.mu.Lock()
	f.sent++
	f.mu.Unlock()
	p.tok, p.at = tok, time.Now()
	select {
	case f.pending <- p:
	case <-ctx.Done():
	}
	return nil
}

// ack is the acker goroutine.
func (f *forwarder) ack(ctx context.Context) error {
	stall := time.NewTimer(time.Hour)
	stall.Stop()
	var head *pub
	batch := make([]uint64, 0, f.s.opt.MaxInflight)
	var srcs []*source
	for {
		if head == nil {
			select {
			case head = <-f.pending:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case <-head.tok.Done():
		default:
			stall.Reset(max(f.s.opt.StallTimeout-time.Since(head.at), 0))
			select {
			case <-head.tok.Done():
				stall.Stop()
			case <-ctx.Done():
				stall.Stop()
				return nil
			case <-stall.C:
				return fmt.Errorf("cloudlink: no PUBACK for %v; dropping the connection", f.s.opt.StallTimeout)
			}
		}
		if err := head.tok.Error(); err != nil {
			return fmt.Errorf("cloudlink: publish: %w", err)
		}
		batch, srcs = append(batch[:0], head.seqs...), append(srcs[:0], head.srcs...)
		pubs, bslots := 1, head.bslots
		head = nil
		// Collect every further publish that is already acknowledged.
	more:
		for len(batch) < cap(batch) {
			select {
			case p := <-f.pending:
				select {
				case <-p.tok.Done():
					if p.tok.Error() != nil {
						head = p
						break more
					}
					batch, srcs = append(batch, p.seqs...), append(srcs, p.srcs...)
					pubs, bslots = pubs+1, bslots+p.bslots
				default:
					head = p
					break more
				}
			default:
				break more
			}
		}
		if err := f.s.q.Ack(batch...); err != nil {
			return f.storeFail("ack", err)
		}
		f.mu.Lock()
		for _, seq := range batch {
			delete(f.leased, seq)
		}
		f.mu.Unlock()
		for range pubs {
			<-f.slots
		}
		for range bslots {
			<-f.backlogSlots
		}
		if bslots > 0 {
			f.wake()
		}
		f.s.acked(len(batch), srcs)
	}
}

// wake tells a leaser waiting for backlog room that there may be some.
func (f *forwarder) wake() {
	f.mu.Lock()
	w := f.wakeup
	f.mu.Unlock()
	if w != nil {
		w()
	}
}

func (f *forwarder) storeFail(op string, err error) error {
	err = storeErr(op, err)
	f.mu.Lock()
	if f.serr == nil {
		f.serr = err
	}
	f.mu.Unlock()
	return err
}

func (f *forwarder) storeErr() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.serr
}

// releaseAll returns every record still leased to the store, once the acker
// has stopped. They go again on the next connection, with the same $.mid.
// Records a straggling leaser leases afterwards are released by hold.
func (f *forwarder) releaseAll() {
	f.mu.Lock()
	f.closed = true
	seqs := make([]uint64, 0, len(f.leased))
	for seq := range f.leased {
		seqs = append(seqs, seq)
	}
	clear(f.leased)
	f.mu.Unlock()
	f.release(seqs)
}

func (f *forwarder) release(seqs []uint64) {
	if len(seqs) == 0 {
		return
	}
	slices.Sort(seqs)
	if err := f.s.q.Release(seqs...); err != nil {
		f.storeFail("release", err)
		return
	}
	f.s.update(func(st *Status) { st.Resent += uint64(len(seqs)) })
}

// burstBeforeLoss reports whether the connection dropped soon after a burst,
// which IoT Hub does instead of a 429 when it throttles.
func (f *forwarder) burstBeforeLoss(lasted time.Duration) bool {
	if f.s.opt.Protocol != ProtocolAzure {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return lasted < 30*time.Second && f.sent >= 100
}
