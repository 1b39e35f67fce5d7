// Package mqttwire writes and reads raw MQTT control packets byte by byte,
// for the benchmarks' load generator and for tests that need bytes no
// well-behaved client library sends (malformed lengths, wrong protocol
// names, QoS 2, a second CONNECT). It covers only what those need: the
// remaining-length encoding, UTF-8 strings, framing, CONNECT, QoS 1 PUBLISH
// for MQTT 3.1.1 (version 4) and MQTT 5, and reading one packet back.
// It also has the one reader the hub uses on a live connection:
// ConnectScan, which sizes and checks a client's first packet before the
// broker decodes it.
//
// Nothing the writers here take is validated: a value out of range is encoded as
// given, which is what a fault test wants.
package mqttwire

import (
	"encoding/binary"
	"io"
)

// MaxRemainingLength is the largest remaining length MQTT allows (four
// bytes of variable byte integer).
const MaxRemainingLength = 268_435_455

// AppendVarint appends n as an MQTT variable byte integer (the remaining
// length): 7 bits a byte, least significant first, the top bit set on every
// byte but the last. Values above MaxRemainingLength take five bytes or
// more, which no conforming peer accepts.
func AppendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// Varint is AppendVarint(nil, n).
func Varint(n int) []byte { return AppendVarint(nil, n) }

// AppendString appends s as an MQTT UTF-8 string: a two-byte big-endian
// length, then the bytes.
func AppendString(b []byte, s string) []byte {
	return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...)
}

// String is AppendString(nil, s).
func String(s string) []byte { return AppendString(nil, s) }

// Packet frames a control packet: the first byte (type and flags), the
// remaining length, then body.
func Packet(first byte, body []byte) []byte {
	return append(AppendVarint([]byte{first}, len(body)), body...)
}

// Connect is a CONNECT with clean session (clean start in MQTT 5), the given
// keep-alive in seconds, and the username and password flags set for those
// that are not empty. version is the protocol level: 4 is MQTT 3.1.1, 5 is
// MQTT 5 (with an empty property block).
func Connect(version byte, keepAlive uint16, clientID, username, password string) []byte {
	flags := byte(0x02)
	if username != "" {
		flags |= 0x80
	}
	if password != "" {
		flags |= 0x40
	}
	b := AppendString(nil, "MQTT")
	b = append(b, version, flags)
	b = binary.BigEndian.AppendUint16(b, keepAlive)
	if version == 5 {
		b = append(b, 0) // no properties
	}
	b = AppendString(b, clientID)
	if username != "" {
		b = AppendString(b, username)
	}
	if password != "" {
		b = AppendString(b, password)
	}
	return Packet(0x10, b)
}

// Publish is a QoS 1 PUBLISH (no DUP, no RETAIN) of payload to topic with
// packet id pid; for version 5 it carries an empty property block.
func Publish(version byte, topic string, pid uint16, payload []byte) []byte {
	b := AppendString(nil, topic)
	b = binary.BigEndian.AppendUint16(b, pid)
	if version == 5 {
		b = append(b, 0) // no properties
	}
	return Packet(0x32, append(b, payload...))
}

// ReadPacket reads one control packet from r and returns its first byte and
// its body (everything after the remaining length).
func ReadPacket(r io.Reader) (first byte, body []byte, err error) {
	var hdr [1]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n += int(b[0]&127) * mul
		mul *= 128
		if b[0] < 128 {
			break
		}
	}
	body = make([]byte, n)
	_, err = io.ReadFull(r, body)
	return hdr[0], body, err
}
