package serial

// These tests run the adapter against real ptys: socat links two ptys, the
// device opens one end with tarm/serial exactly as it would a USB stick, and
// the test plays the sensor on the other end. Only the wire is missing (a
// pty ignores the baud rate).

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func TestMain(m *testing.M) {
	flag.Parse()
	before := goroutines()
	code := m.Run()
	if code == 0 {
		code = leakCheck(before)
	}
	os.Exit(code)
}

// leakCheck fails the run if goroutines outlive the tests.
func leakCheck(before int) int {
	deadline := time.Now().Add(3 * time.Second)
	for goroutines() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after:\n%s\n", before, goroutines(), buf[:runtime.Stack(buf, true)])
			return 1
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0
}

// goroutines counts the live goroutines. When the run fuzzes (-test.fuzz,
// or a fuzzing worker), it leaves out os/signal's loop, which the fuzzing
// engine starts to catch SIGINT and never stops; nothing in this package
// calls signal.Notify, so only the engine's goroutine is left out.
func goroutines() int {
	n := runtime.NumGoroutine()
	if !fuzzing() {
		return n
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return n - strings.Count(string(buf), "\nos/signal.loop()")
}

// fuzzing reports whether this test binary runs the fuzzing engine.
func fuzzing() bool {
	f, w := flag.Lookup("test.fuzz"), flag.Lookup("test.fuzzworker")
	return (f != nil && f.Value.String() != "") || (w != nil && w.Value.String() == "true")
}

// rig is a running device on one end of a socat pty pair; the test writes
// and reads the other end as the sensor.
type rig struct {
	t      *testing.T
	dev    *Device
	rec    *adaptertest.Recorder
	sensor *os.File
}

func startRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	pp := peertest.StartPtyPair(t)
	cfg.Port = pp.B
	r := &rig{t: t, rec: adaptertest.NewRecorder()}
	r.dev = runDevice(t, cfg, r.rec)
	waitState(t, r.dev, adapters.Up, 5*time.Second)
	r.sensor = openSensor(t, pp.A)
	return r
}

func openSensor(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// runDevice starts Run and, at cleanup, checks it returns nil promptly.
func runDevice(t *testing.T, cfg Config, out adapters.Emitter) *Device {
	t.Helper()
	d, err := New("sensor-1", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v after cancel", err)
			}
		case <-time.After(3 * time.Second):
			t.Error("Run did not return within 3 s of cancel")
		}
	})
	return d
}

// write sends each piece as its own write, a few ms apart, so frames
// arrive split across reads.
func (r *rig) write(pieces ...string) {
	r.t.Helper()
	for i, p := range pieces {
		if i > 0 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := r.sensor.Write([]byte(p)); err != nil {
			r.t.Fatal(err)
		}
	}
}

// values waits for n readings and returns their values in order.
func (r *rig) values(n int) []map[string]any {
	r.t.Helper()
	rs := r.rec.WaitN(r.t, n, 5*time.Second)
	out := make([]map[string]any, len(rs))
	for i, rd := range rs {
		if rd.Device != "sensor-1" || rd.Time.IsZero() {
			r.t.Errorf("reading %d: device %q time %v", i, rd.Device, rd.Time)
		}
		out[i] = rd.Values
	}
	return out
}

func waitState(t *testing.T, d *Device, want adapters.Health, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, detail := d.Health()
		if st == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %s (%s), want %s within %v", st, detail, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitCounter waits for a counter to reach want (they are updated right
// after the frame that changes them is handled).
func waitCounter(t *testing.T, d *Device, name string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for d.Counters()[name] < want {
		if time.Now().After(deadline) {
			t.Fatalf("counter %s = %d, want %d (all: %v)", name, d.Counters()[name], want, d.Counters())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := d.Counters()[name]; got != want {
		t.Fatalf("counter %s = %d, want exactly %d", name, got, want)
	}
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestPtyLinesRegex(t *testing.T) {
	cfg := *NewConfig()
	cfg.Framing.Max = 32
	cfg.Parse.Regex = `T=(?P<t>-?[0-9.]+) H=(?P<h>[0-9.]+)`
	r := startRig(t, cfg)
	r.write("T=21.5 H=40\r\n", "T=2", "2.0 H=41\n",
		"\x00\xffnoise\n",                  // does not parse: counted, not fatal
		strings.Repeat("x", 100)+"T=1 H=1", // overlong: dropped up to its newline
		"\nT=-3 H=42\r\n")
	got := asJSON(r.values(3))
	want := `[{"h":40,"t":21.5},{"h":41,"t":22},{"h":42,"t":-3}]`
	if got != want {
		t.Errorf("values = %s\nwant     %s", got, want)
	}
	waitCounter(t, r.dev, "overlong", 1)
	waitCounter(t, r.dev, "parse_errors", 1)
	waitCounter(t, r.dev, "frames", 4)
}

func TestPtyNMEAGolden(t *testing.T) {
	cfg := *NewConfig()
	cfg.Framing = Framing{Start: "$", Delimiter: "\r\n", Max: 100}
	cfg.Parse = Parse{NMEA: true, Fields: map[string][]string{"MWV": {"wind_angle", "reference", "wind_speed", "wind_unit", "status"}}}
	stream, err := os.ReadFile(filepath.Join("testdata", "gps.nmea"))
	if err != nil {
		t.Fatal(err)
	}
	r := startRig(t, cfg)
	// Seven-byte writes split every sentence across reads.
	var pieces []string
	for s := string(stream); len(s) > 0; {
		n := min(7, len(s))
		pieces = append(pieces, s[:n])
		s = s[n:]
	}
	r.write(pieces...)
	// The stream holds 6 good sentences, one with a bad checksum, and
	// garbage, one truncated sentence and one overlong line as noise.
	got := r.values(6)
	waitCounter(t, r.dev, "parse_errors", 1)
	waitCounter(t, r.dev, "overlong", 1)
	if r.dev.Counters()["noise_bytes"] == 0 {
		t.Error("no noise bytes counted")
	}
	b, _ := json.MarshalIndent(got, "", "  ")
	golden := filepath.Join("testdata", "gps.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != strings.TrimSpace(string(want)) {
		t.Errorf("readings differ from %s (run with -update to accept):\n%s", golden, b)
	}
}

func TestPtyFixedBinaryStart(t *testing.T) {
	cfg := *NewConfig()
	cfg.Framing = Framing{Start: "\u00aa", Fixed: 5, Max: DefaultMax} // YAML "\xAA"
	cfg.Parse.Raw = "base64"
	r := startRig(t, cfg)
	r.write("\x01\x02", "\xaa\x10", "\x20\x30\x40", "\xaa\x00\xaa\x01\x02")
	got := asJSON(r.values(2))
	if want := `[{"raw":"qhAgMEA="},{"raw":"qgCqAQI="}]`; got != want { // aa10203040, aa00aa0102
		t.Errorf("values = %s, want %s", got, want)
	}
	waitCounter(t, r.dev, "noise_bytes", 2)
}

func TestPtyIdleKV(t *testing.T) {
	cfg := *NewConfig()
	cfg.Framing.Idle = 200 * time.Millisecond
	cfg.Parse.KV = true
	r := startRig(t, cfg)
	r.write("A=1 ", "B=2") // 5 ms apart: one burst
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	r.write("A=3;", "B=4")
	rs := r.rec.WaitN(t, 2, 5*time.Second)
	seen := time.Now()
	if got := asJSON([]any{rs[0].Values, rs[1].Values}); got != `[{"A":1,"B":2},{"A":3,"B":4}]` {
		t.Errorf("values = %s", got)
	}
	// The frame ends only after the idle gap, and is stamped with the
	// arrival of its last byte, not with the moment the gap was noticed.
	if d := seen.Sub(rs[1].Time); d < cfg.Framing.Idle {
		t.Errorf("frame emitted %v after its last byte, before the %v gap", d, cfg.Framing.Idle)
	}
	if d := rs[1].Time.Sub(start); d < 0 || d > 150*time.Millisecond {
		t.Errorf("second frame stamped %v after its bytes were written", d)
	}
}

func TestPtyJSON(t *testing.T) {
	cfg := *NewConfig()
	cfg.Parse.JSON = true
	r := startRig(t, cfg)
	r.write(`{"pm25":12,"env":{"t":21.5}}`+"\n", "{broken\n", `{"pm25":`, `13,"ok":true}`+"\n")
	if got := asJSON(r.values(2)); got != `[{"env.t":21.5,"pm25":12},{"ok":true,"pm25":13}]` {
		t.Errorf("values = %s", got)
	}
	waitCounter(t, r.dev, "parse_errors", 1)
}

// readUntil reads the sensor end until it has seen want (or fails).
func readUntil(t *testing.T, f *os.File, want string) string {
	t.Helper()
	_ = f.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer f.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 256)
	for !strings.Contains(string(got), want) {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read %q so far, want %q: %v", got, want, err)
		}
	}
	return string(got)
}

func TestPtyPolledRequest(t *testing.T) {
	cfg := *NewConfig()
	cfg.Framing.Delimiter = "\r\n"
	cfg.Parse = Parse{KV: true, Scale: map[string]float64{"I": 0.001}}
	cfg.Request = "R\r"
	cfg.Interval = 200 * time.Millisecond
	r := startRig(t, cfg)
	for i := range 2 {
		readUntil(t, r.sensor, "R\r")
		r.write(fmt.Sprintf("V:230.%d;I:512\r\n", i))
	}
	if got := asJSON(r.values(2)); got != `[{"I":0.512,"V":230},{"I":0.512,"V":230.1}]` {
		t.Errorf("values = %s", got)
	}
}

func TestPtySend(t *testing.T) {
	r := startRig(t, *NewConfig())
	s := "RESET\r\n"
	res, err := r.dev.Apply(context.Background(), msg.Command{ID: "c1", Send: &s})
	if err != nil || res.Status != msg.StatusDone {
		t.Fatalf("Apply = %+v, %v", res, err)
	}
	if got := readUntil(t, r.sensor, "RESET\r\n"); got != s {
		t.Errorf("sensor got %q, want %q", got, s)
	}
	empty := ""
	for _, cmd := range []msg.Command{
		{ID: "c2", Write: map[string]any{"x": 1.0}},
		{ID: "c3", Pulse: map[string]time.Duration{"x": time.Second}},
		{ID: "c4", Send: &empty},
	} {
		if _, err := r.dev.Apply(context.Background(), cmd); !errors.Is(err, adapters.ErrRejected) {
			t.Errorf("Apply(%s) = %v, want ErrRejected", cmd.ID, err)
		}
	}
}

// startSocat links two ptys at a and b, like peertest.StartPtyPair, but at
// paths the test chooses, so the pair can be removed and made again.
func startSocat(t *testing.T, a, b string) *peertest.Proc {
	t.Helper()
	bin := peertest.Need(t, "socat")
	return peertest.Start(t, exec.Command(bin, "-d", "-d", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b),
		regexp.MustCompile(`starting data transfer loop`))
}

func TestPtyUnplugAndReplug(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "ttyA"), filepath.Join(dir, "ttyB")
	cfg := *NewConfig()
	cfg.Port = b
	cfg.Parse.KV = true
	rec := adaptertest.NewRecorder()
	dev := runDevice(t, cfg, rec)

	// Not there at start: down, not an error, and it says why.
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, detail := dev.Health()
		if st == adapters.Down && strings.Contains(detail, "no such file") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health = %s (%s), want down for a missing port", st, detail)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Plugged in: it opens by itself.
	p1 := startSocat(t, a, b)
	waitState(t, dev, adapters.Up, 5*time.Second)
	s1 := openSensor(t, a)
	if _, err := s1.Write([]byte("n=1\n")); err != nil {
		t.Fatal(err)
	}
	rec.WaitN(t, 1, 5*time.Second)

	// Pulled: the pty goes away (SIGKILL leaves the links; remove them as
	// udev removes a by-id link).
	pulled := time.Now()
	p1.Kill()
	os.Remove(a)
	os.Remove(b)
	waitState(t, dev, adapters.Down, 2*time.Second)
	t.Logf("down noticed %v after the pty went away", time.Since(pulled).Round(time.Millisecond))
	s := "x"
	if _, err := dev.Apply(context.Background(), msg.Command{Send: &s}); err == nil || errors.Is(err, adapters.ErrRejected) {
		t.Errorf("send while down = %v, want a retryable error", err)
	}

	// Plugged back: recovered without a restart, and data flows again.
	replugged := time.Now()
	startSocat(t, a, b)
	waitState(t, dev, adapters.Up, 10*time.Second)
	t.Logf("reopened %v after the pty came back", time.Since(replugged).Round(time.Millisecond))
	s2 := openSensor(t, a)
	if _, err := s2.Write([]byte("n=2\n")); err != nil {
		t.Fatal(err)
	}
	rs := rec.WaitN(t, 2, 5*time.Second)
	if got := asJSON([]any{rs[0].Values, rs[1].Values}); got != `[{"n":1},{"n":2}]` {
		t.Errorf("values = %s", got)
	}
	if n := dev.Counters()["opens"]; n != 2 {
		t.Errorf("opens = %d, want 2", n)
	}
}

func TestCloseStopsRun(t *testing.T) {
	pp := peertest.StartPtyPair(t)
	cfg := *NewConfig()
	cfg.Port = pp.B
	d, err := New("sensor-1", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background(), adaptertest.NewRecorder()) }()
	waitState(t, d, adapters.Up, 5*time.Second)
	start := time.Now()
	d.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after Close", err)
		}
		t.Logf("Run returned %v after Close", time.Since(start).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func TestConformance(t *testing.T) {
	pp := peertest.StartPtyPair(t)
	cfg := NewConfig()
	cfg.Port = pp.B
	cfg.Parse.Regex = `T=(?P<t>[0-9.]+)`
	sensor := openSensor(t, pp.A)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a sensor printing twenty lines a second
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				_, _ = sensor.Write([]byte("T=21.5\n"))
			}
		}
	}()
	defer func() { close(stop); <-done }()
	adaptertest.Run(t, adaptertest.Case{
		Kind:           "serial",
		Device:         "sensor-1",
		Config:         cfg,
		Wait:           2 * time.Second,
		UnknownCommand: &msg.Command{ID: "c1", Device: "sensor-1", Write: map[string]any{"nope": 1.0}},
		Optional:       adaptertest.Optional{HealthReporter: true, Closer: true},
	})
}
