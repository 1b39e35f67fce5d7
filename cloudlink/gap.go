package cloudlink

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-iot/outpost/store"
)

// gapQueue is optional, found on the queue by type assertion: a queue that
// counts the records it threw away (evicted under drop-oldest, expired by
// TTL) and hands them out as a gap report. *store.Queue has it. Without it
// the session sends no gap reports.
type gapQueue interface {
	// Stats tells, cheaply, whether a gap is accumulating or outstanding.
	Stats() store.Stats
	// TakeGap returns the outstanding gap (the same one, with the same id,
	// until AckGap), taking the accumulated counts first if none is.
	TakeGap(ctx context.Context) (store.Gap, bool, error)
	// AckGap clears gap gen once it was delivered upstream.
	AckGap(ctx context.Context, gen uint64) error
}

// gapPoll is how often a connection looks for a gap to report.
const gapPoll = time.Second

// reportGaps runs beside the leaser on one connection when the session's
// queue counts gaps: at connect and every gapPoll it publishes the
// outstanding gap report (a type=gap record, store.Gap.Record) and, on its
// PUBACK, acknowledges it to the store. A report not acknowledged (the
// connection or the process died first) is sent again with the same $.mid
// on a later connection: at least once, across restarts. The report does
// not go through the outbox, so it is never evicted or expired itself.
func (f *forwarder) reportGaps(ctx context.Context, gq gapQueue) {
	t := time.NewTicker(gapPoll)
	defer t.Stop()
	for {
		if st := gq.Stats(); !st.Gap.Empty() || !st.GapOut.Empty() {
			if err := f.reportGap(ctx, gq); err != nil {
				f.cancel(err)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportGap sends the outstanding gap once and waits for its PUBACK. It
// returns an error that ends the connection (a failed or unacknowledged
// publish) or, through storeFail, the session (a store failure).
func (f *forwarder) reportGap(ctx context.Context, gq gapQueue) error {
	g, ok, err := gq.TakeGap(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return f.storeFail("take gap", err)
	}
	if !ok {
		return nil
	}
	rec := g.Record(f.s.gapDevice())
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-f.slots }()
	if ctx.Err() != nil {
		return nil
	}
	tok := f.c.Publish(f.s.d.Topic(rec), 1, false, rec.Payload)
	stall := time.NewTimer(f.s.opt.StallTimeout)
	defer stall.Stop()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil
	case <-stall.C:
		return fmt.Errorf("cloudlink: no PUBACK for the gap report %s for %v; dropping the connection", g.ID, f.s.opt.StallTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("cloudlink: publish gap report %s: %w", g.ID, err)
	}
	// Acknowledged upstream: clear it even if the connection is closing
	// now (Session.Run waits for this goroutine before the store closes).
	if err := gq.AckGap(context.WithoutCancel(ctx), g.Gen); err != nil {
		return f.storeFail("ack gap", err)
	}
	f.s.update(func(st *Status) { st.Gaps++ })
	f.s.log.Info("gap report delivered upstream", "mid", g.ID, "dropped", g.Dropped, "expired", g.Expired,
		"first_seq", g.FirstSeq, "last_seq", g.LastSeq)
	return nil
}

// gapDevice is the device a gap report is sent as: the gateway itself.
func (s *Session) gapDevice() string {
	switch {
	case s.opt.GatewayID != "":
		return s.opt.GatewayID
	case s.opt.Protocol == ProtocolAzure:
		return s.opt.DeviceID
	}
	return s.opt.ClientID
}
