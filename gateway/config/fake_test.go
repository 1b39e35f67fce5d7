package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/outpost-iot/outpost/adapters"
)

// fakeConfig is a tiny adapter kind for tests, registered as "fake"; the
// real kinds (modbus, serial, gpio) live in their own packages.
type fakeConfig struct {
	URL      string        `yaml:"url"`
	Interval time.Duration `yaml:"interval"`
	Points   []fakePoint   `yaml:"points"`
	Label    fakeLabel     `yaml:"label"`
}

type fakePoint struct {
	Name    string `yaml:"name"`
	Type    string `yaml:"type"`
	Address int    `yaml:"address"`
}

// fakeLabel has its own unmarshaler, to test delegation to goccy.
type fakeLabel string

func (l *fakeLabel) UnmarshalText(b []byte) error {
	if string(b) == "bad" {
		return errors.New("label must not be bad")
	}
	*l = fakeLabel(b)
	return nil
}

func (c *fakeConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, adapters.Errorf("url", "url is required"))
	}
	if c.Interval <= 0 {
		errs = append(errs, adapters.Errorf("interval", "interval must be positive"))
	}
	for i, p := range c.Points {
		switch p.Type {
		case "int16", "float32":
		default:
			errs = append(errs, adapters.Errorf(fmt.Sprintf("points[%d].type", i), "unknown type %q", p.Type))
		}
	}
	if c.URL == "plain-error" {
		errs = append(errs, errors.New("fake: not a field error"))
	}
	return errors.Join(errs...)
}

// otherConfig is a second fake kind, "other", for the two-kinds case.
type otherConfig struct {
	Port string `yaml:"port"`
}

func (c *otherConfig) Validate() error { return nil }

type fakeSource struct{}

func (fakeSource) Run(ctx context.Context, _ adapters.Emitter) error { <-ctx.Done(); return nil }

func init() {
	adapters.Register(adapters.Kind{
		Name:      "fake",
		NewConfig: func() adapters.Config { return &fakeConfig{Interval: 5 * time.Second} },
		New: func(string, adapters.Config, *slog.Logger) (adapters.Source, error) {
			return fakeSource{}, nil
		},
	})
	adapters.Register(adapters.Kind{
		Name:      "other",
		NewConfig: func() adapters.Config { return &otherConfig{} },
		New: func(string, adapters.Config, *slog.Logger) (adapters.Source, error) {
			return fakeSource{}, nil
		},
	})
}
