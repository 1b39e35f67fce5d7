package gpio

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Apply performs {"write":{NAME:VALUE,...}} or {"pulse":{NAME:DURATION,...}}
// on writable outputs.
//
// A write sets each point (true, false, 1, 0, "on", "off", "high", "low";
// Invert applies) and returns done with the values set. A pulse drives each
// point on (true) for its duration and then off, whatever it was before;
// Apply blocks until the longest pulse ends. If the device stops during a
// pulse, the pulse is cut short and the result is failed (not an error:
// repeating a half-done pulse is not safe to do blindly).
//
// Unknown points, inputs, outputs without writable, bad values, send
// commands and pulses longer than MaxPulse are rejected (wrapping
// adapters.ErrRejected) and nothing is actuated. Before Run has configured
// the pins, Apply fails with a retryable error.
func (d *Device) Apply(ctx context.Context, cmd msg.Command) (msg.Result, error) {
	switch {
	case cmd.Write != nil:
		return d.write(ctx, cmd.Write)
	case cmd.Pulse != nil:
		return d.pulse(ctx, cmd.Pulse)
	}
	return msg.Result{}, d.reject("only write and pulse commands are supported")
}

func (d *Device) reject(format string, args ...any) error {
	return fmt.Errorf("gpio %s: %s: %w", d.id, fmt.Sprintf(format, args...), adapters.ErrRejected)
}

// target checks that name is a writable output.
func (d *Device) target(name string) (*point, error) {
	p, ok := d.byName[name]
	switch {
	case !ok:
		return nil, d.reject("no point %q", name)
	case !p.isOut():
		return nil, d.reject("point %q is an input", name)
	case !p.cfg.Writable:
		return nil, d.reject("point %q is not writable", name)
	}
	return p, nil
}

// running returns the channel closed when Run stops, or an error before
// Run has configured the pins.
func (d *Device) runningCh() (<-chan struct{}, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ready {
		return nil, fmt.Errorf("gpio %s: not running (%s)", d.id, d.detail)
	}
	return d.stopped, nil
}

// boolValue reads a command value as a point value.
func boolValue(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case float64:
		if x == 0 || x == 1 {
			return x == 1, true
		}
	case string:
		switch strings.ToLower(x) {
		case "on", "high", "true", "1":
			return true, true
		case "off", "low", "false", "0":
			return false, true
		}
	}
	return false, false
}

func (d *Device) write(ctx context.Context, w map[string]any) (msg.Result, error) {
	if len(w) == 0 {
		return msg.Result{}, d.reject("empty write")
	}
	type set struct {
		p *point
		v bool
	}
	var sets []set
	for name, raw := range w {
		p, err := d.target(name)
		if err != nil {
			return msg.Result{}, err
		}
		v, ok := boolValue(raw)
		if !ok {
			return msg.Result{}, d.reject("point %q: value %v is not true/false, 1/0, on/off or high/low", name, raw)
		}
		sets = append(sets, set{p, v})
	}
	if _, err := d.runningCh(); err != nil {
		return msg.Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return msg.Result{}, fmt.Errorf("gpio %s: write: %w", d.id, err)
	}
	vs := map[string]any{}
	for _, s := range sets {
		if err := s.p.set(s.v); err != nil {
			return msg.Result{}, fmt.Errorf("gpio %s: write %q: %w", d.id, s.p.cfg.Name, err)
		}
		vs[s.p.cfg.Name] = s.v
	}
	d.notify(time.Now(), vs)
	return msg.Result{Status: msg.StatusDone, Values: vs}, nil
}

// set drives an output to value v.
func (p *point) set(v bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.setLocked(p.level(v))
}

func (p *point) setLocked(l gpio.Level) error {
	if err := p.pin.Out(l); err != nil {
		return fmt.Errorf("pin %s: %w", p.cfg.Pin, err)
	}
	p.out.Store(bool(l))
	return nil
}

func (d *Device) pulse(ctx context.Context, pulses map[string]time.Duration) (msg.Result, error) {
	if len(pulses) == 0 {
		return msg.Result{}, d.reject("empty pulse")
	}
	type pulse struct {
		p *point
		d time.Duration
	}
	var ps []pulse
	for name, dur := range pulses {
		p, err := d.target(name)
		if err != nil {
			return msg.Result{}, err
		}
		if dur <= 0 || dur > MaxPulse {
			return msg.Result{}, d.reject("point %q: pulse of %v (want up to %v)", name, dur, MaxPulse)
		}
		ps = append(ps, pulse{p, dur})
	}
	stopped, err := d.runningCh()
	if err != nil {
		return msg.Result{}, err
	}
	slices.SortFunc(ps, func(a, b pulse) int { return int(a.d - b.d) })
	// Lock in name order so that two pulse commands cannot deadlock.
	locks := slices.Clone(ps)
	slices.SortFunc(locks, func(a, b pulse) int { return strings.Compare(a.p.cfg.Name, b.p.cfg.Name) })
	for _, l := range locks {
		l.p.mu.Lock()
	}
	start := time.Now()
	vs := map[string]any{}
	for i, x := range ps {
		if err := x.p.setLocked(x.p.level(true)); err != nil {
			for _, y := range ps[:i] {
				_ = y.p.setLocked(y.p.level(false))
			}
			for _, l := range locks {
				l.p.mu.Unlock()
			}
			return msg.Result{}, fmt.Errorf("gpio %s: pulse %q: %w", d.id, x.p.cfg.Name, err)
		}
		vs[x.p.cfg.Name] = true
	}
	d.notify(start, vs)
	var cut error
	offs := map[string]any{}
	for _, x := range ps {
		if cut == nil {
			t := time.NewTimer(time.Until(start.Add(x.d)))
			select {
			case <-t.C:
			case <-ctx.Done():
				cut = ctx.Err()
			case <-stopped:
				cut = fmt.Errorf("device stopped")
			}
			t.Stop()
		}
		if err := x.p.setLocked(x.p.level(false)); err != nil && cut == nil {
			cut = err
		}
		offs[x.p.cfg.Name] = false
	}
	for _, l := range locks {
		l.p.mu.Unlock()
	}
	d.notify(time.Now(), offs)
	if cut != nil {
		return msg.Result{Status: msg.StatusFailed, Error: fmt.Sprintf("pulse cut short after %v: %v", time.Since(start).Round(time.Millisecond), cut), Values: offs}, nil
	}
	return msg.Result{Status: msg.StatusDone, Values: offs}, nil
}

// applyFailsafe drives every output that has a failsafe level to it and
// returns the values set. It waits for a running pulse on the same point.
func (d *Device) applyFailsafe(why string) map[string]any {
	vs := map[string]any{}
	for _, p := range d.points {
		if !p.isOut() || p.cfg.Failsafe == "" {
			continue
		}
		l, _ := level(p.cfg.Failsafe, false)
		p.mu.Lock()
		err := p.setLocked(l)
		p.mu.Unlock()
		if err != nil {
			d.log.Error("gpio: failsafe level not applied", "point", p.cfg.Name, "pin", p.cfg.Pin, "err", err)
			continue
		}
		vs[p.cfg.Name] = p.value(l)
	}
	if len(vs) > 0 {
		d.log.Warn("gpio: outputs set to their failsafe levels", "why", why, "values", vs)
	}
	return vs
}
