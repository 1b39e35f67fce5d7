package mqttwire

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestVarint checks the remaining-length encoding against the table in
// MQTT 3.1.1 §2.2.3 (MQTT 5 §1.5.5 has the same values), each boundary, and
// reads every packet framed with it back.
func TestVarint(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{127, []byte{0x7F}},
		{128, []byte{0x80, 0x01}},
		{16383, []byte{0xFF, 0x7F}},
		{16384, []byte{0x80, 0x80, 0x01}},
		{2097151, []byte{0xFF, 0xFF, 0x7F}},
		{2097152, []byte{0x80, 0x80, 0x80, 0x01}},
		{MaxRemainingLength, []byte{0xFF, 0xFF, 0xFF, 0x7F}},
		{MaxRemainingLength + 1, []byte{0x80, 0x80, 0x80, 0x80, 0x01}}, // too long: five bytes, as fault tests want
	} {
		if got := Varint(tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("Varint(%d) = % x, want % x", tc.n, got, tc.want)
		}
		if got := AppendVarint([]byte{0xAA}, tc.n); !bytes.Equal(got, append([]byte{0xAA}, tc.want...)) {
			t.Errorf("AppendVarint(aa, %d) = % x", tc.n, got)
		}
		if tc.n > 1<<21 {
			continue // no need to allocate the big bodies
		}
		body := bytes.Repeat([]byte{'x'}, tc.n)
		pkt := Packet(0x30, body)
		if !bytes.Equal(pkt[1:1+len(tc.want)], tc.want) {
			t.Errorf("Packet with a %d-byte body: length bytes % x, want % x", tc.n, pkt[1:1+len(tc.want)], tc.want)
		}
		first, got, err := ReadPacket(bytes.NewReader(pkt))
		if err != nil || first != 0x30 || !bytes.Equal(got, body) {
			t.Errorf("ReadPacket of a %d-byte body: first %#x, %d bytes, err %v", tc.n, first, len(got), err)
		}
	}
}

// TestPackets checks the builders against packets written out byte by byte
// from the MQTT 3.1.1 (§3.1, §3.3) and MQTT 5 (§3.1, §3.3) layouts.
func TestPackets(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want []byte
	}{
		{"string", String("MQTT"), []byte{0, 4, 'M', 'Q', 'T', 'T'}},
		{"empty string", String(""), []byte{0, 0}},
		{"connect 3.1.1", Connect(4, 60, "c", "u", "p"), []byte{
			0x10, 19,
			0, 4, 'M', 'Q', 'T', 'T', 4, 0xC2, 0, 60,
			0, 1, 'c', 0, 1, 'u', 0, 1, 'p'}},
		{"connect 5", Connect(5, 30, "c", "u", "p"), []byte{
			0x10, 20,
			0, 4, 'M', 'Q', 'T', 'T', 5, 0xC2, 0, 30, 0,
			0, 1, 'c', 0, 1, 'u', 0, 1, 'p'}},
		{"connect 3.1.1 anonymous", Connect(4, 60, "c", "", ""), []byte{
			0x10, 13,
			0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60,
			0, 1, 'c'}},
		{"publish 3.1.1", Publish(4, "a/b", 0x0102, []byte("hi")), []byte{
			0x32, 9,
			0, 3, 'a', '/', 'b', 0x01, 0x02, 'h', 'i'}},
		{"publish 5", Publish(5, "a/b", 7, []byte("hi")), []byte{
			0x32, 10,
			0, 3, 'a', '/', 'b', 0, 7, 0, 'h', 'i'}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

func TestReadPacketShort(t *testing.T) {
	for _, in := range [][]byte{{}, {0x30}, {0x30, 0x80}, {0x30, 3, 'a'}} {
		if _, _, err := ReadPacket(bytes.NewReader(in)); !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ReadPacket(% x): err %v, want EOF", in, err)
		}
	}
}
