// Package service integrates the gateway with systemd: it tells the service
// manager when the daemon is ready, reloading or stopping, publishes a
// one-line status, and keeps the systemd watchdog fed while the gateway's own
// health checks pass.
//
// Every function is a no-op that returns nil when the process is not run by
// systemd (NOTIFY_SOCKET unset), so `outpost run` behaves the same in a
// terminal, a container or a test. The notification protocol itself is
// github.com/coreos/go-systemd/v22/daemon; this package adds the gateway's
// policy (when to ping, what to report).
//
// All functions are safe for concurrent use.
package service

import (
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// lastStatus is the most recent text passed to Status. The watchdog loop
// replaces the status line while the gateway is unhealthy and puts this
// text back when it recovers.
var lastStatus atomic.Pointer[string]

// notify sends state to the service manager. It returns nil when
// NOTIFY_SOCKET is unset. The environment is left in place so that later
// notifications (READY after a reload, STOPPING) still reach systemd.
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("service: notify %q: %w", firstLine(state), err)
	}
	return nil
}

// Ready tells systemd that start-up (or a reload) has finished: the store is
// open and the hub listens. With Type=notify, `systemctl start` returns and
// the unit becomes "active (running)" only after this call.
func Ready() error { return notify(daemon.SdNotifyReady) }

// Reloading tells systemd that the daemon has begun reloading its
// configuration (after SIGHUP). Call Ready once the reload has finished,
// whether it succeeded or the old configuration was kept.
func Reloading() error {
	state := daemon.SdNotifyReloading
	// MONOTONIC_USEC is required by Type=notify-reload (systemd ≥ 253) and
	// ignored by older managers.
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err == nil {
		state += fmt.Sprintf("\nMONOTONIC_USEC=%d", ts.Nano()/1000)
	}
	return notify(state)
}

// Stopping tells systemd that the daemon has begun an orderly shutdown.
func Stopping() error { return notify(daemon.SdNotifyStopping) }

// Status sets the one-line status shown by `systemctl status outpost`
// (for example "queue 12 records, link up"). Newlines in s are replaced by
// spaces: the protocol is line-based.
func Status(s string) error {
	s = oneLine(s)
	lastStatus.Store(&s)
	return notify("STATUS=" + s)
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\x00", " ")), " ")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
