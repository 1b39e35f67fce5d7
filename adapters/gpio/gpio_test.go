package gpio

// These tests use periph.io's gpiotest.Pin: in-memory pins from periph's own
// test package, registered in gpioreg under unique names. They prove the
// adapter's logic (edges, debounce, counters, outputs, pulse timing,
// failsafe) against periph's PinIO contract, not the kernel's GPIO driver:
// this machine has no gpiochip and cannot load gpio-sim. A fake pin does not
// filter edge direction (the kernel does), so tests configured for rising or
// falling edges send only that direction. hardware_test.go (build tag
// hardware) runs against a real gpiochip.
//
// Timing tests run in a testing/synctest bubble: time is fake and advances
// only when every goroutine in the bubble is blocked, so a 500 ms pulse is
// checked to the nanosecond without waiting 500 ms.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/host/v3"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/adaptertest"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestMain(m *testing.M) {
	// Load periph's host drivers outside any synctest bubble.
	hostOnce.Do(func() { _, hostErr = host.Init() })
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after:\n%s\n", before, n, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

var pinSeq atomic.Int64

// fakePin registers an in-memory periph pin under a unique name (gpioreg is
// process-global) and returns it with its registered name.
func fakePin(t *testing.T, level gpio.Level) (*gpiotest.Pin, string) {
	t.Helper()
	name := fmt.Sprintf("TEST%d", pinSeq.Add(1))
	p := &gpiotest.Pin{N: name, Num: -1, L: level, EdgesChan: make(chan gpio.Level, 16)}
	if err := gpioreg.Register(p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gpioreg.Unregister(name) })
	return p, name
}

func pinLevel(p *gpiotest.Pin) gpio.Level {
	p.Lock()
	defer p.Unlock()
	return p.L
}

// started is a running device in a test.
type started struct {
	dev    *Device
	rec    *adaptertest.Recorder
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

func start(t *testing.T, cfg Config) *started {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	d, err := New("io-1", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &started{dev: d, rec: adaptertest.NewRecorder(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- d.Run(ctx, s.rec) }()
	t.Cleanup(func() { s.stop(t) }) // also after a failure: synctest needs every goroutine gone
	return s
}

// stop cancels Run and checks it returned nil.
func (s *started) stop(t *testing.T) {
	t.Helper()
	s.once.Do(func() {
		s.cancel()
		s.err = <-s.done
		if s.err != nil {
			t.Errorf("Run = %v after cancel", s.err)
		}
	})
}

// values returns the values of readings after the first skip ones.
func (s *started) values(skip int) []map[string]any {
	rs := s.rec.Readings()
	var out []map[string]any
	for _, r := range rs[min(skip, len(rs)):] {
		out = append(out, r.Values)
	}
	return out
}

func str(v any) string { return fmt.Sprint(v) }

func TestInputEdgesBoth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, name := fakePin(t, gpio.Low)
		s := start(t, Config{Points: []Point{{Name: "door", Pin: name, Pull: "up"}}})
		synctest.Wait()
		if pin.P != gpio.PullUp {
			t.Errorf("pull = %v, want up", pin.P)
		}
		pin.EdgesChan <- gpio.Low
		time.Sleep(time.Millisecond)
		pin.EdgesChan <- gpio.High
		synctest.Wait()
		t0 := time.Now()
		pin.EdgesChan <- gpio.Low
		synctest.Wait()
		rs := s.rec.Readings()
		if got := str(s.values(0)); got != "[map[door:true] map[door:false] map[door:true] map[door:false]]" {
			t.Errorf("readings = %s (first is the start report)", got)
		}
		if !rs[len(rs)-1].Time.Equal(t0) {
			t.Errorf("change stamped %v, want the edge's time %v", rs[len(rs)-1].Time, t0)
		}
		s.stop(t)
	})
}

func TestDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, name := fakePin(t, gpio.High)
		s := start(t, Config{Points: []Point{{Name: "door", Pin: name, Debounce: 50 * time.Millisecond}}})
		synctest.Wait()
		// A contact closing with bounces: five edges within 8 ms.
		for _, l := range []gpio.Level{gpio.Low, gpio.High, gpio.Low, gpio.High, gpio.Low} {
			pin.EdgesChan <- l
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(35 * time.Millisecond) // 45 ms after the first edge: inside the window
		synctest.Wait()
		if n := len(s.rec.Readings()); n != 1 {
			t.Fatalf("%d readings inside the debounce window, want only the start report", n)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if got := str(s.values(1)); got != "[map[door:false]]" {
			t.Fatalf("after the window: %s, want one reading door=false", got)
		}
		// A glitch that settles back to the old level reports nothing.
		pin.EdgesChan <- gpio.High
		time.Sleep(time.Millisecond)
		pin.EdgesChan <- gpio.Low
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := str(s.values(1)); got != "[map[door:false]]" {
			t.Errorf("after a glitch: %s", got)
		}
		s.stop(t)
	})
}

func TestRisingEdgeEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, name := fakePin(t, gpio.Low)
		s := start(t, Config{Points: []Point{{Name: "button", Pin: name, Edge: "rising", Debounce: 30 * time.Millisecond}}})
		synctest.Wait()
		// Two presses; the kernel reports only rising edges, so the fake
		// sends only High. The second press bounces.
		pin.EdgesChan <- gpio.High
		time.Sleep(200 * time.Millisecond)
		pin.EdgesChan <- gpio.High
		time.Sleep(time.Millisecond)
		pin.EdgesChan <- gpio.High
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := str(s.values(1)); got != "[map[button:true] map[button:true]]" {
			t.Errorf("presses = %s, want two", got)
		}
		s.stop(t)
	})
}

func TestCounterAndRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, name := fakePin(t, gpio.High)
		cfg := Config{Interval: time.Second, Points: []Point{{Name: "litres", Pin: name, Edge: "falling", Debounce: 5 * time.Millisecond, Counter: true}}}
		s := start(t, cfg)
		synctest.Wait()
		// Ten pulses 50 ms apart, each with a bounce 1 ms after it.
		for range 10 {
			pin.EdgesChan <- gpio.Low
			time.Sleep(time.Millisecond)
			pin.EdgesChan <- gpio.Low
			time.Sleep(49 * time.Millisecond)
		}
		time.Sleep(time.Second - 500*time.Millisecond) // to the first report
		synctest.Wait()
		time.Sleep(time.Second) // a quiet second
		synctest.Wait()
		got := s.values(0)
		if len(got) != 3 {
			t.Fatalf("readings = %v, want the start report and two periodic ones", got)
		}
		if str(got[0]) != "map[litres:0]" || str(got[1]) != "map[litres:10 litres_rate:10]" || str(got[2]) != "map[litres:10 litres_rate:0]" {
			t.Errorf("reports = %v", got)
		}
		s.stop(t)
	})
}

func TestOutputsWrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, rn := fakePin(t, gpio.Low)
		siren, sn := fakePin(t, gpio.Low)
		led, ln := fakePin(t, gpio.High)
		_, in := fakePin(t, gpio.Low)
		cfg := Config{Interval: time.Hour, Points: []Point{
			{Name: "relay", Pin: rn, Direction: "out", Initial: "high", Writable: true},
			{Name: "siren", Pin: sn, Direction: "out", Invert: true, Initial: "high", Writable: true},
			{Name: "led", Pin: ln, Direction: "out"}, // not writable; keeps its level
			{Name: "door", Pin: in, Edge: "none"},
		}}
		d, err := New("io-1", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		on := msg.Command{ID: "c0", Write: map[string]any{"relay": true}}
		if _, err := d.Apply(context.Background(), on); err == nil || errors.Is(err, adapters.ErrRejected) {
			t.Errorf("write before Run = %v, want a retryable error", err)
		}
		s := start(t, cfg)
		synctest.Wait()
		if pinLevel(relay) != gpio.High || pinLevel(siren) != gpio.High || pinLevel(led) != gpio.High {
			t.Fatalf("initial levels relay=%v siren=%v led=%v", pinLevel(relay), pinLevel(siren), pinLevel(led))
		}
		if got := str(s.values(0)); got != "[map[door:false led:true relay:true siren:false]]" {
			t.Errorf("start report = %s", got)
		}
		for _, tc := range []struct {
			v            any
			relay, siren gpio.Level
		}{{false, gpio.Low, gpio.High}, {"on", gpio.High, gpio.Low}, {0.0, gpio.Low, gpio.High}, {"HIGH", gpio.High, gpio.Low}} {
			res, err := s.dev.Apply(context.Background(), msg.Command{ID: "c1", Write: map[string]any{"relay": tc.v, "siren": tc.v}})
			if err != nil || res.Status != msg.StatusDone {
				t.Fatalf("write %v = %+v, %v", tc.v, res, err)
			}
			if pinLevel(relay) != tc.relay || pinLevel(siren) != tc.siren {
				t.Errorf("write %v: relay=%v siren=%v, want %v %v", tc.v, pinLevel(relay), pinLevel(siren), tc.relay, tc.siren)
			}
		}
		synctest.Wait()
		if got := str(s.values(1)); !strings.HasSuffix(got, "map[relay:true siren:true]]") || len(s.values(1)) != 4 {
			t.Errorf("change readings = %s", got)
		}
		for _, cmd := range []msg.Command{
			{ID: "r1", Write: map[string]any{"nope": true}},
			{ID: "r2", Write: map[string]any{"door": true}},
			{ID: "r3", Write: map[string]any{"led": true}},
			{ID: "r4", Write: map[string]any{"relay": 2.0}},
			{ID: "r5", Write: map[string]any{"relay": false, "nope": true}}, // all or nothing
			{ID: "r6", Pulse: map[string]time.Duration{"relay": time.Hour}},
			{ID: "r7", Send: new(string)},
		} {
			before := pinLevel(relay)
			if _, err := s.dev.Apply(context.Background(), cmd); !errors.Is(err, adapters.ErrRejected) {
				t.Errorf("Apply(%s) = %v, want ErrRejected", cmd.ID, err)
			}
			if pinLevel(relay) != before {
				t.Errorf("Apply(%s) was rejected but changed the relay", cmd.ID)
			}
		}
		s.stop(t)
	})
}

func TestPulseTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, rn := fakePin(t, gpio.Low)
		s := start(t, Config{Points: []Point{{Name: "relay", Pin: rn, Direction: "out", Initial: "low", Writable: true}}})
		synctest.Wait()
		t0 := time.Now()
		type result struct {
			res msg.Result
			err error
			at  time.Duration
		}
		done := make(chan result, 1)
		go func() {
			res, err := s.dev.Apply(context.Background(), msg.Command{ID: "p1", Pulse: map[string]time.Duration{"relay": 500 * time.Millisecond}})
			done <- result{res, err, time.Since(t0)}
		}()
		time.Sleep(499 * time.Millisecond)
		synctest.Wait()
		if pinLevel(relay) != gpio.High {
			t.Fatal("relay not on during the pulse")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if pinLevel(relay) != gpio.Low {
			t.Fatal("relay still on after 500ms")
		}
		r := <-done
		if r.err != nil || r.res.Status != msg.StatusDone || r.at != 500*time.Millisecond {
			t.Errorf("pulse = %+v, %v, returned after %v", r.res, r.err, r.at)
		}
		if got := str(s.values(1)); got != "[map[relay:true] map[relay:false]]" {
			t.Errorf("change readings = %s", got)
		}
		s.stop(t)
	})
}

func TestPulseCutShortByStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, rn := fakePin(t, gpio.Low)
		s := start(t, Config{Points: []Point{{Name: "relay", Pin: rn, Direction: "out", Writable: true, Failsafe: "low"}}})
		synctest.Wait()
		done := make(chan msg.Result, 1)
		go func() {
			res, _ := s.dev.Apply(context.Background(), msg.Command{ID: "p1", Pulse: map[string]time.Duration{"relay": time.Minute}})
			done <- res
		}()
		time.Sleep(time.Second)
		s.stop(t)
		res := <-done
		if res.Status != msg.StatusFailed || !strings.Contains(res.Error, "cut short after 1s") {
			t.Errorf("result = %+v", res)
		}
		if pinLevel(relay) != gpio.Low {
			t.Error("relay left on after stop")
		}
	})
}

func failsafeCase(t *testing.T) (*gpiotest.Pin, Config) {
	relay, rn := fakePin(t, gpio.Low)
	_, keep := fakePin(t, gpio.Low)
	return relay, Config{Interval: time.Hour, FailsafeAfter: 5 * time.Minute, Points: []Point{
		{Name: "relay", Pin: rn, Direction: "out", Writable: true, Failsafe: "low"},
		{Name: "lamp", Pin: keep, Direction: "out", Writable: true}, // no failsafe: left alone
	}}
}

func TestFailsafeLinkDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, cfg := failsafeCase(t)
		s := start(t, cfg)
		synctest.Wait()
		if _, err := s.dev.Apply(context.Background(), msg.Command{Write: map[string]any{"relay": true, "lamp": true}}); err != nil {
			t.Fatal(err)
		}
		// A short outage: the link comes back before failsafe_after.
		s.dev.SetLinkState(false, time.Now())
		time.Sleep(4 * time.Minute)
		s.dev.SetLinkState(true, time.Now())
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		if pinLevel(relay) != gpio.High {
			t.Fatal("failsafe applied after a 4 minute outage")
		}
		// A long one.
		s.dev.SetLinkState(false, time.Now())
		time.Sleep(5*time.Minute - time.Millisecond)
		synctest.Wait()
		if pinLevel(relay) != gpio.High {
			t.Fatal("failsafe applied early")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if pinLevel(relay) != gpio.Low {
			t.Fatal("failsafe not applied after 5 minutes down")
		}
		rs := s.rec.Readings()
		if last := rs[len(rs)-1]; str(last.Values) != "map[relay:false]" {
			t.Errorf("failsafe reading = %v", last.Values)
		}
		// Back up: the outputs stay safe until commanded.
		s.dev.SetLinkState(true, time.Now())
		time.Sleep(time.Minute)
		synctest.Wait()
		if pinLevel(relay) != gpio.Low {
			t.Error("relay restored by the link coming back")
		}
		s.stop(t)
	})
}

func TestFailsafeLinkDownSinceBeforeStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, cfg := failsafeCase(t)
		relay.L = gpio.High
		d, err := New("io-1", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The gateway says, before Run, that the link has been down for 10 minutes.
		d.SetLinkState(false, time.Now().Add(-10*time.Minute))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx, adaptertest.NewRecorder()) }()
		synctest.Wait()
		if pinLevel(relay) != gpio.Low {
			t.Error("failsafe not applied at once for a link down longer than failsafe_after")
		}
		cancel()
		<-done
	})
}

func TestFailsafeOnStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		relay, cfg := failsafeCase(t)
		cfg.FailsafeAfter = 0
		s := start(t, cfg)
		synctest.Wait()
		if _, err := s.dev.Apply(context.Background(), msg.Command{Write: map[string]any{"relay": true, "lamp": true}}); err != nil {
			t.Fatal(err)
		}
		s.stop(t)
		if pinLevel(relay) != gpio.Low {
			t.Error("relay not at its failsafe level after stop")
		}
		if st, _ := s.dev.Health(); st != adapters.Down {
			t.Errorf("health after stop = %s", st)
		}
		if _, err := s.dev.Apply(context.Background(), msg.Command{Write: map[string]any{"relay": true}}); err == nil || errors.Is(err, adapters.ErrRejected) {
			t.Errorf("write after stop = %v, want a retryable error", err)
		}
	})
}

func TestCloseStopsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, name := fakePin(t, gpio.Low)
		s := start(t, Config{Points: []Point{{Name: "door", Pin: name}}})
		synctest.Wait()
		if st, detail := s.dev.Health(); st != adapters.Up {
			t.Fatalf("health = %s (%s)", st, detail)
		}
		s.dev.Close()
		time.Sleep(edgePoll) // the input watcher notices within one edge wait
		synctest.Wait()
		select {
		case err := <-s.done:
			if err != nil {
				t.Fatalf("Run = %v after Close", err)
			}
			s.done <- nil // for the cleanup
		default:
			t.Fatal("Run still running after Close")
		}
	})
}

func TestMissingPin(t *testing.T) {
	_, err := New("io-1", Config{Interval: time.Minute, Points: []Point{{Name: "door", Pin: "GPIO_NOT_HERE"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), `point "door": no pin "GPIO_NOT_HERE" on this machine`) {
		t.Fatalf("New = %v", err)
	}
}

// brokenPin fails to configure, like a line another process holds.
type brokenPin struct{ *gpiotest.Pin }

func (brokenPin) In(gpio.Pull, gpio.Edge) error { return errors.New("device or resource busy") }

func TestRunFailsOnPinSetupError(t *testing.T) {
	p, _ := fakePin(t, gpio.Low)
	name := p.N + "B"
	if err := gpioreg.Register(brokenPin{&gpiotest.Pin{N: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gpioreg.Unregister(name) })
	d, err := New("io-1", Config{Interval: time.Minute, Points: []Point{{Name: "door", Pin: name}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Run(context.Background(), adaptertest.NewRecorder())
	if err == nil || !strings.Contains(err.Error(), `point "door": set pin `+name+` to input`) {
		t.Fatalf("Run = %v", err)
	}
	if st, detail := d.Health(); st != adapters.Down || !strings.Contains(detail, "busy") {
		t.Errorf("health = %s (%s)", st, detail)
	}
}

func TestConformance(t *testing.T) {
	_, in := fakePin(t, gpio.Low)
	_, out := fakePin(t, gpio.Low)
	adaptertest.Run(t, adaptertest.Case{
		Kind:   "gpio",
		Device: "io-1",
		Config: &Config{Interval: 100 * time.Millisecond, Points: []Point{
			{Name: "door", Pin: in, Debounce: 10 * time.Millisecond},
			{Name: "relay", Pin: out, Direction: "out", Writable: true, Failsafe: "low"},
		}},
		Wait:           2 * time.Second,
		UnknownCommand: &msg.Command{ID: "c1", Device: "io-1", Write: map[string]any{"nope": true}},
		Optional:       adaptertest.Optional{HealthReporter: true, LinkObserver: true, Closer: true, PointLister: true},
	})
}
