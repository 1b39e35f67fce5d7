// Package serial is the adapter kind "serial": a line sensor on a serial
// port (a USB serial stick, a UART) whose byte stream is cut into frames
// (delimiter, fixed length, idle gap, start marker; see Framing) and parsed
// into named values (regex, key=value, JSON, NMEA 0183, raw; see Parse).
// Each frame that parses becomes one reading. Polled sensors get a request
// written every interval; commands {"send":"..."} write bytes to the port.
//
// The port may come and go (USB pulled, pty recreated): the device reports
// itself down (see Health), reopens with back-off and resumes without a
// restart. The port is always opened with a read timeout, so shutdown and
// unplug detection never hang on a blocked read.
//
// Tool is the field tool behind "outpost serial ports|sniff"; it frames and
// parses with this same code.
package serial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tarm/serial"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func init() {
	adapters.Register(adapters.Kind{
		Name:      "serial",
		NewConfig: func() adapters.Config { return NewConfig() },
		New: func(device string, cfg adapters.Config, log *slog.Logger) (adapters.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("serial: config is %T, want *serial.Config", cfg)
			}
			return New(device, *c, log)
		},
	})
}

const (
	// readTimeout bounds every read: it is the latency of shutdown and of
	// idle-gap detection. tarm turns it into VTIME (deciseconds, min 1).
	readTimeout = 100 * time.Millisecond
	// A read that returns no data well before readTimeout means the tty
	// was hung up (USB unplugged, pty master gone): a hung-up tty reads as
	// (0, EOF) at once, just like an expired timeout, only faster.
	fastEOFLimit = 3
	// statEvery is how often the port path is checked to still name the
	// device that is open.
	statEvery  = time.Second
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// MaxSend is the longest {"send":...} accepted.
	MaxSend = 4096
)

var (
	_ adapters.Source         = (*Device)(nil)
	_ adapters.Sink           = (*Device)(nil)
	_ adapters.HealthReporter = (*Device)(nil)
	_ io.Closer               = (*Device)(nil)
)

// errHangup is why a session ends when the tty was hung up or replaced.
var errHangup = errors.New("serial: port hung up or removed")

// Frame is one frame as the device saw it, for tracing (outpost serial sniff).
type Frame struct {
	Time   time.Time
	Bytes  []byte         // a copy the callee may keep
	Values map[string]any // nil when Err is set
	Err    error          // why the frame did not parse
}

// Device is one serial device: an adapters.Source and adapters.Sink.
type Device struct {
	id    string
	cfg   Config
	log   *slog.Logger
	parse parser
	trace func(Frame)

	running atomic.Bool
	closed  atomic.Bool
	wmu     sync.Mutex // one writer at a time: requests and sends

	mu     sync.Mutex
	port   *serial.Port // open port, nil while down
	state  adapters.Health
	detail string

	frames, parseErrors, overlong, noise, emitErrors, opens atomic.Uint64
}

// New returns a device for a validated cfg. It does not open the port: Run
// does, and keeps reopening it. log may be nil.
func New(device string, cfg Config, log *slog.Logger) (*Device, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("serial %s: %w", device, err)
	}
	p, err := newParser(cfg.Parse)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Device{
		id: device, cfg: cfg, parse: p,
		log:   log.With("device", device, "port", cfg.Port),
		state: adapters.Down, detail: "not opened yet",
	}, nil
}

// SetTrace makes Run call fn with every frame, parsed or not, from Run's
// goroutine. Call it before Run.
func (d *Device) SetTrace(fn func(Frame)) { d.trace = fn }

// Health implements adapters.HealthReporter: adapters.Up with an empty
// detail while the port is open, adapters.Down with the reason otherwise.
// Safe for concurrent use.
func (d *Device) Health() (state adapters.Health, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state, d.detail
}

// Counters returns the device's running counts: frames (parsed and
// emitted or not), parse_errors, overlong (frames dropped for exceeding
// framing.max), noise_bytes (dropped before a start marker), emit_errors
// (readings the gateway refused) and opens (successful port opens).
func (d *Device) Counters() map[string]uint64 {
	return map[string]uint64{
		"frames":       d.frames.Load(),
		"parse_errors": d.parseErrors.Load(),
		"overlong":     d.overlong.Load(),
		"noise_bytes":  d.noise.Load(),
		"emit_errors":  d.emitErrors.Load(),
		"opens":        d.opens.Load(),
	}
}

// Close stops a running Run (it returns nil within about 100 ms) and closes
// the port. Safe to call more than once, and before or without Run.
func (d *Device) Close() error {
	d.closed.Store(true)
	d.mu.Lock()
	p := d.port
	d.mu.Unlock()
	if p != nil {
		_ = p.Close() // Run sees the closed file and returns
	}
	return nil
}

// Run opens the port and reads frames until ctx is done, then returns nil.
// An unavailable port is not an error: the device reports itself down and
// retries with back-off (100 ms doubling to 5 s). A reading the emitter
// refuses is dropped and counted (the sensor's next frame is newer data);
// Run keeps going. Run must not be called twice at once.
func (d *Device) Run(ctx context.Context, out adapters.Emitter) error {
	if !d.running.CompareAndSwap(false, true) {
		return fmt.Errorf("serial %s: Run called twice", d.id)
	}
	defer d.running.Store(false)
	backoff := minBackoff
	var downSince time.Time
	failures := 0
	for ctx.Err() == nil && !d.closed.Load() {
		p, ident, err := d.open()
		if err != nil {
			if failures == 0 {
				downSince = time.Now()
			}
			failures++
			d.setDown(err, failures == 1)
			if !sleep(ctx, backoff) {
				break
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
		d.opens.Add(1)
		d.setUp(p)
		if failures > 0 {
			d.log.Info("serial port recovered", "failures", failures, "down_for", time.Since(downSince).Round(time.Millisecond))
		} else {
			d.log.Info("serial port open")
		}
		failures = 0
		err = d.session(ctx, p, ident, out)
		d.mu.Lock()
		d.port = nil
		d.mu.Unlock()
		_ = p.Close()
		if ctx.Err() != nil || d.closed.Load() {
			break
		}
		downSince, failures = time.Now(), 1
		d.setDown(err, true)
		if !sleep(ctx, minBackoff) {
			break
		}
	}
	d.mu.Lock()
	d.state, d.detail = adapters.Down, "stopped"
	d.mu.Unlock()
	return nil
}

func (d *Device) setUp(p *serial.Port) {
	d.mu.Lock()
	d.port, d.state, d.detail = p, adapters.Up, ""
	d.mu.Unlock()
}

// setDown records why the port is down, logging it when first is set (once
// per outage, not per retry).
func (d *Device) setDown(err error, first bool) {
	d.mu.Lock()
	d.state, d.detail = adapters.Down, err.Error()
	d.mu.Unlock()
	if first {
		d.log.Warn("serial port down; will reopen", "err", err)
	}
}

// portIdent identifies the device a path names, to notice it being
// replaced (a replugged adapter can come back under the same by-id name
// with a different device number, a recreated pty certainly does).
type portIdent struct{ dev, ino uint64 }

func identify(path string) (portIdent, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return portIdent{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return portIdent{}, nil
	}
	return portIdent{uint64(st.Rdev), st.Ino}, nil
}

func (d *Device) open() (*serial.Port, portIdent, error) {
	ident, err := identify(d.cfg.Port)
	if err != nil {
		return nil, ident, fmt.Errorf("serial %s: %w", d.id, err)
	}
	par, _ := parity(d.cfg.Parity)
	p, err := serial.OpenPort(&serial.Config{
		Name:        d.cfg.Port,
		Baud:        d.cfg.Baud,
		ReadTimeout: readTimeout, // never without: Close would hang on a pending read
		Size:        byte(d.cfg.Data),
		Parity:      serial.Parity(par),
		StopBits:    serial.StopBits(d.cfg.Stop),
	})
	if err != nil {
		return nil, ident, fmt.Errorf("serial %s: open %s: %w", d.id, d.cfg.Port, err)
	}
	return p, ident, nil
}

// session reads from an open port until ctx is done (nil) or the port
// fails (the error).
func (d *Device) session(ctx context.Context, p *serial.Port, ident portIdent, out adapters.Emitter) error {
	fr := newFramer(d.cfg.Framing)
	var emitFailing bool
	handle := func(frame []byte, at time.Time) {
		d.handle(ctx, frame, at, out, &emitFailing)
	}
	defer func() {
		d.frames.Add(fr.frames)
		d.overlong.Add(fr.overlong)
		d.noise.Add(fr.noise)
	}()
	buf := make([]byte, 4096)
	var nextReq time.Time
	lastStat := time.Now()
	fastEOF := 0
	for {
		if ctx.Err() != nil || d.closed.Load() {
			return nil
		}
		if d.cfg.Request != "" && !time.Now().Before(nextReq) {
			if err := d.write(p, Bytes(d.cfg.Request)); err != nil {
				return fmt.Errorf("serial %s: write request: %w", d.id, err)
			}
			nextReq = time.Now().Add(d.cfg.Interval)
		}
		t0 := time.Now()
		n, err := p.Read(buf)
		now := time.Now()
		if n > 0 {
			fastEOF = 0
			fr.feed(buf[:n], now, handle)
		}
		switch {
		case err == nil || err == io.EOF && n > 0:
		case err == io.EOF: // no data within readTimeout, or a hung-up tty
			if now.Sub(t0) < readTimeout/2 {
				if fastEOF++; fastEOF >= fastEOFLimit {
					return errHangup
				}
			} else {
				fastEOF = 0
			}
			fr.tick(now, handle)
		default:
			return fmt.Errorf("serial %s: read: %w", d.id, err)
		}
		d.frames.Add(fr.frames)
		d.overlong.Add(fr.overlong)
		d.noise.Add(fr.noise)
		fr.frames, fr.overlong, fr.noise = 0, 0, 0
		if now.Sub(lastStat) >= statEvery {
			lastStat = now
			if id, err := identify(d.cfg.Port); err != nil || id != ident {
				return errHangup
			}
		}
	}
}

// handle parses one frame and emits it as a reading.
func (d *Device) handle(ctx context.Context, frame []byte, at time.Time, out adapters.Emitter, emitFailing *bool) {
	vs, err := d.parse(frame)
	if d.trace != nil {
		d.trace(Frame{Time: at, Bytes: append([]byte(nil), frame...), Values: vs, Err: err})
	}
	if err != nil {
		d.parseErrors.Add(1)
		d.log.Debug("serial frame did not parse", "err", err, "frame", fmt.Sprintf("%q", frame))
		return
	}
	if err := out.Emit(ctx, msg.Reading{Device: d.id, Time: at, Values: vs}); err != nil {
		d.emitErrors.Add(1)
		if !*emitFailing && ctx.Err() == nil {
			d.log.Warn("serial readings refused by the gateway; dropping them until it accepts again", "err", err)
		}
		*emitFailing = true
		return
	}
	if *emitFailing {
		d.log.Info("serial readings accepted again")
		*emitFailing = false
	}
}

func (d *Device) write(p *serial.Port, b []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	_, err := p.Write(b)
	return err
}

// Apply performs {"send":"..."}: the bytes are written to the port, and the
// result is done once the write returned (the bytes are with the driver).
// Any other command, or an empty or overlong send, is rejected (wrapping
// adapters.ErrRejected). A port that is down gives a retryable error.
func (d *Device) Apply(ctx context.Context, cmd msg.Command) (msg.Result, error) {
	if cmd.Send == nil {
		return msg.Result{}, fmt.Errorf("serial %s: only {\"send\":...} commands are supported: %w", d.id, adapters.ErrRejected)
	}
	b := []byte(*cmd.Send)
	if len(b) == 0 || len(b) > MaxSend {
		return msg.Result{}, fmt.Errorf("serial %s: send of %d bytes (want 1 to %d): %w", d.id, len(b), MaxSend, adapters.ErrRejected)
	}
	if err := ctx.Err(); err != nil {
		return msg.Result{}, fmt.Errorf("serial %s: send: %w", d.id, err)
	}
	d.mu.Lock()
	p, detail := d.port, d.detail
	d.mu.Unlock()
	if p == nil {
		return msg.Result{}, fmt.Errorf("serial %s: port %s is down (%s)", d.id, d.cfg.Port, detail)
	}
	if err := d.write(p, b); err != nil {
		return msg.Result{}, fmt.Errorf("serial %s: send: %w", d.id, err)
	}
	return msg.Result{Status: msg.StatusDone, Values: map[string]any{"bytes": len(b)}}, nil
}

// sleep waits d or until ctx is done; it reports whether to go on.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
