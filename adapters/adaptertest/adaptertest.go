// Package adaptertest is the conformance suite every adapter kind passes:
// registration, config defaults, the Run lifecycle (readings tagged with the
// device, prompt and clean return on cancel), for sinks the rejection
// contract (an unknown point is ErrRejected and touches nothing), and the
// optional interfaces of package adapters: the kind implements exactly the
// ones its Case names, Health always returns a valid state and may be called
// at any time, SetLinkState may be called at any time, and Close is safe
// more than once and without Run.
package adaptertest

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Case describes one working device of a kind for the suite.
type Case struct {
	Kind   string          // registered kind name
	Device string          // device id to build it under
	Config adapters.Config // a valid config that produces readings against the test's peer
	// Wait is how long the first reading may take (default 5 s).
	Wait time.Duration
	// UnknownCommand, for sinks, is a command naming a point the device
	// does not have; Apply must reject it. Leave nil for sources only.
	UnknownCommand *msg.Command
	// Optional names the optional interfaces the kind's devices implement.
	// The suite fails when a device implements one more or one less, so a
	// method whose signature drifts cannot silently drop out of the
	// gateway's sight.
	Optional Optional
}

// Optional names the optional interfaces of package adapters.
type Optional struct {
	HealthReporter bool // adapters.HealthReporter
	LinkObserver   bool // adapters.LinkObserver
	Closer         bool // io.Closer
	PointLister    bool // adapters.PointLister
	Reader         bool // adapters.Reader
}

// Recorder is an Emitter that keeps every reading.
type Recorder struct {
	mu    sync.Mutex
	rs    []msg.Reading
	added chan struct{}
	// Err, when set, is returned by Emit (the reading is not kept).
	Err error
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder { return &Recorder{added: make(chan struct{}, 1)} }

// Emit implements adapters.Emitter.
func (r *Recorder) Emit(ctx context.Context, rs ...msg.Reading) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Err != nil {
		return r.Err
	}
	r.rs = append(r.rs, rs...)
	select {
	case r.added <- struct{}{}:
	default:
	}
	return nil
}

// Readings returns a copy of what was emitted so far.
func (r *Recorder) Readings() []msg.Reading {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]msg.Reading(nil), r.rs...)
}

// WaitN waits until at least n readings were emitted, failing t after d.
func (r *Recorder) WaitN(t testing.TB, n int, d time.Duration) []msg.Reading {
	t.Helper()
	deadline := time.After(d)
	for {
		if rs := r.Readings(); len(rs) >= n {
			return rs
		}
		select {
		case <-r.added:
		case <-deadline:
			t.Fatalf("got %d readings, want %d within %v", len(r.Readings()), n, d)
		}
	}
}

// Run runs the conformance suite for c.
func Run(t *testing.T, c Case) {
	t.Helper()
	kind, ok := adapters.Lookup(c.Kind)
	if !ok {
		t.Fatalf("kind %q not registered (have %v)", c.Kind, adapters.Kinds())
	}
	wait := c.Wait
	if wait == 0 {
		wait = 5 * time.Second
	}

	t.Run("NewConfig", func(t *testing.T) {
		a, b := kind.NewConfig(), kind.NewConfig()
		if a == nil || b == nil {
			t.Fatal("NewConfig returned nil")
		}
		if any(a) == any(b) {
			t.Fatal("NewConfig must return a fresh config each call")
		}
	})

	t.Run("Validate", func(t *testing.T) {
		if err := c.Config.Validate(); err != nil {
			t.Fatalf("the case's config does not validate: %v", err)
		}
	})

	t.Run("RunEmitsAndStops", func(t *testing.T) {
		before := runtime.NumGoroutine()
		src, err := kind.New(c.Device, c.Config, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		rec := NewRecorder()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx, rec) }()
		rs := rec.WaitN(t, 1, wait)
		for _, r := range rs {
			if r.Device != c.Device {
				t.Errorf("reading for device %q, want %q", r.Device, c.Device)
			}
			if r.Time.IsZero() {
				t.Error("reading without a time")
			}
			if len(r.Values)+len(r.Errors) == 0 {
				t.Error("reading with neither values nor errors")
			}
		}
		stopRun(t, cancel, done)
		closeSource(t, src)
		checkGoroutines(t, before)
	})

	t.Run("EmitErrorIsNotFatal", func(t *testing.T) {
		// A refused Emit (store full, shutting down) must not kill the
		// adapter: it keeps running and retries or reports later.
		src, err := kind.New(c.Device, c.Config, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		rec := NewRecorder()
		rec.Err = errors.New("adaptertest: store refused")
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx, rec) }()
		select {
		case err := <-done:
			if ctx.Err() == nil {
				t.Fatalf("Run returned %v while Emit failed; it must keep going", err)
			}
		case <-time.After(wait / 2):
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run returned %v after cancel", err)
			}
		}
		closeSource(t, src)
	})

	t.Run("OptionalInterfaces", func(t *testing.T) {
		src, err := kind.New(c.Device, c.Config, nil)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		defer closeSource(t, src)
		_, health := src.(adapters.HealthReporter)
		_, link := src.(adapters.LinkObserver)
		_, closer := src.(io.Closer)
		pl, points := src.(adapters.PointLister)
		_, reader := src.(adapters.Reader)
		if got := (Optional{HealthReporter: health, LinkObserver: link, Closer: closer, PointLister: points, Reader: reader}); got != c.Optional {
			t.Errorf("%T implements %+v, the case says %+v", src, got, c.Optional)
		}
		if points {
			seen := map[string]bool{}
			for _, p := range pl.Points() {
				if p.Name == "" || seen[p.Name] {
					t.Errorf("Points() lists an empty or repeated name %q: %+v", p.Name, pl.Points())
				}
				seen[p.Name] = true
			}
			if len(seen) == 0 {
				t.Error("Points() lists no point")
			}
		}
	})

	if c.Optional.Closer {
		t.Run("CloseWithoutRun", func(t *testing.T) {
			src, err := kind.New(c.Device, c.Config, nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			cl := src.(io.Closer)
			for i := range 2 {
				if err := cl.Close(); err != nil {
					t.Errorf("Close #%d without Run = %v, want nil", i+1, err)
				}
			}
		})
	}

	if c.Optional.HealthReporter || c.Optional.LinkObserver {
		t.Run("OptionalCallsDuringRun", func(t *testing.T) {
			// The gateway calls Health and SetLinkState from its own
			// goroutines, before, during and after Run: each call must
			// return at once with a valid state (the race detector checks
			// the rest).
			src, err := kind.New(c.Device, c.Config, nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer closeSource(t, src)
			poke := func(up bool) {
				t.Helper()
				if h, ok := src.(adapters.HealthReporter); ok {
					checkHealth(t, h)
				}
				if lo, ok := src.(adapters.LinkObserver); ok {
					callWithin(t, "SetLinkState", func() { lo.SetLinkState(up, time.Now()) })
				}
			}
			poke(true) // before Run
			rec := NewRecorder()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, rec) }()
			stop := make(chan struct{})
			poked := make(chan struct{})
			go func() {
				defer close(poked)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					poke(i%20 != 0) // mostly up, now and then a short outage
				}
			}()
			rec.WaitN(t, 1, wait)
			close(stop)
			<-poked
			poke(true)
			stopRun(t, cancel, done)
			poke(true) // after Run
		})
	}

	if c.UnknownCommand != nil {
		t.Run("SinkRejectsUnknown", func(t *testing.T) {
			src, err := kind.New(c.Device, c.Config, nil)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			sink, ok := src.(adapters.Sink)
			if !ok {
				t.Fatalf("%T has an UnknownCommand case but is not a Sink", src)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, NewRecorder()) }()
			actx, acancel := context.WithTimeout(context.Background(), wait)
			_, err = sink.Apply(actx, *c.UnknownCommand)
			acancel()
			if !errors.Is(err, adapters.ErrRejected) {
				t.Errorf("Apply(unknown point) = %v, want an error wrapping ErrRejected", err)
			}
			cancel()
			<-done
			closeSource(t, src)
		})
	}
}

// closeSource closes src if it is an io.Closer, twice: the contract says
// Close is safe more than once. Both calls must return nil.
func closeSource(t *testing.T, src adapters.Source) {
	t.Helper()
	cl, ok := src.(io.Closer)
	if !ok {
		return
	}
	for i := range 2 {
		if err := cl.Close(); err != nil {
			t.Errorf("Close #%d = %v, want nil", i+1, err)
		}
	}
}

// checkHealth fails t unless h.Health returns at once with a valid state.
func checkHealth(t *testing.T, h adapters.HealthReporter) {
	t.Helper()
	var state adapters.Health
	var detail string
	if !callWithin(t, "Health", func() { state, detail = h.Health() }) {
		return
	}
	if _, err := state.MarshalText(); err != nil {
		t.Errorf("Health() = %v (%q): %v", state, detail, err)
	}
}

// callWithin reports whether fn returned within a second, failing t if not
// (with t.Errorf: it runs on the suite's goroutines too).
func callWithin(t *testing.T, name string, fn func()) (returned bool) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
		return true
	case <-time.After(time.Second):
		t.Errorf("%s blocked for more than 1 s", name)
		return false
	}
}

// stopRun cancels a Run and fails t unless it returns nil within 3 s.
func stopRun(t *testing.T, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within 3 s of cancel")
	}
}

// checkGoroutines fails t if goroutines started by the adapter outlive Run.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines before Run, %d after it returned:\n%s", before, n, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
