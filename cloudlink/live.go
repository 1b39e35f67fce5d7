package cloudlink

import (
	"context"
	"errors"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/pace"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// liveQueue is optional, found on the queue by type assertion: a queue that
// can lease from a sequence number on lets the forwarder send live records
// ahead of a backlog. Without it the session forwards in plain queue order.
//
// The forwarder polls with an already-done ctx and relies on the queue
// looking for records before it looks at ctx (as *store.Queue does): such a
// call returns what is available without waiting. A queue that checks ctx
// first only loses the live-first preference, never records.
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

// doneCtx is an already-cancelled context: a lease with it polls.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// backlogIdle is how long the backlog's Lease may find nothing before the
// backlog counts as sent. Within one connection nothing is released, so once
// Lease finds nothing the whole backlog is out; the wait only covers records
// another producer's batch is about to make visible.
const backlogIdle = 250 * time.Millisecond

// lease feeds one connection's forwarder. Two shapes:
//
//   - fifo: one stream in queue order (StrictOrder, or a queue without
//     LeaseFrom). Each device's records leave in sequence order.
//   - live-first: at connect, every record before the queue's next sequence
//     number (the mark) is backlog. Live records (from the mark on) go out as
//     soon as they are there; the backlog goes oldest-first behind them,
//     paced by ReplayRate, and may hold at most 3/4 of the in-flight window,
//     so live data always finds a slot. One goroutine does all the leasing,
//     so every record past the mark leaves in sequence order whether
//     LeaseFrom or the backlog's Lease found it; backlog records keep their
//     order too. Live records overtake the backlog (the outpost-seq property
//     lets the cloud restore the order).
func (f *forwarder) lease(ctx context.Context) error {
	lq, ok := f.s.q.(liveQueue)
	if f.s.opt.StrictOrder || !ok {
		return f.stream(ctx, func(ctx context.Context, n int) ([]*msg.Record, error) {
			return f.s.q.Lease(ctx, n)
		})
	}
	return f.liveFirst(ctx, lq)
}

// stream leases with next and publishes until ctx is done or next fails.
//
// It never holds in-flight slots while it waits in next: it leases first (up
// to a window's worth ahead) and takes a slot per record just before
// publishing it, so a stream idle in next cannot starve another of slots.
func (f *forwarder) stream(ctx context.Context, next func(context.Context, int) ([]*msg.Record, error)) error {
	for {
		recs, err := next(ctx, f.s.opt.MaxInflight)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return f.storeFail("lease", err)
		}
		if err := f.send(ctx, recs, 0, false); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// send holds recs and publishes them in order, each once it has an
// in-flight slot. Records with Seq < mark are backlog; fromBacklog says the
// backlog's Lease found them, holding a backlog slot for each, which a live
// record among them (Seq >= mark) gives back. Records leased and not
// published when ctx ends stay held and are released by releaseAll.
func (f *forwarder) send(ctx context.Context, recs []*msg.Record, mark uint64, fromBacklog bool) error {
	if !f.hold(recs) {
		return nil
	}
	for _, r := range recs {
		src := srcLive
		if r.Seq < mark {
			src = srcBacklog
		} else if fromBacklog {
			<-f.backlogSlots
		}
		if err := f.publish(ctx, r, src); err != nil || ctx.Err() != nil {
			return err
		}
	}
	return nil
}

// liveFirst is the live-first leaser (see lease).
func (f *forwarder) liveFirst(ctx context.Context, lq liveQueue) error {
	mark := max(lq.NextSeq(), 1) // backlog: Seq < mark
	f.s.startDrain(mark - 1)
	own := f.backlogSlots
	pacer := pace.New(f.s.opt.ReplayRate, cap(own))
	max := f.s.opt.MaxInflight
	backlog := true
	polled := uint64(0) // NextSeq at the last poll that found nothing
	for {
		if ctx.Err() != nil {
			return nil
		}
		// Live data first, whenever there is any. Nothing is released
		// within a connection, so only an append can make a poll that found
		// nothing find something.
		var recs []*msg.Record
		var err error
		if next := lq.NextSeq(); next != polled {
			recs, err = lq.LeaseFrom(doneCtx, mark, max)
			if err != nil && !errors.Is(err, context.Canceled) {
				return f.storeFail("lease", err)
			}
			if len(recs) == 0 {
				polled = next
			}
		}
		if len(recs) > 0 {
			if err := f.send(ctx, recs, mark, false); err != nil {
				return err
			}
			continue
		}
		fromBacklog := false
		if !backlog {
			recs, err = lq.LeaseFrom(ctx, mark, max)
		} else if n, wait := f.backlogBudget(pacer); n > 0 {
			fromBacklog = true
			recs, err = f.leaseBacklog(ctx, n, pacer)
			if err == nil && (len(recs) == 0 || recs[len(recs)-1].Seq >= mark) {
				// Lease found nothing, or live data behind the last of
				// the backlog: the backlog is out.
				backlog = false
				f.s.wg.Go(func() { f.backlogOut(ctx) })
			}
		} else {
			if wait == 0 && f.pk != nil {
				// Waiting for a backlog slot: packs holding them go now.
				if err := f.pk.flushBacklog(ctx); err != nil {
					return err
				}
			}
			recs, err = f.leaseLiveUntil(ctx, lq, mark, wait)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return f.storeFail("lease", err)
		}
		if err := f.send(ctx, recs, mark, fromBacklog); err != nil {
			return err
		}
	}
}

// backlogBudget takes as many backlog slots as are free and the pacer
// allows, without waiting. When it takes none, wait is how long until the
// pacer has a token (0: until a backlog slot frees).
func (f *forwarder) backlogBudget(pacer *pace.Pacer) (n int, wait time.Duration) {
	own := f.backlogSlots
	for n < cap(own) {
		select {
		case own <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	if n == 0 {
		return 0, 0
	}
	got, wait := pacer.Take(n)
	for range n - got {
		<-own
	}
	return got, wait
}

// leaseBacklog leases up to n oldest records, holding n backlog slots, and
// gives back the slots and tokens it did not use. It returns no records and
// no error when Lease found nothing for backlogIdle.
func (f *forwarder) leaseBacklog(ctx context.Context, n int, pacer *pace.Pacer) ([]*msg.Record, error) {
	lctx, cancel := context.WithTimeout(ctx, backlogIdle)
	recs, err := f.s.q.Lease(lctx, n)
	cancel()
	for range n - len(recs) {
		<-f.backlogSlots
	}
	pacer.GiveBack(n - len(recs))
	if err != nil && lctx.Err() != nil && ctx.Err() == nil {
		return nil, nil
	}
	return recs, err
}

// leaseLiveUntil waits for live data until the backlog may go on: a backlog
// slot frees (the acker calls f.wake) or, when wait > 0, the pacer has a
// token. It returns no records and no error when it stopped for that.
func (f *forwarder) leaseLiveUntil(ctx context.Context, lq liveQueue, mark uint64, wait time.Duration) ([]*msg.Record, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if wait > 0 {
		t := time.AfterFunc(wait, cancel)
		defer t.Stop()
	} else {
		f.mu.Lock()
		f.wakeup = cancel
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.wakeup = nil
			f.mu.Unlock()
		}()
		// A slot freed between backlogBudget and here would not call
		// wakeup: look again now that it is installed.
		if len(f.backlogSlots) < cap(f.backlogSlots) {
			cancel()
		}
	}
	recs, err := lq.LeaseFrom(wctx, mark, f.s.opt.MaxInflight)
	if err != nil && wctx.Err() != nil && ctx.Err() == nil {
		return nil, nil
	}
	return recs, err
}

// backlogOut waits for the backlog's last PUBACKs (by taking every backlog
// slot) and ends the drain.
func (f *forwarder) backlogOut(ctx context.Context) {
	for range cap(f.backlogSlots) {
		select {
		case f.backlogSlots <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
	f.s.endDrain()
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
