package serial

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

const toolUsage = `Usage: outpost serial ports
       outpost serial sniff PORT [flags]

ports lists the serial ports of this machine with their stable
/dev/serial/by-id names (use those in the config).

sniff opens PORT and prints every frame the sensor sends and what it parses
to, with the adapter's own framing and parsing, until interrupted.
Run "outpost serial sniff --help" for its flags.
`

// Tool is "outpost serial ports|sniff": the field tool for attaching a
// serial sensor. It returns the process exit code: 0 done, 1 failed, 2 bad
// usage. It blocks until ctx is done for an open-ended sniff.
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
	switch args[0] {
	case "ports":
		return toolPorts(args[1:], stdout, stderr)
	case "sniff":
		return toolSniff(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "outpost serial: unknown command %q\n\n%s", args[0], toolUsage)
	return 2
}

func toolPorts(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outpost serial ports", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: outpost serial ports\n\nLists serial ports with their /dev/serial/by-id names.")
	}
	if err := fs.Parse(args); err != nil {
		return exitFor(err)
	}
	ports, err := Ports()
	if err != nil {
		fmt.Fprintf(stderr, "outpost serial ports: %v\n", err)
		return 1
	}
	printPorts(stdout, ports)
	return 0
}

func printPorts(w io.Writer, ports []PortInfo) {
	if len(ports) == 0 {
		fmt.Fprintln(w, "no serial ports found")
		return
	}
	fmt.Fprintf(w, "%-16s %-12s %s\n", "PORT", "DRIVER", "BY-ID")
	for _, p := range ports {
		ids := strings.Join(p.ByID, " ")
		if ids == "" {
			ids = "-"
		}
		drv := p.Driver
		if drv == "" {
			drv = "-"
		}
		fmt.Fprintf(w, "%-16s %-12s %s\n", p.Path, drv, ids)
	}
}

func exitFor(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// sniffFlags turns command-line flags into a Config.
type sniffFlags struct {
	cfg     *Config
	framing string
	parse   string
	scale   string
	count   int
	dur     time.Duration
	debug   bool
}

func newSniffFlags(stderr io.Writer) (*flag.FlagSet, *sniffFlags) {
	f := &sniffFlags{cfg: NewConfig()}
	fs := flag.NewFlagSet("outpost serial sniff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := f.cfg
	fs.IntVar(&c.Baud, "baud", c.Baud, "line speed")
	fs.IntVar(&c.Data, "data", c.Data, "data bits, 5 to 8")
	fs.StringVar(&c.Parity, "parity", c.Parity, "parity: N, E or O")
	fs.IntVar(&c.Stop, "stop", c.Stop, "stop bits: 1 or 2")
	fs.StringVar(&f.framing, "framing", "line", `where a frame ends: line (a "\n", CRLF too), delimiter=STR, fixed=BYTES or idle=DURATION`)
	fs.StringVar(&c.Framing.Start, "start", "", `start marker, e.g. '$' or '\xaa' (Go escapes)`)
	fs.IntVar(&c.Framing.Max, "max", c.Framing.Max, "longest frame in bytes; longer ones are dropped")
	fs.StringVar(&f.parse, "parse", "raw", "parser: raw, raw=base64, kv, json, nmea or regex=PATTERN (named groups)")
	fs.StringVar(&f.scale, "scale", "", "scale values by name: name=factor,name=factor")
	fs.StringVar(&c.Request, "request", "", `request to write every --interval for polled sensors, e.g. 'R\r' (Go escapes)`)
	fs.DurationVar(&c.Interval, "interval", c.Interval, "time between requests")
	fs.IntVar(&f.count, "count", 0, "stop after this many frames (0: no limit)")
	fs.DurationVar(&f.dur, "for", 0, "stop after this long (0: until interrupted)")
	fs.BoolVar(&f.debug, "debug", false, "log every state change of the port in detail")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: outpost serial sniff PORT [flags]\n\n"+
			"Prints every frame from PORT (quoted) and its parsed values, or why it did not parse.\n"+
			"Example: outpost serial sniff /dev/ttyUSB0 --baud 9600 --parse 'regex=T=(?P<t>[0-9.]+)'\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs, f
}

// unescape reads a flag value with Go escapes (\r, \n, \t, \xAA).
func unescape(s string) (string, error) {
	u, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return "", fmt.Errorf("bad escape in %q", s)
	}
	return u, nil
}

// apply fills the config from the string flags.
func (f *sniffFlags) apply() error {
	c := f.cfg
	var err error
	if c.Framing.Start, err = unescape(c.Framing.Start); err != nil {
		return fmt.Errorf("--start: %w", err)
	}
	if c.Request, err = unescape(c.Request); err != nil {
		return fmt.Errorf("--request: %w", err)
	}
	kind, arg, _ := strings.Cut(f.framing, "=")
	switch kind {
	case "line":
	case "delimiter":
		if c.Framing.Delimiter, err = unescape(arg); err != nil || arg == "" {
			return fmt.Errorf("--framing delimiter=STR: %v", cmpErr(err, "empty delimiter"))
		}
	case "fixed":
		if c.Framing.Fixed, err = strconv.Atoi(arg); err != nil {
			return fmt.Errorf("--framing fixed=BYTES: %w", err)
		}
	case "idle":
		if c.Framing.Idle, err = time.ParseDuration(arg); err != nil {
			return fmt.Errorf("--framing idle=DURATION: %w", err)
		}
	default:
		return fmt.Errorf("--framing %q: want line, delimiter=STR, fixed=BYTES or idle=DURATION", f.framing)
	}
	kind, arg, hasArg := strings.Cut(f.parse, "=")
	switch {
	case kind == "raw" && !hasArg:
	case kind == "raw":
		c.Parse.Raw = arg
	case kind == "kv" && !hasArg:
		c.Parse.KV = true
	case kind == "json" && !hasArg:
		c.Parse.JSON = true
	case kind == "nmea" && !hasArg:
		c.Parse.NMEA = true
	case kind == "regex" && arg != "":
		c.Parse.Regex = arg
	default:
		return fmt.Errorf("--parse %q: want raw, raw=base64, kv, json, nmea or regex=PATTERN", f.parse)
	}
	if f.scale != "" {
		c.Parse.Scale = map[string]float64{}
		for _, kv := range strings.Split(f.scale, ",") {
			k, v, _ := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if k == "" || err != nil {
				return fmt.Errorf("--scale %q: want name=factor", kv)
			}
			c.Parse.Scale[k] = x
		}
	}
	return nil
}

func cmpErr(err error, s string) any {
	if err != nil {
		return err
	}
	return s
}

// parseInterleaved parses flags and positional arguments in any order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func toolSniff(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, f := newSniffFlags(stderr)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitFor(err)
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "outpost serial sniff: want exactly one PORT (see outpost serial ports)")
		return 2
	}
	f.cfg.Port = pos[0]
	if err := f.apply(); err != nil {
		fmt.Fprintf(stderr, "outpost serial sniff: %v\n", err)
		return 2
	}
	if err := f.cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "outpost serial sniff: %v\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 2
	}
	lvl := slog.LevelInfo
	if f.debug {
		lvl = slog.LevelDebug
	}
	dev, err := New("sniff", *f.cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})))
	if err != nil {
		fmt.Fprintf(stderr, "outpost serial sniff: %v\n", err)
		return 1
	}
	if f.dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.dur)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	frames, parsed := 0, 0
	dev.SetTrace(func(fr Frame) {
		mu.Lock()
		defer mu.Unlock()
		if f.count > 0 && frames >= f.count {
			return
		}
		frames++
		ts := fr.Time.Format("15:04:05.000")
		if fr.Err != nil {
			fmt.Fprintf(stdout, "%s  %q  parse error: %v\n", ts, fr.Bytes, fr.Err)
		} else {
			parsed++
			b, _ := json.Marshal(fr.Values)
			fmt.Fprintf(stdout, "%s  %q  %s\n", ts, fr.Bytes, b)
		}
		if f.count > 0 && frames >= f.count {
			cancel()
		}
	})
	fmt.Fprintf(stderr, "sniffing %s at %d baud %d%s%d; interrupt to stop\n", f.cfg.Port, f.cfg.Baud, f.cfg.Data, strings.ToUpper(f.cfg.Parity[:1]), f.cfg.Stop)
	if err := dev.Run(ctx, discard{}); err != nil {
		fmt.Fprintf(stderr, "outpost serial sniff: %v\n", err)
		return 1
	}
	c := dev.Counters()
	mu.Lock()
	fmt.Fprintf(stderr, "sniff: frames=%d parsed=%d parse_errors=%d overlong=%d noise_bytes=%d\n",
		frames, parsed, frames-parsed, c["overlong"], c["noise_bytes"])
	mu.Unlock()
	return 0
}

// discard accepts readings and drops them: sniff only prints.
type discard struct{}

func (discard) Emit(context.Context, ...msg.Reading) error { return nil }
