package hub

import (
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
)

func TestConnectionRateLimit(t *testing.T) {
	h := startHub(t, &fakeStore{}, func(o *Options) { o.ConnectRate, o.ConnectBurst = 0.001, 2 })
	rawConnect5(t, h.Addr(), "leaf-1")
	rawConnect5(t, h.Addr(), "leaf-2")
	c, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write(connect5("dash", "dash", testPassword))
	if typ, body, err := readPacketErr(c, 10*time.Second); err == nil {
		t.Fatalf("third connection got %#x %x beyond the burst, want it closed", typ, body)
	}
	if s := h.Stats(); s.RateLimited != 1 || s.Connected != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestQoS2Refused(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	qos2 := func(pid byte, v5 bool) []byte {
		b := append(mqttwire.String("devices/leaf-1/messages/events/"), 0, pid)
		if v5 {
			b = append(b, 0) // no properties
		}
		return mqttwire.Packet(0x34, append(b, 'x'))
	}
	// MQTT 5: CONNACK advertises maximum QoS 1; a QoS 2 PUBLISH anyway
	// gets DISCONNECT 0x9B (QoS not supported).
	c5 := rawConnect5(t, h.Addr(), "leaf-1")
	if _, err := c5.Write(qos2(1, true)); err != nil {
		t.Fatal(err)
	}
	typ, body := readPacket(t, c5)
	if typ != 0xE0 || len(body) < 1 || body[0] != 0x9B {
		t.Fatalf("got %#x %x, want DISCONNECT 0x9b", typ, body)
	}
	// MQTT 3.1.1: the connection is closed, with no PUBREC.
	c4 := rawConnect4(t, h.Addr(), "leaf-1")
	if _, err := c4.Write(qos2(2, false)); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := readPacketErr(c4, 10*time.Second); err == nil {
		t.Fatalf("3.1.1 QoS 2 got %#x %x, want the connection closed", typ, body)
	}
	if n := len(st.records()); n != 0 {
		t.Fatalf("%d records", n)
	}
}

// A will would reach observers without being stored: it is dropped.
func TestWillDropped(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	got := make(chan paho.Message, 2)
	dash := mustPaho(t, h.Addr(), "dash", nil)
	if tok := dash.Subscribe("devices/+/messages/events/#", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	c, err := net.Dial("tcp", h.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// CONNECT 3.1.1 with will (flags: user, password, will QoS 1, will, clean).
	body := append(mqttwire.String("MQTT"), 4, 0xCE, 0, 60)
	body = append(body, mqttwire.String("leaf-1")...)
	body = append(body, mqttwire.String("devices/leaf-1/messages/events/will=1")...)
	body = append(body, mqttwire.String("gone")...)
	body = append(body, mqttwire.String("leaf-1")...)
	body = append(body, mqttwire.String(testPassword)...)
	if _, err := c.Write(mqttwire.Packet(0x10, body)); err != nil {
		t.Fatal(err)
	}
	if typ, b := readPacket(t, c); typ != 0x20 || b[1] != 0 {
		t.Fatalf("CONNACK %#x %x", typ, b)
	}
	c.Close() // abrupt: a will would be published now
	// Then a stored message: the observer's next message must be it.
	leaf := mustPaho(t, h.Addr(), "leaf-2", nil)
	if tok := leaf.Publish("devices/leaf-2/messages/events/", 1, false, "after"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-got:
		if string(m.Payload()) != "after" {
			t.Fatalf("observer got %s %q: the will was published", m.Topic(), m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("observer got nothing")
	}
}

func TestCollectors(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	c := rawConnect5(t, h.Addr(), "leaf-1")
	if _, err := c.Write(publish5("devices/leaf-1/messages/events/", 1, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	readPacket(t, c)
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			got[mf.GetName()] = m.GetCounter().GetValue()
		} else {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if got["outpost_hub_stored_total"] != 1 || got["outpost_hub_connected_clients"] != 1 || len(got) != 24 {
		t.Fatalf("metrics %v", got)
	}
}
