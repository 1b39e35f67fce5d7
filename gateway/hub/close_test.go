package hub

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// closeWithin closes h and fails the test if Close has not returned in d.
func closeWithin(t *testing.T, h *Hub, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { h.Close(); close(done) }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("Close has not returned after %v", d)
		return 0
	}
}

// Regression: Close hung for good in CI. mochi's Clients.GetByListener
// takes the client map's read lock twice; a client disconnecting in
// between (its goroutine deletes itself under the write lock) deadlocked
// the two. Closing a hub with many clients of both protocol versions must
// return every time.
func TestCloseWithManyClients(t *testing.T) {
	for round := range 8 {
		h := startHub(t, &fakeStore{}, func(o *Options) {
			o.ConnectRate, o.ConnectBurst = 1e6, 1e6
			o.Clients = nil
			for i := range 40 {
				o.Clients = append(o.Clients, Client{ID: fmt.Sprintf("leaf-%d", i), PasswordHash: testHash})
			}
		})
		var conns []net.Conn
		for i := range 40 {
			id := fmt.Sprintf("leaf-%d", i)
			if i%2 == 0 {
				conns = append(conns, rawConnect4(t, h.Addr(), id))
			} else {
				conns = append(conns, rawConnect5(t, h.Addr(), id))
			}
		}
		closeWithin(t, h, 20*time.Second)
		// Every client learns of the shutdown: MQTT 5 clients by a
		// DISCONNECT (server shutting down, 0x8B), 3.1.1 clients by EOF.
		for i, c := range conns {
			typ, body, err := readPacketErr(c, 10*time.Second)
			if i%2 == 0 {
				if err == nil {
					t.Fatalf("round %d: MQTT 3.1.1 client got packet %#x %x at shutdown", round, typ, body)
				}
				continue
			}
			if err != nil || typ>>4 != 14 || len(body) < 1 || body[0] != 0x8B {
				t.Fatalf("round %d: MQTT 5 client got %#x %x (%v), want DISCONNECT 0x8B", round, typ, body, err)
			}
		}
	}
}

// listener.Close must not hand over to mochi's closeListenerClients: its
// Clients.GetByListener deadlocks (see above), too rarely to catch every
// time with real clients.
func TestListenerCloseAvoidsGetByListener(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	rawConnect5(t, h.Addr(), "leaf-1")
	h.plain.Close(func(string) { t.Error("listener.Close called mochi's closeListenerClients") })
}

// A client that subscribes to its commands and then reads nothing fills
// its TCP window. It must hold up nobody: Deliver returns at once, another
// leaf still gets its commands, a write that makes no progress for
// writeTimeout drops the stuck client, and Close returns promptly.
func TestStuckReaderHoldsNobody(t *testing.T) {
	old := writeTimeout
	writeTimeout = 3 * time.Second
	t.Cleanup(func() { writeTimeout = old })
	h := startHub(t, &fakeStore{}, nil)
	stuck := subscribeRaw5(t, h.Addr(), "leaf-1")
	other := subscribeRaw5(t, h.Addr(), "leaf-2")

	// Commands of 200 KB each, far beyond the socket buffers; the stuck
	// leaf never PUBACKs, so all stay pending and the hub's write blocks.
	payload := []byte(strings.Repeat("x", 200<<10))
	start := time.Now()
	for i := range 64 {
		if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: fmt.Sprint("c", i)}}, payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("64 Deliver calls to a stuck leaf took %v; Deliver must not wait for the write", d)
	}
	if err := h.Deliver("leaf-2", msg.Props{{Key: msg.PropMessageID, Value: "x1"}}, []byte("go"), nil); err != nil {
		t.Fatal(err)
	}
	typ, body, err := readPacketErr(other, 2*time.Second)
	if err != nil || typ>>4 != 3 || !strings.HasSuffix(string(body), "go") {
		t.Fatalf("leaf-2 got %#x %q (%v) while leaf-1 was stuck, want its command", typ, body, err)
	}
	// The stuck client is dropped by the write deadline.
	srv := h.server()
	waitFor(t, "the stuck client to be dropped", func() bool {
		cl, ok := srv.Clients.Get("leaf-1")
		return !ok || cl.Closed()
	})
	// and the leaf sees its connection end (after what was buffered).
	_ = stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, stuck); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the stuck leaf's connection is still open: %v", err)
	}
	took := closeWithin(t, h, 5*time.Second)
	t.Logf("Close took %v", took)
}

// TestStuckReaderDoesNotHoldClose: the same stuck leaf, closed while its
// write is blocked (long before writeTimeout).
func TestStuckReaderDoesNotHoldClose(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	subscribeRaw5(t, h.Addr(), "leaf-1")
	payload := []byte(strings.Repeat("x", 200<<10))
	for i := range 64 {
		if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: fmt.Sprint("c", i)}}, payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "hub writes to the stuck client", func() bool { return h.Stats().C2DSent > 0 })
	closeWithin(t, h, 5*time.Second)
}

// subscribeRaw5 connects id over MQTT 5 with a small receive buffer and
// subscribes it to its devicebound topic.
func subscribeRaw5(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	c := rawConnect5(t, addr, id)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(64 << 10)
	}
	sub := append([]byte{0, 1, 0}, mqttwire.String("devices/"+id+"/messages/devicebound/#")...)
	if _, err := c.Write(mqttwire.Packet(0x82, append(sub, 1))); err != nil {
		t.Fatal(err)
	}
	if typ, body := readPacket(t, c); typ>>4 != 9 || body[len(body)-1] != 1 {
		t.Fatalf("SUBACK: %#x %x", typ, body)
	}
	return c
}
