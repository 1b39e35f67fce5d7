package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/outpost-iot/outpost/store"
)

// storeFailGrace is how long a gateway whose store failed keeps running
// before it exits: long enough for /healthz, /metrics
// (outpost_store_failed) and the status page to show why, short enough
// that the leaves, which get no acknowledgment meanwhile, are not kept
// waiting.
const storeFailGrace = 5 * time.Second

// watchStore ends the run when a write or sync of the store fails. The
// store then acknowledges nothing (a retried fsync may "succeed" for pages
// the kernel already dropped: PostgreSQL's fsyncgate, 2018), and only
// reopening it reads what really reached the disk; a restart is that
// reopen. So the gateway reports the failure for storeFailGrace (it is
// neither healthy nor alive for the watchdog), then exits with an error,
// and its service manager (Restart=always in the unit) starts it again.
// Nothing acknowledged is lost: it was synced before its PUBACK.
func (g *Gateway) watchStore(ctx context.Context, q *store.Queue, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := q.Failed()
		if err == nil {
			continue
		}
		g.log.Error("store failed: nothing is acknowledged; outpost exits so that a restart reopens the store from what is on disk",
			"error", err, "exit_in", storeFailGrace)
		select {
		case <-ctx.Done():
		case <-time.After(storeFailGrace):
			cancel(fmt.Errorf("gateway: store failed (a restart reopens it from what is on disk): %w", err))
		}
		return
	}
}
