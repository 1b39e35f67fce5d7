package cloudlink

import (
	"context"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// liveQueue is optional, found on the queue by type assertion: a queue that
// can lease past a sequence number lets the forwarder send live records ahead
// of a backlog. Without it the session forwards in plain queue order.
type liveQueue interface {
	// LeaseFrom is Lease restricted to records with Seq >= from: it blocks
	// until at least one such record is available. (*store.Queue has it.)
	LeaseFrom(ctx context.Context, from uint64, max int) ([]*msg.Record, error)
	// NextSeq is the Seq the next appended record will get.
	NextSeq() uint64
}

// source tags where a published record came from, for drain accounting.
type source struct{ backlog bool }

var (
	srcLive    = &source{}
	srcBacklog = &source{backlog: true}
)

// leaser feeds one connection's forwarder. Two shapes:
//
//   - fifo: one stream in queue order (StrictOrder, or a queue without
//     LeaseFrom). Each device's records leave in sequence order.
//   - live-first: at connect, every record up to the queue's last sequence
//     number is backlog. A live stream leases only newer records and sends
//     them at once; a backlog stream leases oldest-first, paced by
//     ReplayRate, and may hold at most 3/4 of the in-flight window, so live
//     data always finds a slot. Within each stream a device's records keep
//     their order; across the two, live records overtake the backlog (the
//     outpost-seq property lets the cloud restore the order).
func (f *forwarder) lease(ctx context.Context) error {
	lq, ok := f.s.q.(liveQueue)
	if f.s.opt.StrictOrder || !ok {
		return f.stream(ctx, func(ctx context.Context, n int) ([]*msg.Record, *source, error) {
			recs, err := f.s.q.Lease(ctx, n)
			return recs, nil, err
		})
	}
	mark := lq.NextSeq() // the backlog is every record before mark
	if mark > 0 {
		mark--
	}
	f.s.startDrain(mark)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- f.stream(ctx, func(ctx context.Context, n int) ([]*msg.Record, *source, error) {
			recs, err := lq.LeaseFrom(ctx, mark+1, n)
			return recs, srcLive, err
		})
	}()
	err := f.backlog(ctx, mark)
	if err != nil {
		cancel()
		<-errc
		return err
	}
	return <-errc
}

// stream leases with next and publishes until ctx is done or next fails.
func (f *forwarder) stream(ctx context.Context, next func(context.Context, int) ([]*msg.Record, *source, error)) error {
	for {
		n := f.acquire(ctx, f.s.opt.MaxInflight)
		if n == 0 {
			return nil
		}
		recs, src, err := next(ctx, n)
		if err != nil {
			f.free(n)
			if ctx.Err() != nil {
				return nil
			}
			return f.storeFail("lease", err)
		}
		f.free(n - len(recs))
		if !f.hold(recs) {
			return nil
		}
		for _, r := range recs {
			if err := f.publish(ctx, r, src); err != nil {
				return err
			}
		}
	}
}

// backlog sends the records up to mark, paced, and returns nil once they are
// all out (or ctx is done).
func (f *forwarder) backlog(ctx context.Context, mark uint64) error {
	window := max(f.s.opt.MaxInflight*3/4, 1)
	own := f.backlogSlots // the backlog's share of the window
	pace := newPacer(f.s.opt.ReplayRate, window)
	for {
		select {
		case own <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		want := 1
		for want < window {
			select {
			case own <- struct{}{}:
				want++
				continue
			default:
			}
			break
		}
		paced := pace.take(ctx, want)
		n := 0
		if paced > 0 {
			n = f.acquire(ctx, paced)
		}
		if n == 0 {
			return nil
		}
		pace.giveBack(paced - n)
		for range want - n {
			<-own
		}
		// Within one connection nothing is released, so once Lease finds
		// nothing for a moment the whole backlog is out.
		lctx, lcancel := context.WithTimeout(ctx, 250*time.Millisecond)
		recs, err := f.s.q.Lease(lctx, n)
		lcancel()
		if err != nil {
			f.free(n)
			for range n {
				<-own
			}
			if ctx.Err() != nil {
				return nil
			}
			if lctx.Err() != nil {
				return f.backlogOut(ctx, own, window)
			}
			return f.storeFail("lease", err)
		}
		f.free(n - len(recs))
		for range n - len(recs) {
			<-own
		}
		pace.giveBack(n - len(recs))
		if !f.hold(recs) {
			return nil
		}
		done := false
		for _, r := range recs {
			src := srcBacklog
			if r.Seq > mark {
				// The backlog is out; what Lease found now is live data.
				src, done = srcLive, true
				<-own
			}
			if err := f.publish(ctx, r, src); err != nil {
				return err
			}
		}
		if done {
			return f.backlogOut(ctx, own, window)
		}
	}
}

// backlogOut waits for the backlog's last PUBACKs (by taking every backlog
// slot) and ends the drain.
func (f *forwarder) backlogOut(ctx context.Context, own chan struct{}, window int) error {
	for range window {
		select {
		case own <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
	}
	f.s.endDrain()
	return nil
}

// hold records recs as leased by this connection. It returns false (and
// releases them) when the connection is already torn down.
func (f *forwarder) hold(recs []*msg.Record) bool {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		f.release(seqs)
		return false
	}
	for _, r := range recs {
		f.leased[r.Seq] = struct{}{}
	}
	f.mu.Unlock()
	return true
}

// pacer is a token bucket: rate tokens/s, at most burst saved up. A zero
// rate means unlimited.
type pacer struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

func newPacer(rate float64, burst int) *pacer {
	return &pacer{rate: rate, burst: float64(burst), tokens: min(float64(burst), max(rate, 1)), last: time.Now(), now: time.Now}
}

// take waits until at least one token is available and takes up to want; it
// returns how many it took (0 when ctx is done).
func (p *pacer) take(ctx context.Context, want int) int {
	if p.rate <= 0 {
		return want
	}
	for {
		now := p.now()
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		p.last = now
		if p.tokens >= 1 {
			n := min(want, int(p.tokens))
			p.tokens -= float64(n)
			return n
		}
		wait := time.Duration((1 - p.tokens) / p.rate * float64(time.Second))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0
		case <-t.C:
		}
	}
}

func (p *pacer) giveBack(n int) {
	if p.rate > 0 {
		p.tokens = min(p.burst, p.tokens+float64(n))
	}
}

// drain tracks backlog replay progress for Status and the logs.
type drain struct {
	active    bool
	start     time.Time
	total     int // backlog size at connect (estimate)
	sent      int // backlog records acknowledged
	rateStart time.Time
	rateSent  int
	rate      float64
	lastLog   time.Time
}

// startDrain begins tracking a backlog ending at mark.
func (s *Session) startDrain(mark uint64) {
	total := s.depth()
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	now := time.Now()
	s.drain = drain{active: total > 0, start: now, total: total, rateStart: now, lastLog: now}
	if total > 0 {
		s.log.Info("replaying backlog behind live data", "backlog", total, "up_to_seq", mark, "replay_rate", s.opt.ReplayRate)
	}
}

// endDrain is called when the backlog is out (its last acks may still come).
func (s *Session) endDrain() {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	if !s.drain.active {
		return
	}
	s.drain.active = false
	took := time.Since(s.drain.start)
	s.log.Info("backlog replayed", "records", s.drain.sent, "took", took.Round(time.Millisecond),
		"rate", int(float64(s.drain.sent)/max(took.Seconds(), 1e-3)))
}

// acked counts n records acknowledged upstream; srcs tags them.
func (s *Session) acked(n int, srcs []*source) {
	back := 0
	for _, src := range srcs {
		if src == srcBacklog {
			back++
		}
	}
	s.update(func(st *Status) { st.Forwarded += uint64(n) })
	if back == 0 {
		return
	}
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	d := &s.drain
	d.sent += back
	now := time.Now()
	if el := now.Sub(d.rateStart); el >= time.Second {
		r := float64(d.sent-d.rateSent) / el.Seconds()
		if d.rate == 0 {
			d.rate = r
		} else {
			d.rate = 0.5*d.rate + 0.5*r
		}
		d.rateStart, d.rateSent = now, d.sent
	}
	if d.active && now.Sub(d.lastLog) >= 30*time.Second {
		d.lastLog = now
		st := s.drainStatus()
		s.log.Info("replaying backlog", "remaining", st.Remaining, "rate", int(st.Rate), "eta", st.ETA.Round(time.Second))
	}
}

// drainStatus computes Drain; s.drainMu must be held.
func (s *Session) drainStatus() Drain {
	d := &s.drain
	st := Drain{Active: d.active, Rate: d.rate, Remaining: max(d.total-d.sent, 0)}
	if !d.active {
		st.Remaining = 0
	}
	if st.Rate > 0 {
		st.ETA = time.Duration(float64(st.Remaining) / st.Rate * float64(time.Second))
	}
	return st
}
