// Package gpio is the adapter kind "gpio": pins as named points. Inputs
// report their state changes (edge-triggered, debounced) or count pulses;
// outputs take {"write":{...}} and {"pulse":{...}} commands and fall back to a
// failsafe level when the gateway stops or its upstream link has been down
// too long. A periodic report carries every point's state.
//
// Pins are found by name in periph.io's registry (GPIO17), so one config
// works across boards; on a machine without that pin the device fails to
// build with an error naming it.
//
// A Device implements the optional adapters.HealthReporter,
// adapters.LinkObserver (for the failsafe) and io.Closer.
package gpio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func init() {
	adapters.Register(adapters.Kind{
		Name:      "gpio",
		NewConfig: func() adapters.Config { return NewConfig() },
		New: func(device string, cfg adapters.Config, log *slog.Logger) (adapters.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("gpio: config is %T, want *gpio.Config", cfg)
			}
			return New(device, *c, log)
		},
	})
}

var (
	_ adapters.Source         = (*Device)(nil)
	_ adapters.Sink           = (*Device)(nil)
	_ adapters.HealthReporter = (*Device)(nil)
	_ adapters.LinkObserver   = (*Device)(nil)
	_ io.Closer               = (*Device)(nil)
)

// edgePoll bounds each wait for an edge, so watchers notice shutdown.
const edgePoll = 200 * time.Millisecond

var (
	hostOnce sync.Once
	hostErr  error
)

// Device is one GPIO device: an adapters.Source and adapters.Sink.
type Device struct {
	id     string
	cfg    Config
	log    *slog.Logger
	points []*point
	byName map[string]*point

	running atomic.Bool
	closed  chan struct{}
	closeMu sync.Once
	changes chan change // watchers and commands -> Run's loop

	mu      sync.Mutex
	ready   bool // pins configured; commands may run
	stopped chan struct{}
	state   adapters.Health
	detail  string

	linkMu    sync.Mutex
	linkUp    bool
	linkSince time.Time
	linkCh    chan struct{}
}

// point is one configured pin with its runtime state.
type point struct {
	cfg  Point
	pin  gpio.PinIO
	edge gpio.Edge

	mu  sync.Mutex  // serialises output changes: write, pulse, failsafe
	out atomic.Bool // last level written (outputs)

	count atomic.Uint64 // pulses (counters)
	// owned by Run's loop: the previous report, for the rate
	lastCount uint64
	lastAt    time.Time
}

// change is a state change to report.
type change struct {
	at     time.Time
	values map[string]any
}

// New looks up every point's pin (initialising periph.io's host drivers
// once) and returns the device. It fails, naming the point and pin, when a
// pin does not exist on this machine. Pins are configured by Run. log may be
// nil.
func New(device string, cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gpio %s: %w", device, err)
	}
	hostOnce.Do(func() { _, hostErr = host.Init() })
	if hostErr != nil {
		return nil, fmt.Errorf("gpio %s: initialise GPIO drivers: %w", device, hostErr)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{
		id: device, cfg: cfg, log: log.With("device", device),
		byName:  map[string]*point{},
		closed:  make(chan struct{}),
		changes: make(chan change, 64),
		state:   adapters.Down, detail: "not started",
		linkUp: true, linkCh: make(chan struct{}, 1),
	}
	var errs []error
	for _, pc := range cfg.Points {
		pin := gpioreg.ByName(pc.Pin)
		if pin == nil {
			errs = append(errs, fmt.Errorf("gpio %s: point %q: no pin %q on this machine (it has %d GPIO pins)", device, pc.Name, pc.Pin, len(gpioreg.All())))
			continue
		}
		p := &point{cfg: pc, pin: pin}
		p.edge, _ = edge(pc.Edge)
		if pc.Direction == "out" {
			p.edge = gpio.NoEdge
		}
		d.points = append(d.points, p)
		d.byName[pc.Name] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

func (p *point) isOut() bool { return p.cfg.Direction == "out" }

// value turns a level into the point's value (Invert applied).
func (p *point) value(l gpio.Level) bool { return bool(l) != p.cfg.Invert }

// level turns a point value into the pin level.
func (p *point) level(v bool) gpio.Level { return gpio.Level(v != p.cfg.Invert) }

// Health implements adapters.HealthReporter: adapters.Up while Run has the
// pins configured, adapters.Down with the reason otherwise. Safe for
// concurrent use.
func (d *Device) Health() (state adapters.Health, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, d.detail
}

func (d *Device) setHealth(state adapters.Health, detail string) {
	d.mu.Lock()
	d.state, d.detail = state, detail
	d.mu.Unlock()
}

// SetLinkState implements adapters.LinkObserver: it tells the device
// whether the upstream link is up, and since when. With failsafe_after set,
// outputs with a failsafe level are driven to it once the link has been
// down that long (measured from since); they stay there when the link
// returns, until a command changes them. The link counts as up until told otherwise. Safe for concurrent use,
// at any time; repeated calls with the same state are harmless.
func (d *Device) SetLinkState(up bool, since time.Time) {
	d.linkMu.Lock()
	d.linkUp, d.linkSince = up, since
	d.linkMu.Unlock()
	select {
	case d.linkCh <- struct{}{}:
	default:
	}
}

func (d *Device) link() (bool, time.Time) {
	d.linkMu.Lock()
	defer d.linkMu.Unlock()
	return d.linkUp, d.linkSince
}

// Close stops a running Run, which applies the failsafe levels and returns
// nil. Safe to call more than once, and without Run.
func (d *Device) Close() error {
	d.closeMu.Do(func() { close(d.closed) })
	return nil
}

// Run configures the pins (inputs with their pull and edge detection,
// outputs at their initial level), reports every point at once and then
// every interval, reports input changes as they happen, and watches the
// link for the failsafe. It returns nil when ctx is done or Close is
// called, after driving outputs to their failsafe levels. A pin that cannot
// be configured is fatal (the error names it). A reading the emitter
// refuses is not: state changes are reported again in the next periodic
// report, and counters are cumulative.
func (d *Device) Run(ctx context.Context, out adapters.Emitter) error {
	if !d.running.CompareAndSwap(false, true) {
		return fmt.Errorf("gpio %s: Run called twice", d.id)
	}
	defer d.running.Store(false)
	if err := d.configure(); err != nil {
		d.setHealth(adapters.Down, err.Error())
		return err
	}
	for len(d.changes) > 0 { // left over from a previous Run
		<-d.changes
	}
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	d.mu.Lock()
	d.ready, d.stopped, d.state, d.detail = true, stopped, adapters.Up, ""
	d.mu.Unlock()
	var wg sync.WaitGroup
	defer func() {
		cancel()
		close(stopped) // cuts pulses short
		wg.Wait()
		d.mu.Lock()
		d.ready = false
		d.mu.Unlock()
		d.applyFailsafe("gateway stopping")
		d.release()
		d.setHealth(adapters.Down, "stopped")
	}()
	for _, p := range d.points {
		if !p.isOut() && p.edge != gpio.NoEdge {
			wg.Go(func() { d.watch(ctx, p) })
		}
	}
	e := &emitter{d: d, out: out}
	e.emit(ctx, d.report(time.Now()))
	tick := time.NewTicker(d.cfg.Interval)
	defer tick.Stop()
	failsafe := time.NewTimer(time.Hour)
	failsafe.Stop()
	defer failsafe.Stop()
	d.linkChanged(failsafe, false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.closed:
			return nil
		case c := <-d.changes:
			e.emit(ctx, msg.Reading{Device: d.id, Time: c.at, Values: c.values})
		case now := <-tick.C:
			e.emit(ctx, d.report(now))
		case <-d.linkCh:
			d.linkChanged(failsafe, true)
		case now := <-failsafe.C:
			if up, since := d.link(); !up {
				vs := d.applyFailsafe(fmt.Sprintf("upstream link down since %s", since.Format(time.RFC3339)))
				if len(vs) > 0 {
					e.emit(ctx, msg.Reading{Device: d.id, Time: now, Values: vs})
				}
			}
		}
	}
}

// linkChanged (re)arms the failsafe timer from the link state.
func (d *Device) linkChanged(t *time.Timer, logUp bool) {
	t.Stop()
	up, since := d.link()
	if up {
		if logUp {
			d.log.Debug("gpio: upstream link up")
		}
		return
	}
	if d.cfg.FailsafeAfter > 0 {
		t.Reset(max(0, time.Until(since.Add(d.cfg.FailsafeAfter))))
	}
}

// configure sets every pin up; an error names the point and pin.
func (d *Device) configure() error {
	for _, p := range d.points {
		if p.isOut() {
			l := p.pin.Read()
			if p.cfg.Initial != "" {
				l, _ = level(p.cfg.Initial, false)
			}
			if err := p.pin.Out(l); err != nil {
				return fmt.Errorf("gpio %s: point %q: set pin %s to output %s: %w", d.id, p.cfg.Name, p.cfg.Pin, l, err)
			}
			p.out.Store(bool(l))
			continue
		}
		pl, _ := pull(p.cfg.Pull)
		if err := p.pin.In(pl, p.edge); err != nil {
			return fmt.Errorf("gpio %s: point %q: set pin %s to input (pull %s, %s): %w", d.id, p.cfg.Name, p.cfg.Pin, pl, p.edge, err)
		}
	}
	return nil
}

// release turns edge detection off on the inputs, so a device built from a
// reloaded config can take the pins over.
func (d *Device) release() {
	for _, p := range d.points {
		if !p.isOut() && p.edge != gpio.NoEdge {
			_ = p.pin.In(gpio.PullNoChange, gpio.NoEdge)
		}
	}
}

// report is the periodic state report: every point, and counters with
// their rate since the previous report.
func (d *Device) report(now time.Time) msg.Reading {
	vs := make(map[string]any, len(d.points))
	for _, p := range d.points {
		switch {
		case p.isOut():
			vs[p.cfg.Name] = p.value(gpio.Level(p.out.Load()))
		case p.cfg.Counter:
			n := p.count.Load()
			vs[p.cfg.Name] = n
			if !p.lastAt.IsZero() {
				if dt := now.Sub(p.lastAt).Seconds(); dt > 0 {
					vs[p.cfg.Name+"_rate"] = math.Round(float64(n-p.lastCount)/dt*1000) / 1000
				}
			}
			p.lastCount, p.lastAt = n, now
		default:
			vs[p.cfg.Name] = p.value(p.pin.Read())
		}
	}
	return msg.Reading{Device: d.id, Time: now, Values: vs}
}

// emitter emits readings, logging a refusing gateway once per episode.
type emitter struct {
	d       *Device
	out     adapters.Emitter
	failing bool
}

func (e *emitter) emit(ctx context.Context, r msg.Reading) {
	if err := e.out.Emit(ctx, r); err != nil {
		if !e.failing && ctx.Err() == nil {
			e.d.log.Warn("gpio readings refused by the gateway; the periodic report will catch up", "err", err)
		}
		e.failing = true
		return
	}
	if e.failing {
		e.d.log.Info("gpio readings accepted again")
		e.failing = false
	}
}

// notify hands a state change to Run's loop without blocking; when the
// loop is behind, the periodic report carries the state.
func (d *Device) notify(at time.Time, vs map[string]any) {
	select {
	case d.changes <- change{at: at, values: vs}:
	default:
	}
}

// Points implements adapters.PointLister: every configured pin, the
// outputs with writable set being writable.
func (d *Device) Points() []adapters.Point {
	ps := make([]adapters.Point, len(d.cfg.Points))
	for i, p := range d.cfg.Points {
		ps[i] = adapters.Point{Name: p.Name, Writable: p.Writable}
	}
	return ps
}
