package mqttwire

import (
	"errors"
	"fmt"
)

// ErrConnectTooLarge and ErrConnectProtocol are a ConnectScan's refusals.
var (
	ErrConnectTooLarge = errors.New("CONNECT larger than allowed")
	ErrConnectProtocol = errors.New("CONNECT with a protocol error")
)

// ConnectScan follows the bytes read from a connection until its first
// packet is complete. It refuses a CONNECT announcing more than max bytes
// before they are read, and, in an MQTT 5 CONNECT, a property other than
// a user property that appears twice (a protocol error mochi accepts).
// A first packet that is not a CONNECT is left to mochi, which refuses it.
type ConnectScan struct {
	max  int
	hdr  []byte // fixed header bytes so far
	need int    // remaining length, once the header is complete (-1 before)
	body []byte
	done bool
}

// NewConnectScan scans for a CONNECT of at most max bytes.
func NewConnectScan(max int) *ConnectScan { return &ConnectScan{max: max, need: -1} }

// Done reports whether the first packet is complete (or left to the
// broker).
func (s *ConnectScan) Done() bool { return s.done }

// Feed takes the next bytes read. It returns a non-nil error when the
// connection must be closed; write, when not nil, is the CONNACK to send
// first.
func (s *ConnectScan) Feed(b []byte) (write []byte, err error) {
	for len(b) > 0 && !s.done {
		if s.need < 0 {
			s.hdr = append(s.hdr, b[0])
			b = b[1:]
			if len(s.hdr) == 1 {
				if s.hdr[0] != 0x10 {
					s.done = true
				}
				continue
			}
			c := s.hdr[len(s.hdr)-1]
			if c&0x80 != 0 {
				if len(s.hdr) == 5 {
					s.done = true // malformed length: mochi refuses it
				}
				continue
			}
			n, mul := 0, 1
			for _, d := range s.hdr[1:] {
				n += int(d&0x7f) * mul
				mul *= 128
			}
			if n > s.max {
				s.done = true
				return nil, fmt.Errorf("%w: %d bytes announced, %d allowed", ErrConnectTooLarge, n, s.max)
			}
			s.need = n
			if n == 0 {
				s.done = true
			}
			continue
		}
		take := min(len(b), s.need-len(s.body))
		s.body = append(s.body, b[:take]...)
		b = b[take:]
		if len(s.body) == s.need {
			s.done = true
			body := s.body
			s.hdr, s.body = nil, nil // kept for the connection's life: drop the buffer
			if err := checkConnect5(body); err != nil {
				// CONNACK: no session present, 0x82 protocol error, no properties.
				return []byte{0x20, 3, 0, 0x82, 0}, fmt.Errorf("%w: %v", ErrConnectProtocol, err)
			}
		}
	}
	return nil, nil
}

// checkConnect5 checks an MQTT 5 CONNECT's body (after the fixed header)
// for properties given twice, in the CONNECT's and the will's properties.
// A body it cannot follow is left to mochi's decoder.
func checkConnect5(b []byte) error {
	r := reader{b: b}
	name := r.str()
	level := r.byte()
	if r.bad || string(name) != "MQTT" || level != 5 {
		return nil
	}
	flags := r.byte()
	r.skip(2) // keep alive
	if err := r.props("CONNECT"); err != nil {
		return err
	}
	r.str() // client id
	if flags&0x04 != 0 {
		return r.props("will")
	}
	return nil
}

// reader reads MQTT's encodings from b; bad is set once b runs out.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) skip(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) byte() byte {
	if b := r.skip(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) uint16() int {
	if b := r.skip(2); b != nil {
		return int(b[0])<<8 | int(b[1])
	}
	return 0
}

func (r *reader) str() []byte { return r.skip(r.uint16()) }

func (r *reader) varint() int {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		c := r.byte()
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			return n
		}
		mul *= 128
	}
	r.bad = true
	return 0
}

// propSize is the encoded size of an MQTT 5 property's value by its id: >0
// a fixed size, -1 a string or binary, -2 a string pair, -3 a varint.
var propSize = map[int]int{
	0x01: 1, 0x02: 4, 0x03: -1, 0x08: -1, 0x09: -1, 0x0B: -3, 0x11: 4, 0x12: -1, 0x13: 2,
	0x15: -1, 0x16: -1, 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: -1, 0x1C: -1, 0x1F: -1, 0x21: 2,
	0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}

// props reads a property list and reports a property given twice (user
// properties, 0x26, may repeat).
func (r *reader) props(what string) error {
	n := r.varint()
	list := reader{b: r.skip(n)}
	if r.bad {
		return nil
	}
	var seen [0x80]bool
	for len(list.b) > 0 && !list.bad {
		id := list.varint()
		size, ok := propSize[id]
		if !ok {
			return nil // unknown: mochi decides
		}
		if id != 0x26 {
			if seen[id] {
				return fmt.Errorf("%s property %#02x given twice", what, id)
			}
			seen[id] = true
		}
		switch size {
		case -1:
			list.str()
		case -2:
			list.str()
			list.str()
		case -3:
			list.varint()
		default:
			list.skip(size)
		}
	}
	return nil
}
