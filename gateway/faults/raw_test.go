package faults

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
)

// Raw MQTT connections for tests that need bytes no well-behaved client
// sends; the packets are built with mqttwire.

// dialMQTT connects, sends CONNECT and returns the connection once the
// CONNACK accepted it.
func dialMQTT(t *testing.T, addr string, version byte, id string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(mqttwire.Connect(version, 30, id, id, password(id))); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("no CONNACK: %v", err)
	}
	if hdr[0] != 0x20 || hdr[3] != 0 {
		t.Fatalf("CONNACK refused: % x", hdr)
	}
	if version == 5 { // the rest of the CONNACK: its properties
		rest := make([]byte, int(hdr[1])-2)
		if _, err := io.ReadFull(c, rest); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return c
}

// MQTT 3.1.1 has no server-to-client DISCONNECT (§3.14: "sent from the
// Client to the Server"); a broker that is shutting down just closes the
// connection. mochi's closeListenerClients sends every client a DISCONNECT
// (reason 0x8B, server shutting down) whatever its protocol version, and
// mosquitto_pub 2.0.11 -l, given that packet, stops reading its input and
// never reconnects: such a leaf would need a human after every gateway
// restart. The hub therefore closes a 3.1.1 connection at shutdown without a
// DISCONNECT; this test holds it to that.
func TestFaultShutdownSendsNoDisconnectToV311(t *testing.T) {
	g := newGateway(t, gwConfig{leaves: []string{"raw-1"}})
	g.start()
	c := dialMQTT(t, g.hubAddr, 4, "raw-1")
	g.term()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	rest, err := io.ReadAll(c)
	if err != nil {
		t.Logf("read after shutdown: %v", err)
	}
	if len(rest) > 0 && rest[0] == 0xE0 {
		t.Errorf("on SIGTERM the hub sent an MQTT 3.1.1 client a DISCONNECT packet (% x); 3.1.1 servers must just close the connection", rest)
	}
}
