package modbus

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/modbus/codec"
)

// Config is one device's devices[].modbus section. It is decoded strictly
// from YAML onto the defaults of NewConfig; Validate reports every problem
// at once. Config is only the file's view: New resolves it into runtime
// state and never changes it.
type Config struct {
	// URL is the transport: tcp://host:502, rtu:///dev/ttyUSB0?baud=9600&parity=N&data=8&stop=1,
	// rtuovertcp://host:port or ascii:///dev/ttyUSB0?baud=9600. Devices with
	// the same port (or host:port) share one bus.
	URL string `yaml:"url"`
	// Unit is the slave id (1..247 on a serial line; 0..255 over TCP).
	Unit int `yaml:"unit"`
	// Interval is how often the device is polled (default 5s).
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds each request (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// AddressBase is 0 (protocol addresses, the default) or 1 (the point
	// addresses count from 1, as many manuals do).
	AddressBase int `yaml:"address_base"`
	// MaxGap is how many unused registers (or coils) a request may bridge
	// to merge two points into one request (default 8; 0 merges only
	// adjacent points).
	MaxGap int `yaml:"max_gap"`
	// Turnaround is an extra pause after each reply before the bus sends
	// its next frame, for slow slaves and RS-485 converters (default 0).
	Turnaround time.Duration `yaml:"turnaround"`
	// BackoffMax caps the exponential back-off of a device that stopped
	// answering (default 30s, at least Interval).
	BackoffMax time.Duration `yaml:"backoff_max"`
	// Points is the register map.
	Points []Point `yaml:"points"`
}

// Point is one named value of the device.
type Point struct {
	Name string `yaml:"name"`
	// Table is coil, discrete, input or holding (default holding).
	Table string `yaml:"table"`
	// Address is the first register or bit, counted from AddressBase.
	Address int `yaml:"address"`
	// Type is bool, int16, uint16, int32, uint32, int64, uint64, float32,
	// float64 or string. Default bool for coil/discrete, uint16 otherwise.
	Type string `yaml:"type"`
	// Order is the byte/word order of a register value: ABCD (big endian,
	// the default), CDAB (word swapped), BADC (byte swapped), DCBA (little
	// endian). The 64-bit spellings ABCDEFGH, GHEFCDAB, BADCFEHG, HGFEDCBA
	// and the 16-bit AB, BA are accepted too.
	Order string `yaml:"order"`
	// Bit selects one bit (0 = least significant) of a 16-bit register for
	// a bool point.
	Bit *int `yaml:"bit"`
	// Length is a string's size in registers (two characters each).
	Length int `yaml:"length"`
	// Scale and Offset map the raw number r to the value r*scale+offset
	// (default 1 and 0); writes apply the inverse.
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	// Interval overrides the device's poll interval for this point.
	Interval time.Duration `yaml:"interval"`
	// Deadband, when set, reports the point only when it moved by more
	// than this since it was last reported (any change for bool/string).
	Deadband float64 `yaml:"deadband"`
	// Heartbeat reports a filtered point anyway when it was not reported
	// for this long. Heartbeat alone (no deadband) reports on any change.
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Writable allows commands to write the point (coil and holding only).
	Writable bool `yaml:"writable"`
}

// Defaults.
const (
	DefaultInterval   = 5 * time.Second
	DefaultTimeout    = time.Second
	DefaultMaxGap     = 8
	DefaultBackoffMax = 30 * time.Second
)

// NewConfig returns a Config holding the defaults.
func NewConfig() *Config {
	return &Config{Unit: 1, Interval: DefaultInterval, Timeout: DefaultTimeout, MaxGap: DefaultMaxGap, BackoffMax: DefaultBackoffMax}
}

// Validate reports every problem of the config at once, each as an
// *adapters.FieldError naming its key.
func (c *Config) Validate() error {
	_, err := c.resolve()
	return err
}

// device is a resolved config: the runtime view New works from.
type device struct {
	bus        busSpec
	unit       byte
	interval   time.Duration
	timeout    time.Duration
	maxGap     int
	turnaround time.Duration
	backoffMax time.Duration
	points     []*point
}

func (c *Config) resolve() (*device, error) {
	var errs []error
	add := func(path, f string, a ...any) { errs = append(errs, adapters.Errorf(path, f, a...)) }
	d := &device{interval: c.Interval, timeout: c.Timeout, turnaround: c.Turnaround, maxGap: c.MaxGap, backoffMax: c.BackoffMax}
	spec, err := parseURL(c.URL)
	if err != nil {
		add("url", "%v", err)
	}
	d.bus = spec
	maxUnit := 247
	if spec.scheme == "tcp" {
		maxUnit = 255
	}
	if c.Unit < 0 || c.Unit > maxUnit || (c.Unit == 0 && spec.serial()) {
		add("unit", "unit %d out of range (1..%d)", c.Unit, maxUnit)
	}
	d.unit = byte(c.Unit)
	if c.Interval <= 0 {
		add("interval", "must be positive, got %v", c.Interval)
	}
	if c.Timeout <= 0 {
		add("timeout", "must be positive, got %v", c.Timeout)
	}
	if c.AddressBase != 0 && c.AddressBase != 1 {
		add("address_base", "must be 0 or 1, got %d", c.AddressBase)
	}
	if c.MaxGap < 0 || c.MaxGap > maxRegisters-2 {
		add("max_gap", "must be 0..%d, got %d", maxRegisters-2, c.MaxGap)
	}
	if c.Turnaround < 0 {
		add("turnaround", "must not be negative")
	}
	if c.BackoffMax < 0 {
		add("backoff_max", "must not be negative")
	}
	if d.backoffMax == 0 {
		d.backoffMax = DefaultBackoffMax
	}
	d.backoffMax = max(d.backoffMax, c.Interval)
	if len(c.Points) == 0 {
		add("points", "a modbus device needs at least one point")
	}
	names := map[string]int{}
	for i, p := range c.Points {
		pt, perrs := p.resolve(fmt.Sprintf("points[%d]", i), c.AddressBase, c.Interval)
		errs = append(errs, perrs...)
		if j, dup := names[p.Name]; dup && p.Name != "" {
			add(fmt.Sprintf("points[%d].name", i), "duplicate point name %q (also points[%d])", p.Name, j)
		}
		names[p.Name] = i
		d.points = append(d.points, pt)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

func (p *Point) resolve(path string, base int, devInterval time.Duration) (*point, []error) {
	var errs []error
	add := func(key, f string, a ...any) { errs = append(errs, adapters.Errorf(path+"."+key, f, a...)) }
	pt := &point{Field: codec.Field{Name: p.Name, Bit: -1, Scale: 1, Offset: p.Offset}, interval: p.Interval,
		deadband: p.Deadband, heartbeat: p.Heartbeat, writable: p.Writable}
	if p.Name == "" {
		add("name", "required")
	}
	tname := p.Table
	if tname == "" {
		tname = "holding"
	}
	tb, ok := tableByName[tname]
	if !ok {
		add("table", "unknown table %q (want coil, discrete, input or holding)", p.Table)
	}
	pt.table = tb
	tyname := p.Type
	if tyname == "" {
		tyname = "uint16"
		if tb.bits() {
			tyname = "bool"
		}
	}
	ty, ok := codec.ParseType(tyname)
	if !ok {
		add("type", "unknown type %q (want bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string)", p.Type)
	}
	pt.Type = ty
	if ok && tb.bits() && ty != codec.Bool {
		add("type", "a %s point is bool, not %s", tname, tyname)
	}
	if p.Bit != nil {
		switch {
		case tb.bits():
			add("bit", "bit is for register tables; a %s is already one bit", tname)
		case ty != codec.Bool:
			add("bit", "bit needs type bool")
		case *p.Bit < 0 || *p.Bit > 15:
			add("bit", "must be 0..15, got %d", *p.Bit)
		}
		pt.Bit = *p.Bit
	} else if ok && ty == codec.Bool && !tb.bits() {
		add("bit", "a bool point in the %s table needs bit: 0..15", tname)
	}
	pt.Words = ty.Words()
	if ty == codec.String {
		if p.Length <= 0 || p.Length > maxRegisters {
			add("length", "a string needs length: 1..%d registers", maxRegisters)
		}
		pt.Words = max(p.Length, 1)
	} else if p.Length != 0 {
		add("length", "length is for strings")
	}
	ord, ok := codec.ParseOrder(p.Order)
	if !ok {
		add("order", "unknown order %q (want ABCD, CDAB, BADC or DCBA)", p.Order)
	} else if p.Order != "" && tb.bits() {
		add("order", "order is for registers, not %s", tname)
	}
	pt.Order = ord
	addr := p.Address - base
	if addr < 0 || addr+pt.Words > 1<<16 {
		add("address", "address %d out of range (address_base %d)", p.Address, base)
	} else {
		pt.addr = uint16(addr)
	}
	if p.Scale != nil {
		if *p.Scale == 0 {
			add("scale", "must not be 0")
		} else {
			pt.Scale = *p.Scale
		}
	}
	numeric := ty != codec.Bool && ty != codec.String
	if (p.Scale != nil || p.Offset != 0) && !numeric {
		add("scale", "scale and offset are for numbers, not %s", tyname)
	}
	if p.Interval < 0 {
		add("interval", "must not be negative")
	}
	if pt.interval == 0 {
		pt.interval = devInterval
	}
	if p.Deadband < 0 {
		add("deadband", "must not be negative")
	} else if p.Deadband > 0 && !numeric {
		add("deadband", "deadband is for numbers; a %s is reported on change with heartbeat", tyname)
	}
	if p.Heartbeat < 0 {
		add("heartbeat", "must not be negative")
	}
	if p.Writable && (tb == tableInput || tb == tableDiscrete) {
		add("writable", "the %s table is read-only", tname)
	}
	return pt, errs
}

// busSpec is a parsed transport URL.
type busSpec struct {
	scheme   string // tcp, rtuovertcp, rtu, ascii
	addr     string // host:port or device path
	baud     int
	dataBits int
	parity   string // N, E, O
	stopBits int
}

func (s busSpec) serial() bool { return s.scheme == "rtu" || s.scheme == "ascii" }

// key names the bus: devices with equal keys share one scheduler. A serial
// port is one bus whatever its framing; so is one host:port.
func (s busSpec) key() string {
	if s.serial() {
		return "serial:" + s.addr
	}
	return "tcp:" + s.addr
}

func (s busSpec) String() string {
	if s.serial() {
		return fmt.Sprintf("%s://%s?baud=%d&parity=%s&data=%d&stop=%d", s.scheme, s.addr, s.baud, s.parity, s.dataBits, s.stopBits)
	}
	return s.scheme + "://" + s.addr
}

// charTime is one character on the wire: start, data, parity and stop bits.
func (s busSpec) charTime() time.Duration {
	return time.Duration(s.charBits()) * time.Second / time.Duration(s.baud)
}

func (s busSpec) charBits() int {
	bits := 1 + s.dataBits + s.stopBits
	if s.parity != "N" {
		bits++
	}
	return bits
}

// frameGap is the silent interval between RTU frames: 3.5 characters, and
// a fixed 1.75 ms above 19200 baud (Modbus over serial line, 2.5.1.1).
func (s busSpec) frameGap() time.Duration {
	if !s.serial() {
		return 0
	}
	if s.baud > 19200 {
		return 1750 * time.Microsecond
	}
	return time.Duration(s.charBits()) * 7 * time.Second / time.Duration(2*s.baud)
}

func parseURL(raw string) (busSpec, error) {
	s := busSpec{baud: 9600, dataBits: 8, parity: "N", stopBits: 1}
	if raw == "" {
		return s, errors.New("required (tcp://host:502 or rtu:///dev/ttyUSB0?baud=9600)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return s, err
	}
	s.scheme = strings.ToLower(u.Scheme)
	switch s.scheme {
	case "tcp", "rtuovertcp":
		if u.Host == "" {
			return s, fmt.Errorf("%s URL %q needs a host", s.scheme, raw)
		}
		s.addr = u.Host
		if u.Port() == "" {
			s.addr = net.JoinHostPort(u.Hostname(), "502")
		}
		if u.RawQuery != "" || (u.Path != "" && u.Path != "/") {
			return s, fmt.Errorf("%s URL %q takes no path or query", s.scheme, raw)
		}
		return s, nil
	case "rtu", "ascii":
	default:
		return s, fmt.Errorf("unknown scheme %q (want tcp, rtu, rtuovertcp or ascii)", u.Scheme)
	}
	s.addr = u.Path
	if u.Host != "" || s.addr == "" {
		return s, fmt.Errorf("%s URL %q needs a device path, as in %s:///dev/ttyUSB0", s.scheme, raw, s.scheme)
	}
	if s.scheme == "ascii" {
		s.dataBits, s.parity = 7, "E"
	}
	q := u.Query()
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "baud":
			s.baud, err = strconv.Atoi(v)
			if err != nil || s.baud < 300 || s.baud > 4000000 {
				return s, fmt.Errorf("baud %q: want a rate such as 9600", v)
			}
		case "data":
			s.dataBits, err = strconv.Atoi(v)
			if err != nil || s.dataBits < 7 || s.dataBits > 8 {
				return s, fmt.Errorf("data %q: want 7 or 8", v)
			}
		case "parity":
			s.parity = strings.ToUpper(v)
			if s.parity != "N" && s.parity != "E" && s.parity != "O" {
				return s, fmt.Errorf("parity %q: want N, E or O", v)
			}
		case "stop":
			s.stopBits, err = strconv.Atoi(v)
			if err != nil || s.stopBits < 1 || s.stopBits > 2 {
				return s, fmt.Errorf("stop %q: want 1 or 2", v)
			}
		default:
			return s, fmt.Errorf("unknown URL parameter %q (want baud, parity, data, stop)", k)
		}
	}
	return s, nil
}
