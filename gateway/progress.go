package gateway

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// progress tells a gateway that is alive from one that merely runs: the two
// flows that must keep moving while there is work for them.
//
//   - Ingest: writes handed to the store (a leaf's Submit, an adapter's
//     Append) are pending until the store's sync reports them. With writes
//     pending and none finishing for the timeout, the store has stopped
//     syncing.
//   - Forwarding: with records queued and the cloud link up, upstream
//     acknowledgements (records forwarded or rejected) must keep coming.
//     With none for the timeout, the forwarder is stuck. A link that is
//     down is not a stall: the queue holds the data until it is back.
//
// A stall is measured from the last sign of progress or from the moment
// there was work to do, whichever is later, so an idle gateway never
// stalls.
type progress struct {
	timeout time.Duration
	now     func() time.Time

	pending   atomic.Int64 // writes submitted to the store, not yet done
	ingestAt  atomic.Int64 // unix ns: last write done, or pending became non-zero
	ingestSub atomic.Int64 // writes submitted, ever (for the log)

	mu      sync.Mutex
	due     bool      // records queued and the link up at the last look
	acked   uint64    // upstream acknowledgements seen at the last look
	queued  uint64    // records queued at the last look
	fwdAt   time.Time // last acknowledgement, or when forwarding became due
	stalled [2]bool   // ingest, forward: reported as stalled (for the log)
}

func newProgress(timeout time.Duration) *progress {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	return &progress{timeout: timeout, now: time.Now}
}

// submitted counts one write handed to the store; done must follow.
func (p *progress) submitted() {
	p.ingestSub.Add(1)
	if p.pending.Add(1) == 1 {
		p.ingestAt.Store(p.now().UnixNano())
	}
}

// done counts one write the store reported (synced or failed: both are
// the store answering).
func (p *progress) done() {
	p.ingestAt.Store(p.now().UnixNano())
	p.pending.Add(-1)
}

// ingestStall describes a store that stopped syncing, or returns "".
func (p *progress) ingestStall() string {
	n := p.pending.Load()
	if n <= 0 {
		return ""
	}
	idle := p.now().Sub(time.Unix(0, p.ingestAt.Load()))
	if idle < p.timeout {
		return ""
	}
	return fmt.Sprintf("store: %d writes waiting and none synced for %s (gateway.stall_timeout %s)",
		n, idle.Round(time.Second), p.timeout)
}

// observe records one look at forwarding: whether the link is up, how many
// records are queued, and the link's acknowledgement count.
func (p *progress) observe(up bool, queued, acked uint64) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	due := up && queued > 0
	if due && (!p.due || acked != p.acked) {
		p.fwdAt = now
	}
	p.due, p.acked, p.queued = due, acked, queued
}

// forwardStall describes a forwarder that stopped making progress, or
// returns "". It is measured from the last observe, so a monitor that stops
// looking does not hide a stall.
func (p *progress) forwardStall() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.due {
		return ""
	}
	idle := p.now().Sub(p.fwdAt)
	if idle < p.timeout {
		return ""
	}
	return fmt.Sprintf("cloudlink: %d records queued, link up, no upstream acknowledgement for %s (gateway.stall_timeout %s)",
		p.queued, idle.Round(time.Second), p.timeout)
}

// stalls lists the current stalls.
func (p *progress) stalls() []string {
	var ss []string
	for _, s := range []string{p.ingestStall(), p.forwardStall()} {
		if s != "" {
			ss = append(ss, s)
		}
	}
	return ss
}

// linkUp reports whether forwarding can proceed on the link: connected,
// and for a fleet of per-device identities every identity connected (a
// device offline holds its records back, which is not a stall).
func linkUp(st cloudlink.Status) bool {
	if !st.Connected {
		return false
	}
	for _, d := range st.Devices {
		if !d.Connected {
			return false
		}
	}
	return true
}

// monitorProgress looks at the store and the link every interval until ctx
// is done, and logs each stall once when it begins and once when it ends.
func (g *Gateway) monitorProgress(ctx context.Context) {
	every := min(max(g.progress.timeout/10, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if g.link != nil && g.queue != nil {
			ls := g.link.Status()
			qs := g.queue.Stats()
			queued := qs.Depth - min(qs.Depth, uint64(qs.Parked))
			g.progress.observe(linkUp(ls), queued, ls.Forwarded+ls.Rejected)
		}
		for i, s := range []string{g.progress.ingestStall(), g.progress.forwardStall()} {
			was := g.progress.stalled[i]
			g.progress.stalled[i] = s != ""
			switch {
			case s != "" && !was:
				g.log.Error("stalled: unhealthy until it moves again (the systemd watchdog restarts a gateway that stays stalled)", "problem", s)
			case s == "" && was:
				g.log.Info("moving again", "flow", []string{"ingest", "forwarding"}[i])
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// meteredQueue is the store as the hub writes to it: every Submit is
// counted pending until the store calls its done.
type meteredQueue struct {
	q *store.Queue
	p *progress
}

// Submit implements hub.Appender.
func (m meteredQueue) Submit(recs []*msg.Record, done func(error)) {
	m.p.submitted()
	m.q.Submit(recs, func(err error) {
		m.p.done()
		if done != nil {
			done(err)
		}
	})
}

// ingest is store.Queue.Append, counted as pending until the store answers.
func (g *Gateway) ingest(ctx context.Context, recs ...*msg.Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	meteredQueue{g.queue, g.progress}.Submit(recs, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
