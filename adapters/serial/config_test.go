package serial

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/config"
)

// decodeDevices parses a devices: list with the gateway's own config
// loader, which decodes each serial node strictly into NewConfig's
// defaults and places Validate's errors at FILE:LINE:COL.
func decodeDevices(t *testing.T, doc []byte) (map[string]*Config, error) {
	t.Helper()
	c, err := config.Parse("sample.yaml", append([]byte("gateway: {id: gw-test}\n"), doc...))
	if err != nil {
		return nil, err
	}
	out := map[string]*Config{}
	for _, d := range c.Devices {
		if d.Kind != "serial" {
			t.Fatalf("device %s has kind %q", d.ID, d.Kind)
		}
		out[d.ID] = d.Adapter.(*Config)
	}
	return out, nil
}

func TestSampleParsesAndValidates(t *testing.T) {
	devs, err := decodeDevices(t, Sample)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) < 6 {
		t.Fatalf("sample has %d devices, want 6", len(devs))
	}
	for id, c := range devs {
		if _, err := New(id, *c, nil); err != nil {
			t.Errorf("%s: New: %v", id, err)
		}
	}
	// Spot checks that the YAML means what the sample says.
	if got := devs["scale-1"].Framing.Idle; got != 50*time.Millisecond {
		t.Errorf("scale-1 idle = %v, want 50ms", got)
	}
	if m := devs["meter-2"]; m.Interval != 10*time.Second || m.Request != "R\r" || m.Parity != "E" || m.Baud != 19200 || m.Data != 8 || m.Parse.Scale["I"] != 0.001 {
		t.Errorf("meter-2 = %+v", m)
	}
	if got := Bytes(devs["dust-1"].Framing.Start); !bytes.Equal(got, []byte{0xaa}) {
		t.Errorf(`dust-1 start "\xAA" = % x, want aa`, got)
	}
	if got := devs["gps-1"].Parse.Fields["MWV"]; len(got) != 5 {
		t.Errorf("gps-1 fields = %v", got)
	}
	if got := devs["air-1"].Framing; got.Max != DefaultMax || string(got.delimiter()) != "\n" {
		t.Errorf("air-1 framing defaults = %+v", got)
	}
}

func TestLoaderPlacesErrors(t *testing.T) {
	doc := []byte(`devices:
  - id: bad-1
    serial:
      port: /dev/ttyUSB0
      baud: 9601
      framing: {delimiter: "\n", idle: 50ms}
      parse: {regex: 'T=([0-9.]+)'}
`)
	_, err := decodeDevices(t, doc)
	if err == nil {
		t.Fatal("a bad serial config parsed")
	}
	for _, want := range []string{
		"sample.yaml:6:13: devices[0].serial.baud: unsupported baud rate 9601",
		"sample.yaml:7:16: devices[0].serial.framing: set only one of delimiter, fixed and idle",
		"sample.yaml:8:22: devices[0].serial.parse.regex: needs at least one named group",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// TestGoccyDecodesDurations pins the one goccy/go-yaml behaviour the
// config types rely on: a time.Duration field takes "50ms", strictly.
func TestGoccyDecodesDurations(t *testing.T) {
	c := NewConfig()
	if err := yaml.UnmarshalWithOptions([]byte("port: /dev/x\nframing: {idle: 50ms}\ninterval: 1m30s\n"), c, yaml.Strict(), yaml.DisallowUnknownField()); err != nil {
		t.Fatal(err)
	}
	if c.Framing.Idle != 50*time.Millisecond || c.Interval != 90*time.Second || c.Framing.Max != DefaultMax {
		t.Errorf("decoded %+v", c)
	}
}

func TestDecodeIsStrict(t *testing.T) {
	c := NewConfig()
	err := yaml.NewDecoder(strings.NewReader("port: /dev/x\nframing: {delimiter: \"\\n\", maxlen: 3}\n"), yaml.Strict(), yaml.DisallowUnknownField()).Decode(c)
	if err == nil || !strings.Contains(err.Error(), "maxlen") {
		t.Fatalf("unknown key decoded: %v", err)
	}
	err = yaml.NewDecoder(strings.NewReader("port: /dev/x\ninterval: 5\n"), yaml.Strict(), yaml.DisallowUnknownField()).Decode(NewConfig())
	if err == nil {
		t.Fatal("interval: 5 (no unit) decoded without error")
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c := NewConfig()
	c.Baud = 9601
	c.Data = 9
	c.Parity = "X"
	c.Stop = 3
	c.Framing = Framing{Delimiter: "\n", Idle: time.Second, Max: 0}
	c.Parse = Parse{Regex: `(unnamed`, KV: true, Raw: "hex", Fields: map[string][]string{"mwv": {""}}, Scale: map[string]float64{"t": 0}}
	c.Request = "R"
	c.Interval = time.Millisecond
	err := c.Validate()
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var fe *adapters.FieldError
		if !errors.As(e, &fe) {
			t.Errorf("not a FieldError: %v", e)
			continue
		}
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	want := []string{"baud", "data", "framing", "framing.max", "interval", "parity", "parse", "parse.fields", "parse.fields.mwv", "parse.fields.mwv[0]", "parse.raw", "parse.regex", "parse.scale.t", "port", "stop"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths = %q\nwant    %q\n%v", paths, want, err)
	}

	c = NewConfig()
	c.Port = "/dev/x"
	c.Parse.Regex = `T=(\d+)`
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "named group") {
		t.Errorf("regex without a named group: %v", err)
	}
	c.Parse.Regex = `T=(?P<t>\d+)`
	c.Parse.Scale = map[string]float64{"h": 2}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `parse.scale.h: no group named "h"`) {
		t.Errorf("scale of an unknown group: %v", err)
	}
	c.Parse.Scale = nil
	c.Framing = Framing{Start: "\u00aa\u0001", Fixed: 1, Max: 10}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "framing.start") {
		t.Errorf("start longer than fixed: %v", err)
	}
	if _, err := New("d", *c, nil); err == nil {
		t.Error("New took an invalid config")
	}
}
