package hub

import (
	"errors"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
)

func doneChan() (chan error, func(error)) {
	ch := make(chan error, 4)
	return ch, func(err error) { ch <- err }
}

func waitDone(t *testing.T, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("done not called")
		return nil
	}
}

func subscribeC2D(t *testing.T, c paho.Client, got chan paho.Message) {
	t.Helper()
	tok := c.Subscribe("devices/leaf-1/messages/devicebound/#", 1, func(_ paho.Client, m paho.Message) { got <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

func TestDeliverToOnlineLeaf(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	got := make(chan paho.Message, 4)
	c := mustPaho(t, h.Addr(), "leaf-1", nil)
	subscribeC2D(t, c, got)

	ch, done := doneChan()
	if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: "c1"}, {Key: "k", Value: "v w"}}, []byte(`{"write":{"x":1}}`), done); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Topic() != "devices/leaf-1/messages/devicebound/%24.mid=c1&k=v%20w" || string(m.Payload()) != `{"write":{"x":1}}` || m.Qos() != 1 {
			t.Fatalf("leaf got %s %q qos %d", m.Topic(), m.Payload(), m.Qos())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leaf got nothing")
	}
	if err := waitDone(t, ch); err != nil {
		t.Fatalf("done(%v), want nil", err)
	}
	if s := h.Stats(); s.C2DAcked != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDeliverToOfflineLeafOnReconnect(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	ch, done := doneChan()
	if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: "c2"}}, []byte("later"), done); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ch:
		t.Fatalf("done(%v) while the leaf was offline", err)
	default:
	}
	got := make(chan paho.Message, 4)
	c := mustPaho(t, h.Addr(), "leaf-1", nil)
	subscribeC2D(t, c, got)
	select {
	case m := <-got:
		if string(m.Payload()) != "later" {
			t.Fatalf("got %q", m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leaf got nothing after reconnecting")
	}
	if err := waitDone(t, ch); err != nil {
		t.Fatalf("done(%v)", err)
	}
}

// A leaf that drops the connection before its PUBACK gets the message again
// on its next connection; done is called once, on that PUBACK.
func TestDeliverResentAfterUnackedDisconnect(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	ch, done := doneChan()
	if err := h.Deliver("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: "c3"}}, []byte("again"), done); err != nil {
		t.Fatal(err)
	}
	sub := mqttwire.Packet(0x82, append([]byte{0, 1, 0}, append(mqttwire.String("devices/leaf-1/messages/devicebound/#"), 1)...))
	for round := 1; round <= 2; round++ {
		c := rawConnect5(t, h.Addr(), "leaf-1")
		if _, err := c.Write(sub); err != nil {
			t.Fatal(err)
		}
		var pid []byte
		for pid == nil {
			typ, body := readPacket(t, c)
			if typ>>4 == 3 { // PUBLISH
				n := int(body[0])<<8 | int(body[1])
				if string(body[2:2+n]) != "devices/leaf-1/messages/devicebound/%24.mid=c3" {
					t.Fatalf("topic %q", body[2:2+n])
				}
				pid = body[2+n : 4+n]
			}
		}
		if round == 1 {
			c.Close() // no PUBACK
			continue
		}
		if _, err := c.Write(append([]byte{0x40, 2}, pid...)); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitDone(t, ch); err != nil {
		t.Fatalf("done(%v)", err)
	}
	select {
	case err := <-ch:
		t.Fatalf("done called twice (%v)", err)
	default:
	}
}

func TestDeliverExpiresAndReplaces(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	exp := time.Now().Add(50 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	ch, done := doneChan()
	if err := h.Deliver("leaf-2", msg.Props{{Key: msg.PropMessageID, Value: "e1"}, {Key: msg.PropExpiry, Value: exp}}, nil, done); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, ch); !errors.Is(err, ErrExpired) {
		t.Fatalf("done(%v), want ErrExpired", err)
	}

	ch1, done1 := doneChan()
	ch2, done2 := doneChan()
	_ = h.Deliver("leaf-2", msg.Props{{Key: msg.PropMessageID, Value: "r1"}}, []byte("a"), done1)
	_ = h.Deliver("leaf-2", msg.Props{{Key: msg.PropMessageID, Value: "r1"}}, []byte("b"), done2)
	if err := waitDone(t, ch1); !errors.Is(err, ErrReplaced) {
		t.Fatalf("first done(%v), want ErrReplaced", err)
	}
	if err := h.Deliver("nobody", nil, nil, nil); !errors.Is(err, ErrUnknownLeaf) {
		t.Fatalf("Deliver to unknown device: %v", err)
	}
	h.Close()
	if err := waitDone(t, ch2); !errors.Is(err, ErrClosed) {
		t.Fatalf("pending done(%v) at Close, want ErrClosed", err)
	}
	if err := h.Deliver("leaf-2", nil, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Deliver after Close: %v", err)
	}
}
