package gpio

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/config"
)

// TestSampleParsesAndValidates parses sample.yaml with the gateway's config
// loader (strict decoding into NewConfig's defaults, then Validate), and
// builds each device against fake pins registered under the sample's names.
func TestSampleParsesAndValidates(t *testing.T) {
	c, err := config.Parse("sample.yaml", append([]byte("gateway: {id: gw-test}\n"), Sample...))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Devices) != 3 {
		t.Fatalf("%d devices, want 3", len(c.Devices))
	}
	for _, name := range []string{"GPIO17", "GPIO27", "GPIO22", "GPIO5", "GPIO6"} {
		if gpioreg.ByName(name) != nil {
			t.Skipf("this machine has a real %s; not shadowing it", name)
		}
		if err := gpioreg.Register(&gpiotest.Pin{N: name, EdgesChan: make(chan gpio.Level)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = gpioreg.Unregister(name) })
	}
	byID := map[string]*Config{}
	for _, d := range c.Devices {
		cfg := d.Adapter.(*Config)
		byID[d.ID] = cfg
		if _, err := New(d.ID, *cfg, nil); err != nil {
			t.Errorf("%s: %v", d.ID, err)
		}
	}
	door := byID["door-1"]
	if door.Interval != DefaultInterval || door.FailsafeAfter != 5*time.Minute || door.Points[0].Debounce != 50*time.Millisecond {
		t.Errorf("door-1 = %+v", door)
	}
	if p := byID["panel-1"].Points[1]; !p.Invert || p.Failsafe != "high" || !p.Writable {
		t.Errorf("panel-1 siren = %+v", p)
	}
}

func TestGoccyDecodesDurations(t *testing.T) {
	c := NewConfig()
	doc := "points: [{name: d, pin: X, debounce: 50ms}]\nfailsafe_after: 5m\n"
	if err := yaml.UnmarshalWithOptions([]byte(doc), c, yaml.Strict(), yaml.DisallowUnknownField()); err != nil {
		t.Fatal(err)
	}
	if c.Points[0].Debounce != 50*time.Millisecond || c.FailsafeAfter != 5*time.Minute || c.Interval != DefaultInterval {
		t.Errorf("decoded %+v", c)
	}
}

func TestLoaderPlacesErrors(t *testing.T) {
	doc := `gateway: {id: gw-test}
devices:
  - id: io-1
    gpio:
      points:
        - {name: door, pin: GPIO17, edge: sideways}
        - {name: relay, pin: GPIO17, direction: out, failsafe: off}
`
	_, err := config.Parse("io.yaml", []byte(doc))
	if err == nil {
		t.Fatal("a bad gpio config parsed")
	}
	for _, want := range []string{
		"io.yaml:6:43: devices[0].gpio.points[0].edge: must be both, rising, falling or none",
		"io.yaml:7:30: devices[0].gpio.points[1].pin: GPIO17 is also used by points[0]",
		"io.yaml:7:64: devices[0].gpio.points[1].failsafe: must be low or high",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := &Config{Interval: time.Millisecond, FailsafeAfter: time.Minute, Points: []Point{
		{Name: "", Pin: ""},
		{Name: "a", Pin: "P1", Direction: "sideways"},
		{Name: "a", Pin: "p1", Edge: "both", Counter: true, Pull: "strong", Debounce: time.Hour, Writable: true},
		{Name: "o", Pin: "P2", Direction: "out", Initial: "on", Edge: "rising"},
		{Name: "c", Pin: "P3", Edge: "rising", Counter: true},
		{Name: "c_rate", Pin: "P4"},
	}}
	var paths []string
	for _, e := range c.Validate().(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("not a FieldError: %v", e)
		}
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	want := []string{"failsafe_after", "interval",
		"points[0].name", "points[0].pin", "points[1].direction",
		"points[2].debounce", "points[2].edge", "points[2].name", "points[2].pin", "points[2].pull", "points[2].writable",
		"points[3].edge", "points[3].initial", "points[4].name"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths = %q\nwant    %q", paths, want)
	}
	if err := (&Config{Interval: time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "points: at least one") {
		t.Errorf("no points: %v", err)
	}
}
