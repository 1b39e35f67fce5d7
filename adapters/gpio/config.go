package gpio

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/outpost-iot/outpost/adapters"
)

// Sample is a commented example of GPIO devices (sample.yaml), checked by
// the tests to parse and validate.
//
//go:embed sample.yaml
var Sample []byte

// Defaults and limits.
const (
	DefaultInterval = time.Minute
	MaxDebounce     = 10 * time.Second
	// MaxPulse is the longest {"pulse":...} accepted.
	MaxPulse = 10 * time.Minute
)

// Config is one GPIO device (devices[].gpio): a set of pins, each a named
// point. Decode YAML into the value NewConfig returns, then Validate.
type Config struct {
	Points []Point `yaml:"points"`
	// Interval is the period of the state report (every point's level and
	// every counter with its rate). Default 1m.
	Interval time.Duration `yaml:"interval"`
	// FailsafeAfter: when the upstream link has been down this long, every
	// output with a failsafe level is driven to it. 0 (the default) turns
	// the link-down failsafe off; the failsafe on stop still applies.
	FailsafeAfter time.Duration `yaml:"failsafe_after"`
}

// Point is one pin.
type Point struct {
	// Name is the value's name in readings and commands. Required.
	Name string `yaml:"name"`
	// Pin is the pin's name in periph.io's registry: GPIO17, P1_11, or a
	// number. Required.
	Pin string `yaml:"pin"`
	// Direction is in (default) or out.
	Direction string `yaml:"direction"`
	// Invert makes the point's value the opposite of the pin's level (for
	// active-low contacts and relays): true means low. Levels in the config
	// (initial, failsafe) are always the pin's electrical level.
	Invert bool `yaml:"invert"`

	// Inputs.

	// Edge is the edge that makes a reading: both (default), rising,
	// falling, or none (the point is only in the periodic report).
	Edge string `yaml:"edge"`
	// Pull is up, down or none; unset leaves the pin's pull as it is.
	Pull string `yaml:"pull"`
	// Debounce: after an edge, further edges within this window are
	// bounces and are ignored; the level is read when the window ends.
	Debounce time.Duration `yaml:"debounce"`
	// Counter counts pulses (edges, rising or falling) instead of reporting
	// each; the periodic report carries NAME (count since start) and
	// NAME_rate (pulses per second since the previous report).
	Counter bool `yaml:"counter"`

	// Outputs.

	// Initial is the level set at start: low or high; unset keeps the
	// pin's current level.
	Initial string `yaml:"initial"`
	// Writable allows {"write":{NAME:true}} and {"pulse":{NAME:"500ms"}}.
	Writable bool `yaml:"writable"`
	// Failsafe is the level (low or high) set when the gateway stops or
	// the upstream link has been down for FailsafeAfter.
	Failsafe string `yaml:"failsafe"`
}

// NewConfig returns a Config holding the defaults.
func NewConfig() *Config { return &Config{Interval: DefaultInterval} }

// Validate implements adapters.Config: every problem at once, each an
// *adapters.FieldError with a path below the gpio key.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, adapters.Errorf(path, format, args...)) }
	if len(c.Points) == 0 {
		add("points", "at least one point is required")
	}
	if c.Interval < 100*time.Millisecond {
		add("interval", "must be at least 100ms, got %v", c.Interval)
	}
	if c.FailsafeAfter < 0 {
		add("failsafe_after", "must not be negative")
	}
	names := map[string]int{}
	pins := map[string]int{}
	anyFailsafe := false
	for i, p := range c.Points {
		at := func(k string) string { return fmt.Sprintf("points[%d].%s", i, k) }
		if p.Name == "" {
			add(at("name"), "required")
		} else if j, dup := names[p.Name]; dup {
			add(at("name"), "%q is also points[%d]", p.Name, j)
		} else {
			names[p.Name] = i
		}
		if p.Pin == "" {
			add(at("pin"), "required: a pin name such as GPIO17")
		} else if j, dup := pins[strings.ToUpper(p.Pin)]; dup {
			add(at("pin"), "%s is also used by points[%d]", p.Pin, j)
		} else {
			pins[strings.ToUpper(p.Pin)] = i
		}
		switch p.Direction {
		case "", "in":
			if _, err := edge(p.Edge); err != nil {
				add(at("edge"), "%v", err)
			}
			if _, err := pull(p.Pull); err != nil {
				add(at("pull"), "%v", err)
			}
			if p.Debounce < 0 || p.Debounce > MaxDebounce {
				add(at("debounce"), "must be between 0 and %v, got %v", MaxDebounce, p.Debounce)
			}
			if p.Counter && p.Edge != "rising" && p.Edge != "falling" {
				add(at("edge"), "a counter needs edge: rising or falling")
			}
			for k, set := range map[string]bool{"initial": p.Initial != "", "writable": p.Writable, "failsafe": p.Failsafe != ""} {
				if set {
					add(at(k), "only for direction: out")
				}
			}
		case "out":
			if _, err := level(p.Initial, true); err != nil {
				add(at("initial"), "%v", err)
			}
			if _, err := level(p.Failsafe, true); err != nil {
				add(at("failsafe"), "%v", err)
			}
			anyFailsafe = anyFailsafe || p.Failsafe != ""
			for k, set := range map[string]bool{"edge": p.Edge != "", "pull": p.Pull != "", "debounce": p.Debounce != 0, "counter": p.Counter} {
				if set {
					add(at(k), "only for direction: in")
				}
			}
		default:
			add(at("direction"), "must be in or out, got %q", p.Direction)
		}
	}
	for i, p := range c.Points {
		if _, clash := names[p.Name+"_rate"]; p.Counter && clash {
			add(fmt.Sprintf("points[%d].name", i), "counter %q reports %s_rate, which is also a point", p.Name, p.Name)
		}
	}
	if c.FailsafeAfter > 0 && !anyFailsafe {
		add("failsafe_after", "no output has a failsafe level")
	}
	return errors.Join(errs...)
}

func edge(s string) (gpio.Edge, error) {
	switch s {
	case "", "both":
		return gpio.BothEdges, nil
	case "rising":
		return gpio.RisingEdge, nil
	case "falling":
		return gpio.FallingEdge, nil
	case "none":
		return gpio.NoEdge, nil
	}
	return 0, fmt.Errorf("must be both, rising, falling or none, got %q", s)
}

func pull(s string) (gpio.Pull, error) {
	switch s {
	case "":
		return gpio.PullNoChange, nil
	case "up":
		return gpio.PullUp, nil
	case "down":
		return gpio.PullDown, nil
	case "none":
		return gpio.Float, nil
	}
	return 0, fmt.Errorf("must be up, down or none, got %q", s)
}

// level parses low or high; "" is accepted (as Low) when optional is set,
// for keys that may be left out.
func level(s string, optional bool) (gpio.Level, error) {
	switch s {
	case "low":
		return gpio.Low, nil
	case "high":
		return gpio.High, nil
	case "":
		if optional {
			return gpio.Low, nil
		}
	}
	return gpio.Low, fmt.Errorf("must be low or high, got %q", s)
}
