package serial

import (
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outpost-iot/outpost/adapters"
)

// Sample is a commented example of a serial device (sample.yaml), checked by
// the tests to parse and validate.
//
//go:embed sample.yaml
var Sample []byte

// Defaults.
const (
	DefaultBaud     = 9600
	DefaultData     = 8
	DefaultParity   = "N"
	DefaultStop     = 1
	DefaultMax      = 4096
	DefaultInterval = 5 * time.Second
	// MaxFrame is the largest framing.max accepted.
	MaxFrame = 1 << 20
)

// Config is one serial device (devices[].serial). Decode YAML into the value
// NewConfig returns (it holds the defaults), then Validate.
type Config struct {
	// Port is the device path: a stable /dev/serial/by-id/... name or
	// /dev/ttyUSB0. Required.
	Port string `yaml:"port"`
	// Baud is the line speed. Default 9600.
	Baud int `yaml:"baud"`
	// Data is the number of data bits, 5 to 8. Default 8.
	Data int `yaml:"data"`
	// Parity is N, E or O (none, even, odd also accepted). Default N.
	Parity string `yaml:"parity"`
	// Stop is the number of stop bits, 1 or 2. Default 1.
	Stop int `yaml:"stop"`
	// Framing says where one frame ends. Default: a line ending in "\n"
	// (a trailing "\r" is dropped), at most 4096 bytes.
	Framing Framing `yaml:"framing"`
	// Parse turns a frame into named values. Default: raw text.
	Parse Parse `yaml:"parse"`
	// Request, when set, is written to the port every Interval, for sensors
	// that answer a query ("R\r", "*IDN?\n"). Escapes are YAML's: use a
	// double-quoted string.
	Request string `yaml:"request"`
	// Interval between requests. Default 5s; only used with Request.
	Interval time.Duration `yaml:"interval"`
}

// Framing cuts the byte stream into frames. At most one of Delimiter, Fixed
// and Idle ends a frame; Start may be combined with any of them.
type Framing struct {
	// Delimiter ends a frame (not part of it). When it is "\n", a "\r"
	// before it is dropped too, so "\r\n" lines work unchanged. Delimiter,
	// Start and Request are byte strings: see Bytes for "\xAA".
	Delimiter string `yaml:"delimiter"`
	// Fixed is the frame length in bytes, counting the Start marker.
	Fixed int `yaml:"fixed"`
	// Idle ends a frame after this much silence on the line. Gaps are seen
	// with a resolution of about 100 ms when no further byte arrives (the
	// serial read timeout), exactly when one does.
	Idle time.Duration `yaml:"idle"`
	// Start, when set, begins a frame and is kept in it; bytes before it
	// are noise and are dropped (and counted). With Delimiter or Idle, a
	// second Start inside a frame restarts the frame.
	Start string `yaml:"start"`
	// Max is the longest frame in bytes. A longer frame is dropped and
	// counted, and the stream resynchronises on the next frame boundary;
	// nothing is buffered beyond Max. Default 4096.
	Max int `yaml:"max"`
}

// Parse selects one parser. If none is set, frames are reported as raw text.
type Parse struct {
	// Regex with named groups, e.g. 'T=(?P<temperature>-?[0-9.]+)': each
	// group that matched becomes a value; numbers become numbers.
	Regex string `yaml:"regex"`
	// KV parses "T=21.5 H=40" or "T:21.5;H:40" (pairs split by spaces,
	// commas, semicolons or tabs; key and value by = or :).
	KV bool `yaml:"kv"`
	// JSON parses one JSON object per frame; nested objects become dotted
	// names ("env.t"), array items indexed names ("v.0").
	JSON bool `yaml:"json"`
	// NMEA parses NMEA 0183 sentences with a checksum check: GGA and RMC are
	// decoded to lat, lon, alt, ...; any other sentence gives its fields as
	// named by Fields, or f1..fN.
	NMEA bool `yaml:"nmea"`
	// Fields names the fields of other NMEA sentences by sentence type,
	// e.g. {MWV: [wind_angle, reference, wind_speed, unit, status]}.
	Fields map[string][]string `yaml:"fields"`
	// Raw reports the frame itself as the value "raw": text or base64.
	Raw string `yaml:"raw"`
	// Scale multiplies numeric values by name, e.g. {temperature: 0.1}.
	Scale map[string]float64 `yaml:"scale"`
}

// NewConfig returns a Config holding the defaults.
func NewConfig() *Config {
	return &Config{
		Baud:     DefaultBaud,
		Data:     DefaultData,
		Parity:   DefaultParity,
		Stop:     DefaultStop,
		Interval: DefaultInterval,
		Framing:  Framing{Max: DefaultMax},
	}
}

var bauds = []int{50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200,
	38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
	2000000, 2500000, 3000000, 3500000, 4000000}

// Validate implements adapters.Config: every problem at once, each an
// *adapters.FieldError with a path below the serial key.
func (c *Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, adapters.Errorf(path, format, args...)) }
	if strings.TrimSpace(c.Port) == "" {
		add("port", "required: the serial device, e.g. /dev/serial/by-id/usb-FTDI_... or /dev/ttyUSB0")
	}
	okBaud := false
	for _, b := range bauds {
		okBaud = okBaud || b == c.Baud
	}
	if !okBaud {
		add("baud", "unsupported baud rate %d (want a standard rate such as 9600, 19200, 115200)", c.Baud)
	}
	if c.Data < 5 || c.Data > 8 {
		add("data", "data bits must be 5 to 8, got %d", c.Data)
	}
	if _, err := parity(c.Parity); err != nil {
		add("parity", "%v", err)
	}
	if c.Stop != 1 && c.Stop != 2 {
		add("stop", "stop bits must be 1 or 2, got %d", c.Stop)
	}
	errs = append(errs, c.Framing.validate()...)
	errs = append(errs, c.Parse.validate()...)
	if c.Request != "" && c.Interval < 100*time.Millisecond {
		add("interval", "must be at least 100ms when request is set, got %v", c.Interval)
	}
	return errors.Join(errs...)
}

func (f *Framing) validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, adapters.Errorf(strings.TrimSuffix("framing."+path, "."), format, args...))
	}
	n := 0
	if f.Delimiter != "" {
		n++
	}
	if f.Fixed != 0 {
		n++
		if f.Fixed < 0 {
			add("fixed", "must be positive, got %d", f.Fixed)
		}
	}
	if f.Idle != 0 {
		n++
		if f.Idle < time.Millisecond || f.Idle > time.Minute {
			add("idle", "must be between 1ms and 1m, got %v", f.Idle)
		}
	}
	if n > 1 {
		add("", "set only one of delimiter, fixed and idle")
	}
	if f.Max < 1 || f.Max > MaxFrame {
		add("max", "must be between 1 and %d bytes, got %d", MaxFrame, f.Max)
	}
	if f.Fixed > f.Max && f.Max > 0 {
		add("fixed", "%d is longer than max (%d)", f.Fixed, f.Max)
	}
	if f.Fixed > 0 && len(Bytes(f.Start)) > f.Fixed {
		add("start", "start marker is longer than the fixed frame")
	}
	if len(Bytes(f.Delimiter)) > 16 || len(Bytes(f.Start)) > 16 {
		add("", "delimiter and start are limited to 16 bytes")
	}
	return errs
}

func (p *Parse) validate() []error {
	var errs []error
	add := func(path, format string, args ...any) {
		errs = append(errs, adapters.Errorf(strings.TrimSuffix("parse."+path, "."), format, args...))
	}
	var set []string
	if p.Regex != "" {
		set = append(set, "regex")
		re, err := regexp.Compile(p.Regex)
		if err != nil {
			add("regex", "%v", err)
		} else {
			names := 0
			for _, n := range re.SubexpNames() {
				if n != "" {
					names++
				}
			}
			if names == 0 {
				add("regex", "needs at least one named group, e.g. (?P<temperature>[0-9.]+)")
			}
			for k := range p.Scale {
				if re.SubexpIndex(k) < 0 {
					add("scale."+k, "no group named %q in the regex", k)
				}
			}
		}
	}
	if p.KV {
		set = append(set, "kv")
	}
	if p.JSON {
		set = append(set, "json")
	}
	if p.NMEA {
		set = append(set, "nmea")
	}
	if p.Raw != "" {
		set = append(set, "raw")
		if p.Raw != "text" && p.Raw != "base64" {
			add("raw", "must be text or base64, got %q", p.Raw)
		}
	}
	if len(set) > 1 {
		add("", "set only one parser, got %s", strings.Join(set, ", "))
	}
	if len(p.Fields) > 0 && !p.NMEA {
		add("fields", "only used with nmea: true")
	}
	for k, names := range p.Fields {
		if len(k) != 3 || strings.ToUpper(k) != k {
			add("fields."+k, "want a three-letter sentence type such as MWV or XDR")
		}
		for i, n := range names {
			if n == "" {
				add(fmt.Sprintf("fields.%s[%d]", k, i), "empty field name")
			}
		}
	}
	for k, v := range p.Scale {
		if v == 0 {
			add("scale."+k, "a scale of 0 would zero every value")
		}
	}
	return errs
}

// parity maps the config's parity to tarm's letter.
func parity(s string) (byte, error) {
	switch strings.ToLower(s) {
	case "n", "none":
		return 'N', nil
	case "e", "even":
		return 'E', nil
	case "o", "odd":
		return 'O', nil
	}
	return 0, fmt.Errorf("parity must be N, E or O (none, even, odd), got %q", s)
}

// delimiter returns the effective delimiter: "\n" when no framing is set.
func (f *Framing) delimiter() []byte {
	if f.Delimiter == "" && f.Fixed == 0 && f.Idle == 0 {
		return []byte("\n")
	}
	return Bytes(f.Delimiter)
}

// Bytes turns a config string into the bytes it stands for. YAML escapes
// name code points, so "\xAA" decodes to U+00AA; a string made only of code
// points up to U+00FF is therefore taken one byte per code point (the
// marker 0xAA, not its UTF-8 form). Any other string is used as UTF-8, and a
// string that is not valid UTF-8 (from Go code) as it is.
func Bytes(s string) []byte {
	if !utf8.ValidString(s) {
		return []byte(s)
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return []byte(s)
		}
		b = append(b, byte(r))
	}
	return b
}
