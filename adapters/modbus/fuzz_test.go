package modbus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/goburrow/modbus"
)

// replayStream is a serial line whose device answers a request with reply,
// chunk bytes per read; before the request, and once reply is used up, a
// read times out at once.
type replayStream struct {
	req   []byte
	reply []byte
	chunk int
}

func (s *replayStream) Read(p []byte) (int, error) {
	if s.req == nil || len(s.reply) == 0 {
		return 0, os.ErrDeadlineExceeded
	}
	n := copy(p[:min(len(p), s.chunk)], s.reply)
	s.reply = s.reply[n:]
	return n, nil
}

func (s *replayStream) Write(p []byte) (int, error) {
	s.req = bytes.Clone(p)
	return len(p), nil
}

func (s *replayStream) Close() error                     { return nil }
func (s *replayStream) SetReadDeadline(time.Time) error  { return nil }
func (s *replayStream) SetWriteDeadline(time.Time) error { return nil }

// tcpReplay stands in for goburrow's TCP transport: it returns reply as one
// ADU framed the way that transport frames one (the 7-byte MBAP header,
// then as many bytes as its length field says).
type tcpReplay struct{ reply []byte }

func (r tcpReplay) Send([]byte) ([]byte, error) {
	if len(r.reply) < 7 {
		return nil, io.ErrUnexpectedEOF
	}
	n := int(binary.BigEndian.Uint16(r.reply[4:]))
	if n < 1 || n > 254 {
		return nil, errors.New("modbus: bad length")
	}
	if len(r.reply) < 6+n {
		return nil, io.ErrUnexpectedEOF
	}
	return r.reply[:6+n], nil
}

// crc16 is the Modbus RTU CRC, low byte first on the wire.
func crc16(b []byte) []byte {
	crc := uint16(0xFFFF)
	for _, x := range b {
		crc ^= uint16(x)
		for range 8 {
			if crc&1 == 1 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return []byte{byte(crc), byte(crc >> 8)}
}

var readFunc = [numTables]byte{modbus.FuncCodeReadCoils, modbus.FuncCodeReadDiscreteInputs, modbus.FuncCodeReadInputRegisters, modbus.FuncCodeReadHoldingRegisters}

// FuzzResponse reads count items of a table from a device whose reply is
// reply, over RTU (this package's transport and goburrow's RTU framing) or
// TCP (goburrow's MBAP framing), cut into reads of any size. The low bits
// of mode pick the table, the transport and the read size; its top bit
// frames reply as the device would (unit, function, byte count, CRC or
// MBAP header) so that the fuzzer gets past the checksums, and the next
// frames it as an exception reply with reply's first byte as the code. It checks: no
// panic; an error or exactly count items; bits are 0 or 1; a well-framed
// reply decodes to exactly its data, and an exception reply to a
// ModbusError with its code; the request on the wire is well formed; and
// over RTU a reply that came is never taken for no answer (which decides
// whether the line is reopened). Seeds beyond these are in
// testdata/fuzz/FuzzResponse.
func FuzzResponse(f *testing.F) {
	f.Add(uint8(0x83), uint16(1), []byte{0x12, 0x34, 0xAB, 0xCD})          // 2 holding registers, framed
	f.Add(uint8(0x80), uint16(9), []byte{0xFF, 0x03})                      // 10 coils, framed
	f.Add(uint8(0x87), uint16(0), []byte{0x00, 0x2A})                      // 1 holding register over TCP, framed
	f.Add(uint8(0xC3), uint16(0), []byte{0x02})                            // exception 2, framed
	f.Add(uint8(0x03), uint16(0), []byte{7, 0x83, 0x02, 0x20, 0xF0})       // exception 2, raw with its CRC
	f.Add(uint8(0x13), uint16(2), []byte{7, 0x03, 6, 0, 1, 0, 2})          // short reply, 3 bytes a read
	f.Add(uint8(0x07), uint16(0), []byte{0, 1, 0, 0, 0, 5, 7, 3, 2, 0, 1}) // raw TCP, transaction 1
	f.Fuzz(func(t *testing.T, mode uint8, count uint16, reply []byte) {
		const unit, start = 7, 100
		tab := table(mode & 3)
		overTCP := mode&4 != 0
		framed := mode&0x80 != 0
		n := 1 + int(count)%tab.limit()
		fn := readFunc[tab]
		exception := framed && mode&0x40 != 0
		body := reply
		if framed {
			code := fn
			if exception {
				code |= 0x80
				body = reply[:min(1, len(reply))] // the exception code
			} else {
				body = append([]byte{byte(len(reply))}, reply...)
			}
			if overTCP {
				body = append([]byte{0, 1, 0, 0, 0, byte(len(body) + 2), unit, code}, body...)
			} else {
				body = append([]byte{unit, code}, body...)
				body = append(body, crc16(body)...)
			}
		}

		var c modbus.Client
		var s *replayStream
		if overTCP {
			p := modbus.NewTCPClientHandler("fuzz")
			p.SlaveId = unit
			c = modbus.NewClient2(p, tcpReplay{reply: body})
		} else {
			l := newLink(busSpec{scheme: "rtu", addr: "fuzz", baud: 115200, dataBits: 8, parity: "N", stopBits: 1}).(*rtuLink)
			s = &replayStream{reply: bytes.Clone(body), chunk: 1 + int(mode>>3&7)}
			l.t.s = s
			c = l.client(unit, time.Second)
		}
		w, err := read(c, tab, start, n)

		if s != nil {
			want := append([]byte{unit, fn, 0, start, byte(n >> 8), byte(n)}, nil...)
			if len(s.req) != 8 || !bytes.Equal(s.req[:6], want) || !bytes.Equal(s.req[6:], crc16(want)) {
				t.Fatalf("request % x, want % x + CRC", s.req, want)
			}
			if (len(body) == 0) != isNoAnswer(err) {
				t.Fatalf("%d reply bytes, isNoAnswer(%v) = %v", len(body), err, isNoAnswer(err))
			}
		}
		if err != nil {
			if w != nil {
				t.Fatalf("words %v with error %v", w, err)
			}
			var me *modbus.ModbusError
			if exception && len(reply) > 0 && (!errors.As(err, &me) || me.FunctionCode != fn|0x80 || me.ExceptionCode != reply[0]) {
				t.Fatalf("exception reply % x: err %v", body, err)
			}
			if framed && !exception && len(reply) == wantBytes(tab, n) {
				t.Fatalf("well-framed reply % x for %d %s: %v", body, n, tab, err)
			}
			return
		}
		if exception {
			t.Fatalf("exception reply % x gave %v", body, w)
		}
		if len(w) != n {
			t.Fatalf("%d items for %d", len(w), n)
		}
		for i, v := range w {
			if tab.bits() && v > 1 {
				t.Fatalf("bit %d is %d", i, v)
			}
			if framed && !tab.bits() && v != binary.BigEndian.Uint16(reply[2*i:]) {
				t.Fatalf("register %d: %#x from % x", i, v, reply)
			}
			if framed && tab.bits() && v != uint16(reply[i/8]>>(i%8)&1) {
				t.Fatalf("bit %d: %d from % x", i, v, reply)
			}
		}
	})
}

// wantBytes is the data bytes a reply carries for n items of t.
func wantBytes(t table, n int) int {
	if t.bits() {
		return (n + 7) / 8
	}
	return 2 * n
}
