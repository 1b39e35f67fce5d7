package hub

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
)

// truncatedSubscribe5 is an MQTT 5 SUBSCRIBE whose last filter lacks its
// options byte: mochi v2.7.9 indexes past the end in
// packets.SubscribeDecode (upstream issue #501) and panics.
var truncatedSubscribe5 = mqttwire.Packet(0x82, append([]byte{0, 1, 0}, mqttwire.String("a")...))

func TestTruncatedSubscribeDoesNotTakeTheHubDown(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	bad := rawConnect5(t, h.Addr(), "leaf-2")
	if _, err := bad.Write(truncatedSubscribe5); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := readPacketErr(bad, 10*time.Second); err == nil {
		t.Fatalf("bad client got %#x %x, want its connection closed", typ, body)
	}
	// mochi closes the connection while the panic unwinds, before the
	// listener's recover counts it.
	waitFor(t, "the panic to be counted (does the packet still panic mochi?)", func() bool { return h.Stats().Panics == 1 })

	// Another client still publishes, and an observer still receives.
	got := make(chan paho.Message, 1)
	dash := mustPaho(t, h.Addr(), "dash", nil)
	if tok := dash.Subscribe("devices/+/messages/events/#", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	leaf := mustPaho(t, h.Addr(), "leaf-1", nil)
	if tok := leaf.Publish("devices/leaf-1/messages/events/", 1, false, "alive"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-got:
		if string(m.Payload()) != "alive" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("observer got nothing after the panic")
	}
	// The panicked client can log in again (its session was cleaned up).
	rawConnect5(t, h.Addr(), "leaf-2")
	if c := h.Stats().Connected; c != 3 {
		t.Fatalf("Connected = %d, want 3 (is the panicked connection still counted?)", c)
	}
}
