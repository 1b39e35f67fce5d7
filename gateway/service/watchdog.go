package service

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Watchdog feeds the systemd watchdog (WatchdogSec= in the unit) for as long
// as ctx is not done, and returns nil when ctx is done.
//
// Every half watchdog period it calls healthy; it sends WATCHDOG=1 only when
// healthy returns nil. While healthy returns an error, or does not return at
// all, no ping is sent, so a part that stays stalled for WatchdogSec gets
// the whole service killed (SIGABRT) and restarted by Restart=always; a
// failure that clears within the period costs nothing. healthy is never
// called concurrently with itself; it should answer quickly and must not
// block on I/O to peers that may legitimately be down (an unreachable cloud
// is not a stall: the queue keeps working).
//
// While unhealthy the status line reads "unhealthy: <error>"; on recovery the
// last text given to Status is restored.
//
// Watchdog returns nil at once, without calling healthy, when the process
// is not supervised by a systemd watchdog: NOTIFY_SOCKET or WATCHDOG_USEC is
// unset, or WATCHDOG_PID names another process. It returns an error only
// when WATCHDOG_USEC is malformed. Failures to send a ping are not fatal:
// the next tick tries again (systemd restarts the service if none arrive).
func Watchdog(ctx context.Context, healthy func() error) error {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("service: watchdog: %w", err)
	}
	if d <= 0 || !supervised() {
		return nil
	}
	return watch(ctx, d/2, healthy)
}

// watch is the loop behind Watchdog, with the ping interval given.
func watch(ctx context.Context, every time.Duration, healthy func() error) error {
	tick := time.NewTicker(every)
	defer tick.Stop()
	res := make(chan error, 1)
	wasHealthy := true
	for {
		go func() { res <- healthy() }()
		select {
		case <-ctx.Done():
			return nil
		case herr := <-res:
			switch {
			case herr == nil:
				if !wasHealthy {
					restore := ""
					if p := lastStatus.Load(); p != nil {
						restore = *p
					}
					_ = notify("STATUS=" + restore)
					wasHealthy = true
				}
				_ = notify(daemon.SdNotifyWatchdog)
			case wasHealthy:
				_ = notify("STATUS=unhealthy: " + oneLine(herr.Error()))
				wasHealthy = false
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// supervised reports whether NOTIFY_SOCKET is set; without it pings go
// nowhere and the loop is pointless.
func supervised() bool { return os.Getenv("NOTIFY_SOCKET") != "" }
