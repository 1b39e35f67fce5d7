package modbus

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/goburrow/modbus"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/modbus/codec"
)

const toolUsage = `Usage:
  outpost modbus read  URL [flags]            read values
  outpost modbus write URL [flags] VALUE...   write values (FC 5/6/15/16), then read them back
  outpost modbus scan  URL [--units 1-247]    list the unit ids that answer

URL is tcp://host:502, rtu:///dev/ttyUSB0?baud=9600&parity=N&data=8&stop=1,
rtuovertcp://host:port or ascii:///dev/ttyUSB0. Addresses are 0-based unless
--address-base 1. Values print as "table[address] = value", one per line.
`

// Tool is the "outpost modbus" field tool: read, write and scan with the
// adapter's types and byte orders and its transports. args excludes
// "modbus". It returns the exit status: 0 ok, 1 failed, 2 usage.
func Tool(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, toolUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var run func(context.Context, *toolFlags, []string, io.Writer) error
	switch args[0] {
	case "read":
		run = toolRead
	case "write":
		run = toolWrite
	case "scan":
		run = toolScan
	default:
		fmt.Fprintf(stderr, "outpost modbus: unknown command %q\n\n%s", args[0], toolUsage)
		return 2
	}
	f, pos, err := parseToolFlags(args[0], args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if len(pos) == 0 {
		fmt.Fprintf(stderr, "outpost modbus %s: missing URL\n", args[0])
		return 2
	}
	if err := run(ctx, f, pos, stdout); err != nil {
		fmt.Fprintf(stderr, "outpost modbus %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

type toolFlags struct {
	unit    int
	table   string
	address int
	base    int
	count   int
	typ     string
	order   string
	length  int
	scale   float64
	offset  float64
	timeout time.Duration
	units   string
	bit     int
}

// parseToolFlags parses flags and positional arguments in any order.
func parseToolFlags(cmd string, args []string, stdout, stderr io.Writer) (*toolFlags, []string, error) {
	f := &toolFlags{}
	fs := flag.NewFlagSet("outpost modbus "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&f.unit, "unit", 1, "unit (slave) id")
	timeout := time.Second
	if cmd == "scan" {
		timeout = 200 * time.Millisecond
	}
	fs.DurationVar(&f.timeout, "timeout", timeout, "how long to wait for each reply")
	fs.StringVar(&f.table, "table", "holding", "coil, discrete, input or holding")
	fs.IntVar(&f.address, "address", 0, "first address")
	fs.IntVar(&f.base, "address-base", 0, "0 for protocol addresses, 1 for manuals that count from 1")
	switch cmd {
	case "read", "write":
		fs.StringVar(&f.typ, "type", "", "bool, int16, uint16, int32, uint32, int64, uint64, float32, float64 or string (default uint16; bool for coil/discrete)")
		fs.StringVar(&f.order, "order", "", "byte/word order: ABCD (default), CDAB, BADC or DCBA")
		fs.IntVar(&f.length, "length", 0, "string length in registers")
		fs.Float64Var(&f.scale, "scale", 1, "value = raw*scale + offset")
		fs.Float64Var(&f.offset, "offset", 0, "value = raw*scale + offset")
		fs.IntVar(&f.bit, "bit", -1, "with --type bool on a register table: the bit (0..15)")
		if cmd == "read" {
			fs.IntVar(&f.count, "count", 1, "number of values")
		}
	case "scan":
		fs.StringVar(&f.units, "units", "1-247", "unit ids to try: 1-247, or 1,2,5-9")
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: outpost modbus %s URL [flags]%s\n\nFlags:\n", cmd, map[bool]string{true: " VALUE...", false: ""}[cmd == "write"])
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stdout)
				fs.Usage()
			}
			return nil, nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return f, pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// template resolves the flags into a point, with the config's checks.
func (f *toolFlags) template() (*point, error) {
	p := Point{Name: "value", Table: f.table, Address: f.address, Type: f.typ, Order: f.order,
		Length: f.length, Offset: f.offset}
	if f.scale != 1 {
		p.Scale = &f.scale
	}
	if f.bit >= 0 {
		p.Bit = &f.bit
	}
	pt, errs := p.resolve("", f.base, time.Second)
	for i, err := range errs {
		var fe *adapters.FieldError
		if errors.As(err, &fe) {
			errs[i] = fmt.Errorf("--%s: %w", strings.TrimPrefix(fe.Path, "."), fe.Err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return pt, nil
}

func toolBus(url string) (*Bus, error) {
	s, err := parseURL(url)
	if err != nil {
		return nil, fmt.Errorf("URL: %w", err)
	}
	return acquire(s, nil)
}

func toolRead(ctx context.Context, f *toolFlags, pos []string, out io.Writer) error {
	if len(pos) != 1 {
		return fmt.Errorf("want one URL, got %q", pos)
	}
	p, err := f.template()
	if err != nil {
		return err
	}
	if f.count < 1 || f.count*p.Words > p.table.limit() || int(p.addr)+f.count*p.Words > 1<<16 {
		return fmt.Errorf("--count %d: one read holds at most %d %s values", f.count, p.table.limit()/p.Words, p.Type)
	}
	b, err := toolBus(pos[0])
	if err != nil {
		return err
	}
	defer b.Release()
	var w []uint16
	err = b.Do(ctx, byte(f.unit), f.timeout, 0, func(c modbus.Client) error {
		var err error
		w, err = read(c, p.table, p.addr, f.count*p.Words)
		return err
	})
	if err != nil {
		return fmt.Errorf("unit %d: read %s %d+%d: %w", f.unit, p.table, p.addr, f.count*p.Words, err)
	}
	return printValues(out, p, f.base, f.count, w)
}

func printValues(out io.Writer, p *point, base, count int, w []uint16) error {
	for i := range count {
		v, err := p.Decode(w[i*p.Words:])
		if err != nil {
			fmt.Fprintf(out, "%s[%d] = error: %v\n", p.table, int(p.addr)+i*p.Words+base, err)
			continue
		}
		if s, ok := v.(string); ok {
			v = strconv.Quote(s)
		}
		fmt.Fprintf(out, "%s[%d] = %v\n", p.table, int(p.addr)+i*p.Words+base, v)
	}
	return nil
}

func toolWrite(ctx context.Context, f *toolFlags, pos []string, out io.Writer) error {
	if len(pos) < 2 {
		return errors.New("want a URL and at least one VALUE")
	}
	p, err := f.template()
	if err != nil {
		return err
	}
	if p.table != tableCoil && p.table != tableHolding {
		return fmt.Errorf("--table %s is read-only", p.table)
	}
	vals := pos[1:]
	n := len(vals)
	if p.Type == codec.Bool && p.table == tableHolding && n != 1 {
		return errors.New("a register bit takes exactly one VALUE")
	}
	if n*p.Words > 123 || p.table == tableCoil && n > 1968 {
		return fmt.Errorf("%d values do not fit in one write", n)
	}
	// Encode everything before touching the bus.
	var words []uint16
	var bits []bool
	for _, s := range vals {
		if p.Type == codec.Bool {
			on, err := codec.BoolValue(s)
			if err != nil {
				return fmt.Errorf("VALUE %q: %w", s, err)
			}
			bits = append(bits, on)
			continue
		}
		var v any = s
		if p.Type != codec.String {
			if i, err := strconv.ParseInt(s, 0, 64); err == nil {
				v = i
			} else if u, err := strconv.ParseUint(s, 0, 64); err == nil {
				v = u
			}
		}
		ws, err := p.Encode(v)
		if err != nil {
			return fmt.Errorf("VALUE %q: %w", s, err)
		}
		words = append(words, ws...)
	}
	b, err := toolBus(pos[0])
	if err != nil {
		return err
	}
	defer b.Release()
	var back []uint16
	err = b.Do(ctx, byte(f.unit), f.timeout, 0, func(c modbus.Client) error {
		var err error
		switch {
		case p.table == tableCoil && n == 1: // FC 5
			v := uint16(0)
			if bits[0] {
				v = 0xFF00
			}
			_, err = c.WriteSingleCoil(p.addr, v)
		case p.table == tableCoil: // FC 15
			packed := make([]byte, (n+7)/8)
			for i, on := range bits {
				if on {
					packed[i/8] |= 1 << (i % 8)
				}
			}
			_, err = c.WriteMultipleCoils(p.addr, uint16(n), packed)
		case p.Type == codec.Bool: // a register bit: read, modify, FC 6
			var r []uint16
			if r, err = read(c, tableHolding, p.addr, 1); err == nil {
				v := r[0] &^ (1 << p.Bit)
				if bits[0] {
					v |= 1 << p.Bit
				}
				err = writeRegisters(c, p.addr, []uint16{v})
			}
		default: // FC 6 or 16
			err = writeRegisters(c, p.addr, words)
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		back, err = read(c, p.table, p.addr, n*p.Words)
		if err != nil {
			return fmt.Errorf("read back: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unit %d %s[%d]: %w", f.unit, p.table, int(p.addr)+f.base, err)
	}
	return printValues(out, p, f.base, n, back)
}

func toolScan(ctx context.Context, f *toolFlags, pos []string, out io.Writer) error {
	if len(pos) != 1 {
		return fmt.Errorf("want one URL, got %q", pos)
	}
	units, err := parseUnits(f.units)
	if err != nil {
		return fmt.Errorf("--units: %w", err)
	}
	t, ok := tableByName[f.table]
	if !ok {
		return fmt.Errorf("--table %q: want coil, discrete, input or holding", f.table)
	}
	addr := f.address - f.base
	if addr < 0 || addr > 0xFFFF {
		return fmt.Errorf("--address %d out of range", f.address)
	}
	b, err := toolBus(pos[0])
	if err != nil {
		return err
	}
	defer b.Release()
	found := 0
	for _, u := range units {
		var w []uint16
		err := b.Do(ctx, byte(u), f.timeout, 0, func(c modbus.Client) error {
			var err error
			w, err = read(c, t, uint16(addr), 1)
			return err
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err == nil:
			found++
			fmt.Fprintf(out, "unit %d: answers (%s[%d] = %d)\n", u, t, f.address, w[0])
		case isException(err, 0):
			found++
			fmt.Fprintf(out, "unit %d: answers with an exception (%v)\n", u, err)
		case !isNoAnswer(err):
			fmt.Fprintf(out, "unit %d: garbled reply (%v)\n", u, err)
		}
	}
	fmt.Fprintf(out, "%d of %d units answer\n", found, len(units))
	return nil
}

// parseUnits reads "1-247" or "1,2,5-9".
func parseUnits(s string) ([]int, error) {
	var us []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("%q: not a unit id", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("%q: not a range", part)
			}
		}
		if a < 0 || b > 255 || a > b {
			return nil, fmt.Errorf("%q: want ids within 0..255", part)
		}
		for u := a; u <= b; u++ {
			us = append(us, u)
		}
	}
	return us, nil
}
