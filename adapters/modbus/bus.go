package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/goburrow/modbus"
)

// ErrClosed is returned for a request on a bus that was released.
var ErrClosed = errors.New("modbus: bus closed")

// Bus is one shared transport (a serial port, or one TCP host:port) with
// its scheduler: a single goroutine that sends every request of every
// device on it, one at a time, keeping the inter-frame gap (3.5 character
// times, 1.75 ms above 19200 baud) plus the asking device's turnaround
// between a reply and the next frame.
//
// Buses are shared through a package-level registry keyed by the
// transport: Acquire returns the running bus for a URL or starts one, and
// the last Release stops it and closes the port. Devices on one bus must
// agree on its line parameters.
type Bus struct {
	spec busSpec
	log  *slog.Logger
	jobs chan *job
	stop chan struct{}
	done chan struct{}
	refs int // guarded by registry.mu
}

type job struct {
	ctx        context.Context
	unit       byte
	timeout    time.Duration
	turnaround time.Duration
	fn         func(modbus.Client) error
	done       chan error
}

var registry struct {
	mu    sync.Mutex
	buses map[string]*Bus
}

// Acquire returns the bus for a transport URL, starting it if no device
// uses it yet. Every Acquire must be paired with one Release. It fails
// when the URL is invalid or conflicts with the line parameters of the
// running bus on the same port.
func Acquire(rawURL string, log *slog.Logger) (*Bus, error) {
	s, err := parseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("modbus: url: %w", err)
	}
	return acquire(s, log)
}

func acquire(s busSpec, log *slog.Logger) (*Bus, error) {
	if s.serial() {
		// /dev/serial/by-id/... and /dev/ttyUSB0 are one port, so one bus.
		if p, err := filepath.EvalSymlinks(s.addr); err == nil {
			s.addr = p
		}
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.buses == nil {
		registry.buses = map[string]*Bus{}
	}
	if b, ok := registry.buses[s.key()]; ok {
		if b.spec != s {
			return nil, fmt.Errorf("modbus: %s conflicts with %s, already open on the same port", s, b.spec)
		}
		b.refs++
		return b, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bus{spec: s, log: log.With("bus", s.String()), jobs: make(chan *job),
		stop: make(chan struct{}), done: make(chan struct{}), refs: 1}
	registry.buses[s.key()] = b
	go b.run()
	return b, nil
}

// Release gives the bus back; the last Release stops its scheduler and
// closes the port, and returns once both are done.
func (b *Bus) Release() {
	registry.mu.Lock()
	b.refs--
	last := b.refs == 0
	if last {
		delete(registry.buses, b.spec.key())
	}
	registry.mu.Unlock()
	if last {
		close(b.stop)
		<-b.done
	}
}

// Do runs fn with a client addressed to unit, on the bus's goroutine, once
// every request queued before it has finished. timeout bounds each request
// fn makes; turnaround is an extra pause after the previous reply. Do
// blocks until fn returns or ctx is done; fn must not keep the client.
// Requests are served in arrival order.
func (b *Bus) Do(ctx context.Context, unit byte, timeout, turnaround time.Duration, fn func(modbus.Client) error) error {
	j := &job{ctx: ctx, unit: unit, timeout: timeout, turnaround: turnaround, fn: fn, done: make(chan error, 1)}
	select {
	case b.jobs <- j:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stop:
		return ErrClosed
	}
	select {
	case err := <-j.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the job finishes on its own, bounded by timeout
	}
}

func (b *Bus) run() {
	defer close(b.done)
	l := newLink(b.spec)
	defer func() { _ = l.close() }()
	var last time.Time // end of the previous exchange
	gap := b.spec.frameGap()
	for {
		var j *job
		select {
		case <-b.stop:
			return
		case j = <-b.jobs:
		}
		if err := j.ctx.Err(); err != nil {
			j.done <- err
			continue
		}
		if wait := time.Until(last.Add(gap + j.turnaround)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-b.stop:
				t.Stop()
				j.done <- ErrClosed
				return
			}
		}
		err := j.fn(&resetting{Client: l.client(j.unit, j.timeout), l: l})
		last = time.Now()
		j.done <- err
	}
}

// resetting resets the link after every failed request, so a request
// following a timeout or a broken connection starts clean.
type resetting struct {
	modbus.Client
	l link
}

func (r *resetting) ReadCoils(a, q uint16) ([]byte, error) { return r.check(r.Client.ReadCoils(a, q)) }
func (r *resetting) ReadDiscreteInputs(a, q uint16) ([]byte, error) {
	return r.check(r.Client.ReadDiscreteInputs(a, q))
}
func (r *resetting) ReadHoldingRegisters(a, q uint16) ([]byte, error) {
	return r.check(r.Client.ReadHoldingRegisters(a, q))
}
func (r *resetting) ReadInputRegisters(a, q uint16) ([]byte, error) {
	return r.check(r.Client.ReadInputRegisters(a, q))
}
func (r *resetting) WriteSingleCoil(a, v uint16) ([]byte, error) {
	return r.check(r.Client.WriteSingleCoil(a, v))
}
func (r *resetting) WriteSingleRegister(a, v uint16) ([]byte, error) {
	return r.check(r.Client.WriteSingleRegister(a, v))
}
func (r *resetting) WriteMultipleCoils(a, q uint16, v []byte) ([]byte, error) {
	return r.check(r.Client.WriteMultipleCoils(a, q, v))
}
func (r *resetting) WriteMultipleRegisters(a, q uint16, v []byte) ([]byte, error) {
	return r.check(r.Client.WriteMultipleRegisters(a, q, v))
}

func (r *resetting) check(b []byte, err error) ([]byte, error) {
	if err != nil {
		r.l.reset(err)
	}
	return b, err
}

// read reads a request's range and returns one uint16 per register, or
// per bit (0 or 1) for coil and discrete tables.
func read(c modbus.Client, t table, start uint16, count int) ([]uint16, error) {
	var (
		b   []byte
		err error
	)
	switch t {
	case tableCoil:
		b, err = c.ReadCoils(start, uint16(count))
	case tableDiscrete:
		b, err = c.ReadDiscreteInputs(start, uint16(count))
	case tableInput:
		b, err = c.ReadInputRegisters(start, uint16(count))
	default:
		b, err = c.ReadHoldingRegisters(start, uint16(count))
	}
	if err != nil {
		return nil, err
	}
	w := make([]uint16, count)
	if t.bits() {
		if len(b) < (count+7)/8 {
			return nil, fmt.Errorf("modbus: %d bytes for %d bits", len(b), count)
		}
		for i := range w {
			w[i] = uint16(b[i/8] >> (i % 8) & 1)
		}
		return w, nil
	}
	if len(b) < 2*count {
		return nil, fmt.Errorf("modbus: %d bytes for %d registers", len(b), count)
	}
	for i := range w {
		w[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	return w, nil
}
