// Package adaptertest is the conformance suite every adapter kind passes:
// registration, config defaults, the Run lifecycle (readings tagged with the
// device, prompt and clean return on cancel), and, for sinks, the rejection
// contract (an unknown point is ErrRejected and touches nothing).
package adaptertest

import (
	"context"
	"errors"
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
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Run did not return within 3 s of cancel")
		}
		if c, ok := src.(interface{ Close() error }); ok {
			_ = c.Close()
		}
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
		if c, ok := src.(interface{ Close() error }); ok {
			_ = c.Close()
		}
	})

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
			if c, ok := src.(interface{ Close() error }); ok {
				_ = c.Close()
			}
		})
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
