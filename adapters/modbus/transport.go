package modbus

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/goburrow/modbus"
	"github.com/goburrow/serial"
)

// A link is the open side of a bus: it hands out a goburrow client for
// one unit and one request timeout. Links are owned by the bus worker and
// used from that goroutine only.
type link interface {
	client(unit byte, timeout time.Duration) modbus.Client
	// reset drops the connection after a failed request; the next request
	// reconnects. goburrow's TCP transport never does this by itself.
	reset(err error)
	close() error
}

func newLink(s busSpec) link {
	switch s.scheme {
	case "tcp":
		h := modbus.NewTCPClientHandler(s.addr)
		h.IdleTimeout = 0 // we close on errors and at release; no idle timer
		return &tcpLink{h: h, c: modbus.NewClient(h)}
	case "ascii":
		h := modbus.NewASCIIClientHandler(s.addr)
		h.BaudRate, h.DataBits, h.Parity, h.StopBits = s.baud, s.dataBits, s.parity, s.stopBits
		h.IdleTimeout = 0
		return &asciiLink{h: h, c: modbus.NewClient(h)}
	}
	t := &rtuTransport{spec: s}
	p := &modbus.RTUClientHandler{} // only its packager (framing, CRC) is used
	return &rtuLink{t: t, p: p, c: modbus.NewClient2(p, t)}
}

// tcpLink is Modbus TCP with goburrow's own transport.
type tcpLink struct {
	h *modbus.TCPClientHandler
	c modbus.Client
}

func (l *tcpLink) client(unit byte, timeout time.Duration) modbus.Client {
	l.h.SlaveId, l.h.Timeout = unit, timeout
	return l.c
}

func (l *tcpLink) reset(err error) {
	var me *modbus.ModbusError
	if !errors.As(err, &me) { // a timeout, a broken pipe, a late reply: all desynchronise the stream
		_ = l.h.Close()
	}
}

func (l *tcpLink) close() error { return l.h.Close() }

// asciiLink is Modbus ASCII with goburrow's own serial transport.
type asciiLink struct {
	h *modbus.ASCIIClientHandler
	c modbus.Client
}

func (l *asciiLink) client(unit byte, timeout time.Duration) modbus.Client {
	l.h.SlaveId, l.h.Timeout = unit, timeout
	return l.c
}

func (l *asciiLink) reset(err error) {
	var me *modbus.ModbusError
	if !errors.As(err, &me) {
		_ = l.h.Close()
	}
}

func (l *asciiLink) close() error { return l.h.Close() }

// rtuLink is Modbus RTU framing (goburrow's packager) over our own
// transport, on a serial port (rtu://) or a TCP stream (rtuovertcp://).
type rtuLink struct {
	t *rtuTransport
	p *modbus.RTUClientHandler
	c modbus.Client
}

func (l *rtuLink) client(unit byte, timeout time.Duration) modbus.Client {
	l.p.SlaveId, l.t.timeout = unit, timeout
	return l.c
}

func (l *rtuLink) reset(err error) { l.t.reset(err) }
func (l *rtuLink) close() error    { return l.t.close() }

// stream is an open serial port or TCP connection with deadlines.
type stream interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Errors of the RTU transport.
var (
	// errNoAnswer: nothing at all came back before the timeout.
	errNoAnswer = errors.New("modbus: no answer (timeout)")
	// errShortFrame: a reply started but did not complete in time.
	errShortFrame = errors.New("modbus: incomplete reply")
	// errBadFrame: the reply's function code matches neither the request nor its exception.
	errBadFrame = errors.New("modbus: unexpected reply")
)

// rtuTransport implements goburrow's Transporter for RTU frames. Unlike
// goburrow's serial transport it does not sleep a fixed 1.5 character
// times per byte before reading: it reads until the frame is complete (its
// length follows from the request), discards stale bytes before each
// request, and uses the poller's deadlines instead of select(2), so it
// works for any fd number and Close interrupts a read.
type rtuTransport struct {
	spec    busSpec
	timeout time.Duration
	s       stream
	// quiet is set after a failed request: the next Send first waits for
	// the line to fall silent, so a late reply is not taken as its answer.
	quiet bool
	buf   [512]byte
}

func (t *rtuTransport) open() error {
	if t.s != nil {
		return nil
	}
	var err error
	if t.spec.serial() {
		t.s, err = openSerial(t.spec)
	} else {
		var c net.Conn
		c, err = net.DialTimeout("tcp", t.spec.addr, max(t.timeout, time.Second))
		if err == nil {
			t.s = c.(*net.TCPConn)
		}
	}
	return err
}

func (t *rtuTransport) reset(err error) {
	var me *modbus.ModbusError
	if err == nil || errors.As(err, &me) {
		return
	}
	t.quiet = true
	// A serial port stays open across timeouts and garbled frames; any other
	// failure (unplugged adapter, closed TCP stream) reopens it.
	if t.spec.serial() && (errors.Is(err, errNoAnswer) || isFrameError(err)) {
		return
	}
	_ = t.close()
}

func (t *rtuTransport) close() error {
	if t.s == nil {
		return nil
	}
	err := t.s.Close()
	t.s = nil
	return err
}

// drain discards whatever is waiting, and if quiet is set keeps reading
// until the line has been silent for a while.
func (t *rtuTransport) drain() error {
	silence := time.Duration(0)
	if t.quiet {
		silence = max(4*t.spec.frameGap(), 20*time.Millisecond)
		t.quiet = false
	}
	for {
		if err := t.s.SetReadDeadline(time.Now().Add(silence)); err != nil {
			return err
		}
		n, err := t.s.Read(t.buf[:])
		if n > 0 {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || n == 0 && err == nil {
			return nil
		}
		return err
	}
}

// Send writes one request frame and returns the reply frame.
func (t *rtuTransport) Send(req []byte) ([]byte, error) {
	if err := t.open(); err != nil {
		return nil, err
	}
	if err := t.drain(); err != nil {
		return nil, err
	}
	want := rtuReplyLen(req)
	// The deadline covers the request's and the reply's wire time plus the timeout.
	wire := time.Duration(len(req)+want) * t.spec.charTime()
	deadline := time.Now().Add(wire + t.timeout)
	if err := t.s.SetWriteDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := t.s.Write(req); err != nil {
		return nil, err
	}
	if err := t.s.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n := 0
	for n < want {
		k, err := t.s.Read(t.buf[n:])
		n += k
		if n >= 2 && t.buf[1] != req[1] {
			if t.buf[1] != req[1]|0x80 {
				return nil, fmt.Errorf("%w: function %#x to request %#x", errBadFrame, t.buf[1], req[1])
			}
			want = 5 // unit, function|0x80, exception code, CRC
		}
		if n >= want {
			break
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if n == 0 {
					return nil, errNoAnswer
				}
				return nil, fmt.Errorf("%w: %d of %d bytes", errShortFrame, n, want)
			}
			return nil, err
		}
	}
	return append([]byte(nil), t.buf[:want]...), nil
}

// rtuReplyLen is the length of the normal reply to an RTU request.
func rtuReplyLen(req []byte) int {
	const head = 4 // unit, function, CRC
	count := int(req[4])<<8 | int(req[5])
	switch req[1] {
	case modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs:
		return head + 1 + (count+7)/8
	case modbus.FuncCodeReadHoldingRegisters, modbus.FuncCodeReadInputRegisters:
		return head + 1 + 2*count
	case modbus.FuncCodeWriteSingleCoil, modbus.FuncCodeWriteSingleRegister,
		modbus.FuncCodeWriteMultipleCoils, modbus.FuncCodeWriteMultipleRegisters:
		return head + 4
	}
	return 256
}

// isFrameError reports a garbled reply (CRC, unit id, length, function):
// the line is alive but the frame was bad.
func isFrameError(err error) bool {
	var me *modbus.ModbusError
	return err != nil && !errors.As(err, &me) && !isNoAnswer(err)
}

// isNoAnswer reports a request that got no reply at all: a timeout, or a
// link that is down (refused, reset, port missing).
func isNoAnswer(err error) bool {
	if err == nil {
		return false
	}
	var me *modbus.ModbusError
	if errors.As(err, &me) || errors.Is(err, errShortFrame) || errors.Is(err, errBadFrame) {
		return false
	}
	if errors.Is(err, errNoAnswer) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, serial.ErrTimeout) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var pe *os.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}
