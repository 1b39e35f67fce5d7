package modbus

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/modbus/codec"
)

// decode decodes a devices[].modbus node the way the config loader does:
// strictly, onto NewConfig's defaults.
func decode(t *testing.T, src string) (*Config, error) {
	t.Helper()
	c := NewConfig()
	err := yaml.UnmarshalWithOptions([]byte(src), c, yaml.Strict(), yaml.DisallowUnknownField())
	return c, err
}

func TestSampleParsesAndValidates(t *testing.T) {
	var doc struct {
		Devices []struct {
			ID     string `yaml:"id"`
			Modbus any    `yaml:"modbus"`
		} `yaml:"devices"`
	}
	if err := yaml.Unmarshal([]byte(Sample), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Devices) != 3 {
		t.Fatalf("sample has %d devices, want 3", len(doc.Devices))
	}
	for _, d := range doc.Devices {
		raw, err := yaml.Marshal(d.Modbus)
		if err != nil {
			t.Fatal(err)
		}
		c, err := decode(t, string(raw))
		if err != nil {
			t.Fatalf("%s: decode: %v", d.ID, err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", d.ID, err)
		}
		if _, err := New(d.ID, c, nil); err != nil {
			t.Errorf("%s: New: %v", d.ID, err)
		}
	}
}

// TestDecodeTypes checks that goccy decodes durations from "5s", pointers
// for scale and bit, and keeps defaults for absent keys.
func TestDecodeTypes(t *testing.T) {
	c, err := decode(t, `
url: tcp://127.0.0.1
timeout: 250ms
max_gap: 0
points:
  - {name: a, address: 3, type: bool, bit: 0, interval: 1m30s}
  - {name: b, address: 4, scale: 0.1, heartbeat: 10m}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Interval != DefaultInterval || c.Timeout != 250*time.Millisecond || c.MaxGap != 0 || c.Unit != 1 {
		t.Errorf("decoded %+v", c)
	}
	if c.Points[0].Bit == nil || *c.Points[0].Bit != 0 || c.Points[0].Interval != 90*time.Second {
		t.Errorf("point a %+v", c.Points[0])
	}
	if c.Points[1].Scale == nil || *c.Points[1].Scale != 0.1 || c.Points[1].Heartbeat != 10*time.Minute {
		t.Errorf("point b %+v", c.Points[1])
	}
	d, err := c.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if d.bus.addr != "127.0.0.1:502" || d.points[1].Type != codec.Uint16 || d.points[1].table != tableHolding {
		t.Errorf("resolved %+v %+v", d.bus, d.points[1])
	}
	if _, err := decode(t, "url: tcp://h\nadress: 1\n"); err == nil {
		t.Error("an unknown key decoded without error")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   string
		paths []string
	}{
		{"url missing", "points: [{name: a}]", []string{"url"}},
		{"scheme", "url: http://x\npoints: [{name: a}]", []string{"url"}},
		{"query", "url: rtu:///dev/ttyS0?speed=9600\npoints: [{name: a}]", []string{"url"}},
		{"baud", "url: rtu:///dev/ttyS0?baud=fast\npoints: [{name: a}]", []string{"url"}},
		{"unit 0 on a line", "url: rtu:///dev/ttyS0\nunit: 0\npoints: [{name: a}]", []string{"unit"}},
		{"no points", "url: tcp://h", []string{"points"}},
		{"three at once", `
url: tcp://h
interval: 0s
points:
  - {name: a, type: float16}
  - {name: a, table: coil, bit: 2}
`, []string{"interval", "points[0].type", "points[1].bit", "points[1].name"}},
		{"string length", "url: tcp://h\npoints: [{name: s, type: string}]", []string{"points[0].length"}},
		{"length on a number", "url: tcp://h\npoints: [{name: s, length: 2}]", []string{"points[0].length"}},
		{"writable input", "url: tcp://h\npoints: [{name: i, table: input, writable: true}]", []string{"points[0].writable"}},
		{"scale 0", "url: tcp://h\npoints: [{name: s, scale: 0}]", []string{"points[0].scale"}},
		{"deadband on bool", "url: tcp://h\npoints: [{name: c, table: coil, deadband: 1}]", []string{"points[0].deadband"}},
		{"order on coil", "url: tcp://h\npoints: [{name: c, table: coil, order: CDAB}]", []string{"points[0].order"}},
		{"bad order", "url: tcp://h\npoints: [{name: c, order: ACBD}]", []string{"points[0].order"}},
		{"bool without bit", "url: tcp://h\npoints: [{name: c, type: bool}]", []string{"points[0].bit"}},
		{"bit range", "url: tcp://h\npoints: [{name: c, type: bool, bit: 16}]", []string{"points[0].bit"}},
		{"address base", "url: tcp://h\naddress_base: 1\npoints: [{name: c, address: 0}]", []string{"points[0].address"}},
		{"address end", "url: tcp://h\npoints: [{name: c, address: 65535, type: float32}]", []string{"points[0].address"}},
		{"max_gap", "url: tcp://h\nmax_gap: 200\npoints: [{name: c}]", []string{"max_gap"}},
		{"table", "url: tcp://h\npoints: [{name: c, table: holdings}]", []string{"points[0].table"}},
		{"coil type", "url: tcp://h\npoints: [{name: c, table: coil, type: int16}]", []string{"points[0].type"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := decode(t, tc.src)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			err = c.Validate()
			var got []string
			for _, e := range unjoin(err) {
				var fe *adapters.FieldError
				if !errors.As(e, &fe) {
					t.Errorf("%v is not a FieldError", e)
					continue
				}
				got = append(got, fe.Path)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.paths))
			if !slices.Equal(got, want) {
				t.Errorf("paths %q, want %q\n%v", got, want, err)
			}
		})
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		url, key, str string
		gap           time.Duration
	}{
		{"tcp://10.0.0.7", "tcp:10.0.0.7:502", "tcp://10.0.0.7:502", 0},
		{"tcp://[::1]:1502", "tcp:[::1]:1502", "tcp://[::1]:1502", 0},
		{"rtuovertcp://gw:4001", "tcp:gw:4001", "rtuovertcp://gw:4001", 0},
		{"rtu:///dev/ttyUSB0", "serial:/dev/ttyUSB0", "rtu:///dev/ttyUSB0?baud=9600&parity=N&data=8&stop=1", 3645833 * time.Nanosecond},
		{"rtu:///dev/ttyUSB0?baud=19200&parity=E&stop=1", "serial:/dev/ttyUSB0", "rtu:///dev/ttyUSB0?baud=19200&parity=E&data=8&stop=1", 2005208 * time.Nanosecond},
		{"rtu:///dev/ttyUSB0?baud=115200", "serial:/dev/ttyUSB0", "rtu:///dev/ttyUSB0?baud=115200&parity=N&data=8&stop=1", 1750 * time.Microsecond},
		{"ascii:///dev/ttyS1", "serial:/dev/ttyS1", "ascii:///dev/ttyS1?baud=9600&parity=E&data=7&stop=1", 3645833 * time.Nanosecond},
	} {
		s, err := parseURL(tc.url)
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		if s.key() != tc.key || s.String() != tc.str || s.frameGap() != tc.gap {
			t.Errorf("%s: key %q, string %q, gap %v; want %q, %q, %v", tc.url, s.key(), s.String(), s.frameGap(), tc.key, tc.str, tc.gap)
		}
	}
	for _, bad := range []string{"", "tcp://", "tcp://h/x", "rtu://host/dev/x", "rtu:///d?parity=X", "rtu:///d?data=9", "rtu:///d?stop=3", "udp://h"} {
		if _, err := parseURL(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestBusConflict(t *testing.T) {
	a, err := Acquire("rtu:///dev/outpost-test-nonexistent?baud=9600", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	if _, err := Acquire("rtu:///dev/outpost-test-nonexistent?baud=19200", nil); err == nil || !strings.Contains(err.Error(), "conflicts") {
		t.Errorf("a second baud rate on one port: %v", err)
	}
	b, err := Acquire("rtu:///dev/outpost-test-nonexistent?baud=9600", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("two devices on one port got two buses")
	}
	b.Release()
	// A symlink to the port (as in /dev/serial/by-id) is the same bus.
	dir := t.TempDir()
	if err := os.Symlink("/dev/null", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	x, err := Acquire("rtu:///dev/null", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Release()
	y, err := Acquire("rtu://"+filepath.Join(dir, "link"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer y.Release()
	if x != y {
		t.Error("a symlink to a port got its own bus")
	}
}
