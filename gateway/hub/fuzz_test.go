package hub

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
)

var (
	fuzzOnce sync.Once
	fuzzHub  *Hub
)

// FuzzHubPackets feeds raw bytes, after a valid CONNECT (MQTT 5 when the
// first byte is odd, 3.1.1 otherwise), to a live hub, then proves the hub
// still serves a well-behaved client. A panic outside the per-connection
// recovery, or a wedged hub, fails it.
func FuzzHubPackets(f *testing.F) {
	f.Add(append([]byte{1}, truncatedSubscribe5...))
	f.Add(append([]byte{1}, publish5("devices/leaf-2/messages/events/a=1", 1, []byte("x"))...))
	f.Add(append([]byte{0}, publish4("devices/leaf-2/messages/events/", 1, []byte("x"))...))
	f.Add(append([]byte{0}, mqttwire.Packet(0x82, append([]byte{0, 1}, append(mqttwire.String("devices/leaf-2/messages/devicebound/#"), 1)...))...))
	f.Add(append([]byte{1}, mqttwire.Packet(0x34, append(mqttwire.String("devices/leaf-2/messages/events/"), 0, 9, 0))...)) // QoS 2
	f.Add(append([]byte{1}, mqttwire.Packet(0x30, append(mqttwire.String("devices/leaf-2/messages/events/"), 0x02, 0x23, 0x00))...))
	f.Add(append([]byte{0}, 0xC0, 0)) // PINGREQ
	f.Add(append([]byte{1}, 0xE0, 1, 0x8E))
	f.Add([]byte{1, 0x82, 0xFF, 0xFF, 0xFF, 0x7F})
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzOnce.Do(func() {
			h, err := New(Options{
				Config: Config{Listen: "127.0.0.1:0", Clients: []Client{{ID: "leaf-1", PasswordHash: testHash}, {ID: "leaf-2", PasswordHash: testHash}}, ConnectRate: 1e9, ConnectBurst: 1 << 30},
				Logger: testLogger(t),
			}, &fakeStore{})
			if err == nil {
				err = h.Start()
			}
			if err != nil {
				t.Fatal(err)
			}
			fuzzHub = h
		})
		if len(data) == 0 {
			return
		}
		c, err := net.Dial("tcp", fuzzHub.Addr())
		if err != nil {
			t.Fatal(err)
		}
		hello := connect4("leaf-2", "leaf-2", testPassword)
		if data[0]&1 == 1 {
			hello = connect5("leaf-2", "leaf-2", testPassword)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write(append(hello, data[1:]...))
		buf := make([]byte, 4096)
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()

		// The hub still answers a good client: CONNECT, PUBLISH, PUBACK.
		g, err := net.Dial("tcp", fuzzHub.Addr())
		if err != nil {
			t.Fatalf("hub gone: %v", err)
		}
		defer g.Close()
		if _, err := g.Write(append(connect4("leaf-1", "leaf-1", testPassword), publish4("devices/leaf-1/messages/events/", 7, []byte("ok"))...)); err != nil {
			t.Fatal(err)
		}
		for _, want := range []byte{0x20, 0x40} {
			typ, body, err := readPacketErr(g, 5*time.Second)
			if err != nil || typ != want {
				t.Fatalf("good client after %x: got %#x %x (%v), want %#x", data, typ, body, err, want)
			}
		}
	})
}
