package hub

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// pubackFor reads the next packet and checks it is a PUBACK for pid,
// returning its reason code (0 when it has none).
func pubackFor(t *testing.T, c net.Conn, pid uint16) byte {
	t.Helper()
	typ, body, err := readPacketErr(c, 5*time.Second)
	if err != nil {
		t.Fatalf("no PUBACK for %d: %v", pid, err)
	}
	if typ>>4 != 4 || len(body) < 2 || int(body[0])<<8|int(body[1]) != int(pid) {
		t.Fatalf("got %#x %x, want PUBACK %d", typ, body, pid)
	}
	if len(body) > 2 {
		return body[2]
	}
	return 0
}

// A message that can never be stored (too large, an upstream topic over
// MQTT's limit, a topic mochi drops such as $SYS/...) is acknowledged to
// an MQTT 3.1.1 client and dropped, counted: refusing it by a disconnect
// would have a persistent session send it again for ever. The connection
// stays up and the next message is stored.
func TestPoison311AckedAndDropped(t *testing.T) {
	longMid := "devices/leaf-1/messages/events/$.mid=" + strings.Repeat("!", 22000)
	cases := []struct {
		name, topic string
		size        int
	}{
		{"oversize", "devices/leaf-1/messages/events/", 1001},
		{"upstream topic too long", longMid, 1},
		{"$SYS topic", "$SYS/evil", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStore{}
			h := startHub(t, st, func(o *Options) { o.MaxMessageBytes = 1000 })
			c := rawConnect4(t, h.Addr(), "leaf-1")
			if _, err := c.Write(publish4(tc.topic, 7, bytes.Repeat([]byte{'x'}, tc.size))); err != nil {
				t.Fatal(err)
			}
			pubackFor(t, c, 7)
			if _, err := c.Write(publish4("devices/leaf-1/messages/events/", 8, []byte("ok"))); err != nil {
				t.Fatal(err)
			}
			pubackFor(t, c, 8)
			if recs := st.records(); len(recs) != 1 || string(recs[0].Payload) != "ok" {
				t.Fatalf("stored %d records, want only the good one", len(recs))
			}
			if s := h.Stats(); s.Dropped != 1 || s.Refused != 1 {
				t.Errorf("dropped %d refused %d, want 1 and 1", s.Dropped, s.Refused)
			}
		})
	}
}

// On MQTT 5 the same messages get a PUBACK with a failure reason code.
func TestPoison5ReasonCodes(t *testing.T) {
	longMid := "devices/leaf-1/messages/events/$.mid=" + strings.Repeat("!", 22000)
	cases := []struct {
		name, topic string
		code        byte
	}{
		{"upstream topic too long", longMid, 0x83},
		{"$SYS topic", "$SYS/evil", 0x90},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeStore{}
			h := startHub(t, st, nil)
			c := rawConnect5(t, h.Addr(), "leaf-1")
			if _, err := c.Write(publish5(tc.topic, 3, []byte("x"))); err != nil {
				t.Fatal(err)
			}
			if code := pubackFor(t, c, 3); code != tc.code {
				t.Fatalf("PUBACK reason %#x, want %#x", code, tc.code)
			}
			if n := len(st.records()); n != 0 {
				t.Fatalf("%d records stored", n)
			}
		})
	}
}

// mosquitto_pub, a real 3.1.1 client, gets its PUBACK for a $SYS publish
// and exits instead of waiting for it for ever.
func TestMosquittoPubSysTopic311(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	out, ok := mosqPub(t, leafArgs(h, "mqttv311", "leaf-1", testPassword, "$SYS/evil", "x")...)
	if !ok || !strings.Contains(out, "received PUBACK") {
		t.Fatalf("mosquitto_pub (exit ok %v):\n%s", ok, out)
	}
}
