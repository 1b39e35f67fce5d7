package gateway

import (
	"context"
	"time"

	"github.com/outpost-iot/outpost/store"
)

// lossLogEvery is how often at most the gateway logs, per reason, records
// the store threw away.
const lossLogEvery = 10 * time.Second

// watchLosses logs records the store threw away: evicted to make room
// (store.when_full: drop-oldest) and expired (older than store.ttl), one
// line per reason at most every lossLogEvery, with the count since the
// previous line and the total. It checks once a second; the first loss
// after a quiet interval is logged at once. The counts reach the cloud as
// gap reports (the cloud link sends them); this is the operator's view.
func (g *Gateway) watchLosses(ctx context.Context, q *store.Queue, cfg store.Config) {
	type reason struct {
		msg    string
		count  func(store.Stats) uint64
		logged uint64 // total at the last line
		at     time.Time
		attrs  []any
	}
	st := q.Stats()
	reasons := []*reason{
		{msg: "store full: oldest records dropped", count: func(s store.Stats) uint64 { return s.Dropped },
			attrs: []any{"when_full", cfg.WhenFull.String(), "max_bytes", int64(cfg.MaxBytes)}},
		{msg: "records expired in the store", count: func(s store.Stats) uint64 { return s.Expired },
			attrs: []any{"ttl", cfg.TTL.String()}},
	}
	for _, r := range reasons {
		r.logged = r.count(st)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := q.Stats()
		now := time.Now()
		for _, r := range reasons {
			total := r.count(st)
			if total == r.logged || now.Sub(r.at) < lossLogEvery {
				continue
			}
			args := append([]any{"count", total - r.logged, "total", total}, r.attrs...)
			g.log.Warn(r.msg, args...)
			r.logged, r.at = total, now
		}
	}
}
