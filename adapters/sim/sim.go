// Package sim is a simulated field device for `outpost demo` and tests: a
// meter (like a Modbus energy meter) whose voltage, current and energy
// change over time, with a writable setpoint; or a sensor (like a serial
// line sensor) reporting temperature and humidity. It needs no hardware and
// no peer, so the whole gateway can be shown on any machine.
package sim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func init() {
	adapters.Register(adapters.Kind{
		Name:      "sim",
		NewConfig: func() adapters.Config { return &Config{Interval: time.Second, Setpoint: 20} },
		New: func(device string, cfg adapters.Config, log *slog.Logger) (adapters.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("sim: config is %T, want *sim.Config", cfg)
			}
			return New(device, *c), nil
		},
	})
}

// Config is a simulated device's configuration (devices[].sim).
type Config struct {
	Mode     string        `yaml:"mode"`     // "meter" (default) or "sensor"
	Interval time.Duration `yaml:"interval"` // time between readings (default 1s)
	Setpoint float64       `yaml:"setpoint"` // initial value of the writable setpoint
	// FailEvery makes every Nth poll report a failed "current" point, to
	// show how errors travel; 0 never fails.
	FailEvery int `yaml:"fail_every"`
}

// Validate implements adapters.Config.
func (c *Config) Validate() error {
	var errs []error
	if c.Interval < 10*time.Millisecond {
		errs = append(errs, adapters.Errorf("interval", "must be at least 10ms, got %v", c.Interval))
	}
	if c.Mode != "" && c.Mode != "meter" && c.Mode != "sensor" {
		errs = append(errs, adapters.Errorf("mode", "want meter or sensor, got %q", c.Mode))
	}
	if c.FailEvery < 0 {
		errs = append(errs, adapters.Errorf("fail_every", "must not be negative"))
	}
	return errors.Join(errs...)
}

// Meter is a simulated meter. It is a Source and a Sink.
type Meter struct {
	device string
	cfg    Config

	mu       sync.Mutex
	setpoint float64
	energy   float64
	polls    int
}

// New returns a meter for device.
func New(device string, cfg Config) *Meter {
	return &Meter{device: device, cfg: cfg, setpoint: cfg.Setpoint}
}

// Run emits one reading per interval until ctx is done. A failed Emit is
// not fatal: that reading is lost to the producer's side only (it was never
// acknowledged), and the next poll tries again.
func (m *Meter) Run(ctx context.Context, out adapters.Emitter) error {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		r := m.poll(time.Now())
		if err := out.Emit(ctx, r); err != nil && ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (m *Meter) poll(now time.Time) msg.Reading {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.polls++
	phase := float64(now.UnixMilli()%60000) / 60000 * 2 * math.Pi
	if m.cfg.Mode == "sensor" {
		return msg.Reading{Device: m.device, Time: now, Values: map[string]any{
			"temperature": math.Round((21+1.5*math.Sin(phase))*10) / 10,
			"humidity":    math.Round((45+5*math.Cos(phase))*10) / 10,
		}}
	}
	voltage := math.Round((230+3*math.Sin(phase))*10) / 10
	current := math.Round((5+2*math.Sin(phase*3))*100) / 100
	m.energy += voltage * current * m.cfg.Interval.Hours() / 1000
	r := msg.Reading{Device: m.device, Time: now, Values: map[string]any{
		"voltage":  voltage,
		"energy":   math.Round(m.energy*1000) / 1000,
		"setpoint": m.setpoint,
	}}
	if m.cfg.FailEvery > 0 && m.polls%m.cfg.FailEvery == 0 {
		r.Errors = map[string]string{"current": "sim: simulated timeout"}
	} else {
		r.Values["current"] = current
	}
	return r
}

// Apply writes the "setpoint" point; any other point is rejected, and a
// sensor takes no commands.
func (m *Meter) Apply(ctx context.Context, cmd msg.Command) (msg.Result, error) {
	if m.cfg.Mode == "sensor" {
		return msg.Result{}, fmt.Errorf("sim %s: a sensor takes no commands: %w", m.device, adapters.ErrRejected)
	}
	if cmd.Write == nil {
		return msg.Result{}, fmt.Errorf("sim %s: only write commands: %w", m.device, adapters.ErrRejected)
	}
	for k, v := range cmd.Write {
		if k != "setpoint" {
			return msg.Result{}, fmt.Errorf("sim %s: unknown or read-only point %q: %w", m.device, k, adapters.ErrRejected)
		}
		if _, ok := v.(float64); !ok {
			return msg.Result{}, fmt.Errorf("sim %s: setpoint wants a number, got %T: %w", m.device, v, adapters.ErrRejected)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setpoint = cmd.Write["setpoint"].(float64)
	return msg.Result{Status: msg.StatusDone, Values: map[string]any{"setpoint": m.setpoint}}, nil
}

// Points implements adapters.PointLister: a meter's voltage, current,
// energy and its writable setpoint, or a sensor's temperature and
// humidity.
func (m *Meter) Points() []adapters.Point {
	if m.cfg.Mode == "sensor" {
		return []adapters.Point{{Name: "temperature"}, {Name: "humidity"}}
	}
	return []adapters.Point{{Name: "voltage"}, {Name: "current"}, {Name: "energy"}, {Name: "setpoint", Writable: true}}
}
