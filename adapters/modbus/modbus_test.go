package modbus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// Every bus must have been released: none may outlive its devices.
	registry.mu.Lock()
	left := len(registry.buses)
	registry.mu.Unlock()
	if code == 0 && left > 0 {
		fmt.Fprintf(os.Stderr, "modbus: %d buses still open after the tests\n", left)
		code = 1
	}
	os.Exit(code)
}

func ptr[T any](v T) *T { return &v }

// fixture is what testdata/slave.py packs (with Python's struct module)
// and what the adapter must decode.
var fixture = []struct {
	p    Point
	want any
}{
	{Point{Name: "i16", Address: 0, Type: "int16"}, int64(-1234)},
	{Point{Name: "u16", Address: 1}, uint64(54321)},
	{Point{Name: "i16ba", Address: 2, Type: "int16", Order: "BA"}, int64(-2)},
	{Point{Name: "i32", Address: 3, Type: "int32"}, int64(-123456789)},
	{Point{Name: "i32cdab", Address: 5, Type: "int32", Order: "CDAB"}, int64(-123456789)},
	{Point{Name: "u32badc", Address: 7, Type: "uint32", Order: "BADC"}, uint64(3000000000)},
	{Point{Name: "u32dcba", Address: 9, Type: "uint32", Order: "DCBA"}, uint64(3000000000)},
	{Point{Name: "f32", Address: 11, Type: "float32"}, 229.8},
	{Point{Name: "f32cdab", Address: 13, Type: "float32", Order: "CDAB"}, 229.8},
	{Point{Name: "f32badc", Address: 15, Type: "float32", Order: "BADC"}, -0.5},
	{Point{Name: "f32dcba", Address: 17, Type: "float32", Order: "DCBA"}, 1.5e6},
	{Point{Name: "i64", Address: 19, Type: "int64"}, int64(-9000000000000)},
	{Point{Name: "u64", Address: 23, Type: "uint64", Order: "GHEFCDAB"}, uint64(18000000000000000000)},
	{Point{Name: "f64", Address: 27, Type: "float64"}, 3.14159265358979},
	{Point{Name: "f64le", Address: 31, Type: "float64", Order: "HGFEDCBA"}, -2.5e-3},
	{Point{Name: "i64badc", Address: 35, Type: "int64", Order: "BADCFEHG"}, int64(1234567890123)},
	{Point{Name: "name", Address: 40, Type: "string", Length: 5}, "OUTPOST-1"},
	{Point{Name: "tag", Address: 45, Type: "string", Length: 4, Order: "BADC"}, "ABCDEFG"},
	{Point{Name: "b0", Address: 50, Type: "bool", Bit: ptr(0)}, true},
	{Point{Name: "b1", Address: 50, Type: "bool", Bit: ptr(1)}, false},
	{Point{Name: "b3", Address: 50, Type: "bool", Bit: ptr(3)}, true},
	{Point{Name: "b15", Address: 50, Type: "bool", Bit: ptr(15)}, true},
	{Point{Name: "scaled", Address: 51, Scale: ptr(0.1)}, 215.3},
	{Point{Name: "temp", Address: 52, Type: "int16", Scale: ptr(0.01), Offset: -40}, 25.12},
	{Point{Name: "coil0", Table: "coil", Address: 0}, true},
	{Point{Name: "coil1", Table: "coil", Address: 1}, false},
	{Point{Name: "coil7", Table: "coil", Address: 7}, true},
	{Point{Name: "di1", Table: "discrete", Address: 1}, true},
	{Point{Name: "di2", Table: "discrete", Address: 2}, false},
	{Point{Name: "ir0", Table: "input", Address: 0}, uint64(11)},
	{Point{Name: "ir4", Table: "input", Address: 4}, uint64(55)},
}

func fixtureConfig(url string) *Config {
	c := NewConfig()
	c.URL, c.Interval, c.Timeout = url, time.Hour, time.Second
	for _, f := range fixture {
		c.Points = append(c.Points, f.p)
	}
	return c
}

// startDevice runs a device until the test ends.
func startDevice(t *testing.T, id string, c *Config) (*Device, *adaptertest.Recorder) {
	t.Helper()
	d, err := New(id, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := adaptertest.NewRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, rec) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return d, rec
}

func checkFixture(t *testing.T, r msg.Reading) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Errorf("errors: %v", r.Errors)
	}
	for _, f := range fixture {
		got, ok := r.Values[f.p.Name]
		if !ok {
			t.Errorf("%s: missing", f.p.Name)
			continue
		}
		if w, ok := f.want.(float64); ok {
			if g, ok := got.(float64); !ok || math.Abs(g-w) > 1e-9*math.Abs(w) {
				t.Errorf("%s = %#v, want %v", f.p.Name, got, w)
			}
			continue
		}
		if got != f.want {
			t.Errorf("%s = %#v (%T), want %#v (%T)", f.p.Name, got, got, f.want, f.want)
		}
	}
}

func TestFixtureTCP(t *testing.T) {
	s := startTCPSlave(t)
	d, rec := startDevice(t, "meter-tcp", fixtureConfig(s.url()))
	rs := rec.WaitN(t, 1, 5*time.Second)
	checkFixture(t, rs[0])
	// One read per table: holding 0..52, coil 0..7, discrete 1..2, input 0..4.
	if st := d.Stats(); st.Requests != 4 || st.Errors != 0 {
		t.Errorf("stats after one poll: %+v, want 4 requests and no errors", st)
	}
	if h, detail := d.Health(); h != adapters.Up {
		t.Errorf("health %s (%s), want ok", h, detail)
	}
}

func TestFixtureRTU(t *testing.T) {
	s := startRTUSlave(t, 19200)
	_, rec := startDevice(t, "meter-rtu", fixtureConfig(s.url()))
	checkFixture(t, rec.WaitN(t, 1, 5*time.Second)[0])
}

func TestConformance(t *testing.T) {
	s := startTCPSlave(t)
	c := NewConfig()
	c.URL, c.Interval = s.url(), 50*time.Millisecond
	c.Points = []Point{{Name: "voltage", Address: 11, Type: "float32"}, {Name: "pump", Table: "coil", Address: 3, Writable: true}}
	adaptertest.Run(t, adaptertest.Case{
		Kind: "modbus", Device: "conf-1", Config: c,
		UnknownCommand: &msg.Command{ID: "c1", Device: "conf-1", Write: map[string]any{"nope": 1.0}},
		Optional:       adaptertest.Optional{HealthReporter: true, PointLister: true, Reader: true},
	})
}

func TestWrites(t *testing.T) {
	s := startTCPSlave(t)
	c := NewConfig()
	c.URL, c.Interval = s.url(), time.Hour
	c.Points = []Point{
		{Name: "setpoint", Address: 100, Type: "int16", Scale: ptr(0.1), Writable: true},
		{Name: "level", Address: 101, Type: "float32", Order: "CDAB", Writable: true},
		{Name: "flag", Address: 103, Type: "bool", Bit: ptr(5), Writable: true},
		{Name: "pump", Table: "coil", Address: 3, Writable: true},
		{Name: "count", Address: 110, Type: "int32", Writable: true},
		{Name: "label", Address: 120, Type: "string", Length: 3, Writable: true},
		{Name: "ro", Address: 0, Type: "int16"},
		{Name: "missing", Address: 250, Writable: true},
	}
	d, err := New("w-1", c, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := d.Apply(ctx, msg.Command{ID: "c1", Write: map[string]any{
		"setpoint": 21.7, "level": 12.5, "flag": true, "pump": false, "count": -5.0, "label": "ab"}})
	if err != nil {
		t.Fatalf("Apply: %v (%+v)", err, res)
	}
	want := map[string]any{"setpoint": 21.7, "level": 12.5, "flag": true, "pump": false, "count": int64(-5), "label": "ab"}
	if res.Status != msg.StatusDone || fmt.Sprint(res.Values) != fmt.Sprint(want) {
		t.Errorf("result %+v, want done with %v", res, want)
	}
	// What landed in the slave, as it logged it. 12.5 is 0x41480000, CDAB
	// puts the low word first; bit 5 is set next to the bit 2 already there.
	for _, w := range []string{"WRITE hr 100 [217]", "WRITE hr 101 [0, 16712]", "WRITE hr 103 [36]",
		"WRITE co 3 [0]", "WRITE hr 110 [65535, 65531]", "WRITE hr 120 [24930, 0, 0]"} {
		s.WaitFor(t, regexp.MustCompile(regexp.QuoteMeta(w)), 3*time.Second)
	}
	n := len(writes(s.Proc))
	before := d.Stats().Requests

	for _, tc := range []struct {
		name  string
		write map[string]any
		why   string
	}{
		{"unknown", map[string]any{"nope": 1.0}, "unknown point"},
		{"read-only", map[string]any{"ro": 1.0}, "not writable"},
		{"range", map[string]any{"setpoint": 99999.0}, "out of int16 range"},
		{"type", map[string]any{"pump": "maybe"}, "bad value"},
		{"string", map[string]any{"label": "too long!"}, "holds 6 characters"},
		{"one-bad-of-two", map[string]any{"setpoint": 20.0, "ro": 1.0}, "not writable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := d.Apply(ctx, msg.Command{ID: tc.name, Write: tc.write})
			if !errors.Is(err, adapters.ErrRejected) || res.Status != msg.StatusRejected || !strings.Contains(err.Error(), tc.why) {
				t.Errorf("Apply = %+v, %v; want rejected with %q", res, err, tc.why)
			}
		})
	}
	if got := d.Stats().Requests; got != before {
		t.Errorf("rejected commands sent %d requests, want none", got-before)
	}
	// The device refuses an address: a rejection, since nothing was actuated.
	res, err = d.Apply(ctx, msg.Command{ID: "c9", Write: map[string]any{"missing": 1.0}})
	if !errors.Is(err, adapters.ErrRejected) || !strings.Contains(err.Error(), "illegal data address") {
		t.Errorf("write to an address the slave rejects: %+v, %v", res, err)
	}
	if len(writes(s.Proc)) != n {
		t.Errorf("the slave logged writes for rejected commands: %v", writes(s.Proc)[n:])
	}
	// A send command is not for modbus devices.
	if _, err := d.Apply(ctx, msg.Command{ID: "c10", Send: ptr("x")}); !errors.Is(err, adapters.ErrRejected) {
		t.Errorf("send command: %v, want rejected", err)
	}
}

func TestPointErrors(t *testing.T) {
	s := startTCPSlave(t)
	c := NewConfig()
	c.URL, c.Interval, c.MaxGap = s.url(), time.Hour, 20
	c.Points = []Point{
		{Name: "ok", Address: 0, Type: "int16"},
		{Name: "poison", Address: 199},              // the slave fails reading it: exception 04
		{Name: "beyond", Address: 250},              // past the slave's table: exception 02
		{Name: "ir8", Table: "input", Address: 8},   // input 10..19 is a hole, so a
		{Name: "ir21", Table: "input", Address: 21}, // merged 8..21 read gets exception 02
	}
	d, rec := startDevice(t, "err-1", c)
	r := rec.WaitN(t, 1, 5*time.Second)[0]
	if r.Values["ok"] != int64(-1234) || r.Values["ir8"] != uint64(99) || r.Values["ir21"] != uint64(242) {
		t.Errorf("values %v", r.Values)
	}
	if !strings.Contains(r.Errors["poison"], "exception '4'") || !strings.Contains(r.Errors["beyond"], "exception '2'") || len(r.Errors) != 2 {
		t.Errorf("errors %v, want poison (04) and beyond (02) only", r.Errors)
	}
	if h, _ := d.Health(); h != adapters.Degraded {
		t.Errorf("health %s, want degraded", h)
	}
	// First poll: holding 0, 199, 250 apart; input 8..21 rejected, then 8 and 21.
	st := d.Stats()
	if st.Requests != 6 || st.Exceptions != 3 {
		t.Errorf("stats %+v, want 6 requests and 3 exceptions", st)
	}
	// The split is remembered: the plan now reads input 8 and 21 apart.
	reqs := d.planFor(d.cfg.points)
	if len(reqs) != 5 {
		t.Errorf("plan after the split: %d requests, want 5", len(reqs))
	}
}

func TestTCPSlaveRestart(t *testing.T) {
	s := startTCPSlave(t)
	c := NewConfig()
	c.URL, c.Interval, c.Timeout, c.BackoffMax = s.url(), 50*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	c.Points = []Point{{Name: "v", Address: 60}}
	d, rec := startDevice(t, "restart-1", c)
	rec.WaitN(t, 1, 5*time.Second)
	s.Kill()
	waitHealth(t, d, adapters.Down, 5*time.Second)
	s.start()
	waitHealth(t, d, adapters.Up, 5*time.Second)
	last := rec.Readings()[len(rec.Readings())-1]
	if last.Values["v"] != uint64(100) {
		t.Errorf("after restart: %+v", last)
	}
}

func waitHealth(t *testing.T, d *Device, want adapters.Health, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		h, detail := d.Health()
		if h == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health %s (%s), want %s within %v", h, detail, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
