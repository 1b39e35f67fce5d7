// Package modbus is the Modbus adapter kind ("modbus" under devices[]):
// it polls register maps over Modbus TCP, RTU (serial, or RTU framing over
// TCP) and ASCII, turns them into readings, and applies write commands.
//
// Every device entry on the same serial port or TCP host:port shares one
// Bus, whatever the number of entries: one goroutine sends all their
// requests one at a time with the inter-frame gap kept, so slaves on one
// RS-485 line are never polled concurrently. A device that stops
// answering is backed off exponentially (capped at backoff_max) and its
// poll stops at the first unanswered request, so it costs the bus at most
// one timeout per attempt and cannot stall the other devices.
//
// Points of one table are coalesced into the fewest reads (125 registers,
// 2000 bits each, bridging up to max_gap unused registers); a read the
// device rejects with exception 02 is split at point boundaries and the
// split is remembered.
//
// The transports are goburrow/modbus v0.1.0 clients. Over TCP its own
// transport is used and the connection is closed after every failed
// request (goburrow never reconnects by itself). For RTU its framing and
// CRC are used over this package's transport, which reads a reply as soon
// as it is complete instead of sleeping 1.5 character times per byte, and
// discards stale bytes before each request.
package modbus

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func init() {
	adapters.Register(adapters.Kind{
		Name:      "modbus",
		NewConfig: func() adapters.Config { return NewConfig() },
		New: func(id string, cfg adapters.Config, log *slog.Logger) (adapters.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("modbus: config is %T, want *modbus.Config", cfg)
			}
			d, err := New(id, c, log)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
	})
}

var (
	_ adapters.Source         = (*Device)(nil)
	_ adapters.Sink           = (*Device)(nil)
	_ adapters.HealthReporter = (*Device)(nil)
)

// downAfter is how many unanswered polls in a row make a device
// adapters.Down (one makes it adapters.Degraded).
const downAfter = 2

// Device is one Modbus device: an adapters.Source that polls it and an
// adapters.Sink that writes to it, and an adapters.HealthReporter. Stats
// gives its request counters.
type Device struct {
	id  string
	cfg *device
	log *slog.Logger

	// mu guards the remembered cuts and the plans made with them.
	mu    sync.Mutex
	cuts  cuts
	plans map[string][]request

	hmu    sync.Mutex
	health adapters.Health
	detail string
	stats  Stats
}

// Stats are a device's request counters on its bus.
type Stats struct {
	Requests uint64 // requests sent
	Errors   uint64 // requests that failed, for any reason
	Timeouts uint64 // of which: no answer at all
	// Exceptions counts Modbus exception replies (the device answered "no").
	Exceptions uint64
	// LastLatency and TotalLatency time the answered requests, queueing on
	// the bus excluded.
	LastLatency  time.Duration
	TotalLatency time.Duration
}

// New builds a device from a config; it validates it first.
func New(id string, c *Config, log *slog.Logger) (*Device, error) {
	d, err := c.resolve()
	if err != nil {
		return nil, fmt.Errorf("modbus %s: %w", id, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Device{id: id, cfg: d, log: log.With("device", id), plans: map[string][]request{}, health: adapters.Up, detail: "not polled yet"}, nil
}

// Health implements adapters.HealthReporter: adapters.Up when the last poll
// read every point, adapters.Degraded when some points failed or the device
// did not answer one poll, adapters.Down after downAfter unanswered polls
// in a row (it is backed off), with a one-line detail: the last error, or
// what was read. It is safe to call from any goroutine.
func (d *Device) Health() (state adapters.Health, detail string) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	return d.health, d.detail
}

// Stats returns a copy of the device's request counters.
func (d *Device) Stats() Stats {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	return d.stats
}

func (d *Device) setHealth(state adapters.Health, detail string) (changed bool, was adapters.Health) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	was = d.health
	d.health, d.detail = state, detail
	return was != state, was
}

func (d *Device) count(err error, latency time.Duration) {
	d.hmu.Lock()
	defer d.hmu.Unlock()
	d.stats.Requests++
	switch {
	case err == nil:
	case isNoAnswer(err):
		d.stats.Errors++
		d.stats.Timeouts++
	case isException(err, 0):
		d.stats.Errors++
		d.stats.Exceptions++
	default:
		d.stats.Errors++
	}
	if !isNoAnswer(err) {
		d.stats.LastLatency = latency
		d.stats.TotalLatency += latency
	}
}

// Run polls the device until ctx is done, emitting one reading per poll
// (points whose deadband filtered them out are left out; failed points are
// in Errors). It returns nil when ctx is done, and an error only when the
// device cannot share its bus (conflicting line parameters). A refused
// Emit is logged once and the poll's reading dropped; polling goes on.
func (d *Device) Run(ctx context.Context, out adapters.Emitter) error {
	b, err := acquire(d.cfg.bus, d.log)
	if err != nil {
		return fmt.Errorf("modbus %s: %w", d.id, err)
	}
	defer b.Release()
	s := newScheduler(d.cfg, time.Now())
	rep := newReporter(d.cfg.points)
	emitFailing := false
	fails := 0 // polls in a row with no answer at all
	var retryAt time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wake := s.next()
		if wake.Before(retryAt) {
			wake = retryAt
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		now := time.Now()
		due := s.take(now)
		if len(due) == 0 {
			continue
		}
		res := d.poll(ctx, b, due)
		if ctx.Err() != nil {
			return nil
		}
		d.track(res, &fails)
		if fails > 0 {
			backoff := d.cfg.interval << min(fails-1, 20)
			retryAt = now.Add(min(backoff, d.cfg.backoffMax))
		} else {
			retryAt = time.Time{}
		}
		at := res.at
		if at.IsZero() {
			at = now
		}
		r, commit := rep.reading(d.id, at, res)
		if len(r.Values)+len(r.Errors) == 0 {
			continue
		}
		if err := out.Emit(ctx, r); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !emitFailing {
				d.log.Warn("modbus: emit refused; dropping readings until it recovers", "err", err)
				emitFailing = true
			}
			continue
		}
		commit()
		if emitFailing {
			d.log.Info("modbus: emit recovered")
			emitFailing = false
		}
	}
}

// track updates health from one poll and counts unanswered polls.
func (d *Device) track(res pollResult, fails *int) {
	var state adapters.Health
	var detail string
	switch {
	case res.answered == 0:
		*fails++
		state, detail = adapters.Degraded, res.firstErr
		if *fails >= downAfter {
			state = adapters.Down
		}
	case len(res.errs) > 0:
		*fails = 0
		state, detail = adapters.Degraded, fmt.Sprintf("%d of %d points failed: %s", len(res.errs), len(res.errs)+len(res.values), res.firstErr)
	default:
		*fails = 0
		state, detail = adapters.Up, fmt.Sprintf("%d points read", len(res.values))
	}
	changed, was := d.setHealth(state, detail)
	switch {
	case !changed:
	case state == adapters.Up:
		d.log.Info("modbus: device recovered", "was", was)
	case state == adapters.Down:
		d.log.Warn("modbus: device not answering; backing off", "err", detail)
	case was == adapters.Up:
		d.log.Warn("modbus: poll failing; will retry", "err", detail)
	}
}

// scheduler keeps one next-due time per distinct point interval, at a
// fixed rate: a late poll does not push later ones back, and ticks missed
// entirely (back-off, a slow bus) are skipped, not caught up.
type scheduler struct {
	groups []*group
}

type group struct {
	interval time.Duration
	next     time.Time
	points   []*point
}

func newScheduler(d *device, start time.Time) *scheduler {
	s := &scheduler{}
	by := map[time.Duration]*group{}
	for _, p := range d.points {
		g := by[p.interval]
		if g == nil {
			g = &group{interval: p.interval, next: start}
			by[p.interval] = g
			s.groups = append(s.groups, g)
		}
		g.points = append(g.points, p)
	}
	return s
}

func (s *scheduler) next() time.Time {
	t := s.groups[0].next
	for _, g := range s.groups[1:] {
		if g.next.Before(t) {
			t = g.next
		}
	}
	return t
}

// take returns the points due at now and advances their groups.
func (s *scheduler) take(now time.Time) []*point {
	var due []*point
	for _, g := range s.groups {
		if g.next.After(now) {
			continue
		}
		due = append(due, g.points...)
		missed := now.Sub(g.next) / g.interval
		g.next = g.next.Add((missed + 1) * g.interval)
	}
	return due
}

// Sample is an annotated example of devices with modbus sections.
//
//go:embed sample.yaml
var Sample string

// Points implements adapters.PointLister: the configured points, in
// config order, those with writable set being writable.
func (d *Device) Points() []adapters.Point {
	ps := make([]adapters.Point, len(d.cfg.points))
	for i, p := range d.cfg.points {
		ps[i] = adapters.Point{Name: p.Name, Writable: p.writable}
	}
	return ps
}

// Read implements adapters.Reader: it polls every point once now, on the
// device's bus (between Run's polls and Apply's writes), without deadband
// or heartbeat. A point that fails is in the reading's Errors; an error
// return means the device answered no request at all.
func (d *Device) Read(ctx context.Context) (msg.Reading, error) {
	b, err := acquire(d.cfg.bus, d.log)
	if err != nil {
		return msg.Reading{}, fmt.Errorf("modbus %s: %w", d.id, err)
	}
	defer b.Release()
	res := d.poll(ctx, b, d.cfg.points)
	if err := ctx.Err(); err != nil {
		return msg.Reading{}, fmt.Errorf("modbus %s: read: %w", d.id, err)
	}
	if res.answered == 0 {
		return msg.Reading{}, fmt.Errorf("modbus %s: read: %s", d.id, res.firstErr)
	}
	at := res.at
	if at.IsZero() {
		at = time.Now()
	}
	return msg.Reading{Device: d.id, Time: at, Values: res.values, Errors: res.errs}, nil
}
