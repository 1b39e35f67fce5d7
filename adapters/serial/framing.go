package serial

import (
	"bytes"
	"time"
)

// framer cuts a byte stream into frames as Framing says. It never holds more
// than max+len(delimiter) bytes: an overlong frame is dropped and counted,
// and the framer resynchronises on the next boundary (the next delimiter,
// the next start marker, or the next idle gap).
//
// A framer is not safe for concurrent use. The frame passed to emit is only
// valid during the call.
type framer struct {
	delim   []byte
	stripCR bool
	fixed   int
	idle    time.Duration
	start   []byte
	max     int

	buf     []byte
	inFrame bool      // the start marker was seen (always true without one)
	discard bool      // dropping an overlong frame until the next boundary
	last    time.Time // arrival of the last byte, for idle framing

	// Counters, read by the owner between calls.
	frames   uint64 // frames emitted
	noise    uint64 // bytes dropped while looking for the start marker
	overlong uint64 // frames dropped for exceeding max
}

func newFramer(f Framing) *framer {
	d := f.delimiter()
	fr := &framer{
		delim:   d,
		stripCR: string(d) == "\n",
		fixed:   f.Fixed,
		idle:    f.Idle,
		start:   Bytes(f.Start),
		max:     f.Max,
	}
	if fr.max <= 0 {
		fr.max = DefaultMax
	}
	fr.reset()
	return fr
}

type emitFunc func(frame []byte, at time.Time)

// reset starts looking for the next frame.
func (f *framer) reset() {
	f.buf = f.buf[:0]
	f.inFrame = len(f.start) == 0
}

// feed takes bytes that arrived at now.
func (f *framer) feed(p []byte, now time.Time, emit emitFunc) {
	if len(p) == 0 {
		return
	}
	f.tick(now, emit)
	for _, b := range p {
		f.byte(b, now, emit)
	}
	f.last = now
}

// tick ends an idle-framed frame once the line has been silent long enough.
// The owner calls it when a read returns no data.
func (f *framer) tick(now time.Time, emit emitFunc) {
	if f.idle <= 0 || now.Sub(f.last) < f.idle {
		return
	}
	if f.discard {
		f.discard = false
	} else if f.inFrame && len(f.buf) > 0 {
		f.emit(f.buf, f.last, emit)
	} else {
		f.noise += uint64(len(f.buf)) // a partial start marker
	}
	f.reset()
}

func (f *framer) emit(frame []byte, at time.Time, emit emitFunc) {
	if len(frame) > f.max {
		f.overlong++
		return
	}
	f.frames++
	emit(frame, at)
}

func (f *framer) byte(b byte, now time.Time, emit emitFunc) {
	if f.discard {
		switch {
		case f.idle > 0:
			// Dropped until the next gap (tick).
		case len(f.start) > 0:
			// Never reached: with a start marker, an overlong frame goes
			// straight back to hunting.
		default:
			// Keep a window of the last len(delim) bytes to see the delimiter.
			f.buf = append(f.buf, b)
			if len(f.buf) > len(f.delim) {
				f.buf = f.buf[:copy(f.buf, f.buf[1:])]
			}
			if bytes.Equal(f.buf, f.delim) {
				f.discard = false
				f.reset()
			}
		}
		return
	}
	if !f.inFrame {
		// Hunting for the start marker in a window of its length.
		f.buf = append(f.buf, b)
		if len(f.buf) > len(f.start) {
			f.noise++
			f.buf = f.buf[:copy(f.buf, f.buf[1:])]
		}
		f.inFrame = bytes.Equal(f.buf, f.start)
		return
	}
	f.buf = append(f.buf, b)
	switch {
	case f.fixed > 0:
		if len(f.buf) == f.fixed {
			f.emit(f.buf, now, emit)
			f.reset()
		}
		return
	case len(f.delim) > 0:
		if bytes.HasSuffix(f.buf, f.delim) {
			frame := f.buf[:len(f.buf)-len(f.delim)]
			if f.stripCR {
				frame = bytes.TrimSuffix(frame, []byte{'\r'})
			}
			f.emit(frame, now, emit)
			f.reset()
			return
		}
		f.restartOnStart()
		// The frame will be at least this long even if the delimiter
		// starts in what we hold.
		if len(f.buf)-len(f.delim)+1 > f.max {
			f.overlong++
			f.buf = f.buf[:0]
			if len(f.start) > 0 {
				f.reset()
			} else {
				f.discard = true
			}
		}
	default: // idle
		f.restartOnStart()
		if len(f.buf) > f.max {
			f.overlong++
			f.buf = f.buf[:0]
			f.discard = true
		}
	}
}

// restartOnStart restarts the frame when a second start marker shows up in
// it: the bytes before it were a truncated frame (noise).
func (f *framer) restartOnStart() {
	if len(f.start) == 0 || len(f.buf) <= len(f.start) || !bytes.HasSuffix(f.buf, f.start) {
		return
	}
	f.noise += uint64(len(f.buf) - len(f.start))
	f.buf = append(f.buf[:0], f.start...)
}
