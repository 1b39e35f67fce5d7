package hub

import (
	"errors"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestPubackOnlyAfterStored(t *testing.T) {
	st := &fakeStore{delay: 30 * time.Millisecond}
	h := startHub(t, st, nil)
	c := mustPaho(t, h.Addr(), "leaf-1", nil)

	tok := c.Publish("devices/leaf-1/messages/events/%24.mid=m-1&unit=C&%24.ct=text%2Fplain", 1, false, "21.5")
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	// The PUBACK has arrived: the record must be in the store already.
	recs := st.records()
	if len(recs) != 1 {
		t.Fatalf("PUBACK before the store had the record: %d records", len(recs))
	}
	r := recs[0]
	if r.Device != "leaf-1" || r.ID != "m-1" || string(r.Payload) != "21.5" || r.Priority != msg.High {
		t.Fatalf("record = %+v", r)
	}
	if got := r.Props.Encode(); got != "%24.ct=text%2Fplain&unit=C" {
		t.Fatalf("props = %q", got)
	}
	if s := h.Stats(); s.Received != 1 || s.Stored != 1 || s.Refused != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestStoreAssignsIDWhenLeafHasNone(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	c := mustPaho(t, h.Addr(), "leaf-2", nil)
	for _, topic := range []string{"devices/leaf-2/messages/events", "devices/leaf-2/messages/events/", "devices/leaf-2/messages/events/a=1&outpost-seq=9"} {
		tok := c.Publish(topic, 1, false, "x")
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", topic, tok.Error())
		}
	}
	recs := st.records()
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		if !strings.HasPrefix(r.ID, "gw-") || r.Priority != msg.Normal {
			t.Errorf("record %+v: want store-assigned id, normal priority", r)
		}
		if _, ok := r.Props.Get(msg.PropSeq); ok {
			t.Errorf("record %+v keeps the leaf's outpost-seq", r)
		}
	}
}

func TestLoginRefused(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	cases := []struct{ name, id, user, pass string }{
		{"wrong password", "leaf-1", "leaf-1", "nope"},
		{"unknown device", "leaf-9", "leaf-9", testPassword},
		{"username differs from client id", "leaf-1", "leaf-2", testPassword},
		{"no credentials", "leaf-1", "", ""},
		{"wildcard in id", "leaf+1", "leaf+1", testPassword},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pahoClient(t, h.Addr(), tc.id, tc.pass, func(o *paho.ClientOptions) { o.SetUsername(tc.user) })
			if err == nil {
				t.Fatal("connected")
			}
		})
	}
	if s := h.Stats(); s.AuthFailures != uint64(len(cases)) {
		t.Fatalf("AuthFailures = %d, want %d", s.AuthFailures, len(cases))
	}
}

func TestPublishToOtherDeviceRefused311(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	lost := make(chan error, 1)
	c := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	tok := c.Publish("devices/leaf-2/messages/events/", 1, false, "spoof")
	select {
	case <-lost:
	case <-tok.Done():
		if tok.Error() == nil {
			t.Fatal("publish to another device's topic was acknowledged")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not disconnected")
	}
	if n := len(st.records()); n != 0 {
		t.Fatalf("%d records stored", n)
	}
}

func TestSubscribeACL(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	leaf := mustPaho(t, h.Addr(), "leaf-1", nil)
	dash := mustPaho(t, h.Addr(), "dash", nil)
	cases := []struct {
		c      paho.Client
		who    string
		filter string
		ok     bool
	}{
		{leaf, "leaf-1", "devices/leaf-1/messages/devicebound/#", true},
		{leaf, "leaf-1", "devices/leaf-2/messages/devicebound/#", false},
		{leaf, "leaf-1", "devices/+/messages/events/#", false},
		{leaf, "leaf-1", "#", false},
		{leaf, "leaf-1", "$SYS/#", false},
		{dash, "dash", "devices/+/messages/events/#", true},
		{dash, "dash", "devices/leaf-2/messages/events/#", true},
		{dash, "dash", "devices/#", false},
		{dash, "dash", "devices/+/messages/devicebound/#", false},
	}
	for _, tc := range cases {
		tok := tc.c.Subscribe(tc.filter, 1, func(paho.Client, paho.Message) {})
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("subscribe %s: timeout", tc.filter)
		}
		st := tok.(*paho.SubscribeToken)
		granted := st.Result()[tc.filter] < 0x80
		if granted != tc.ok {
			t.Errorf("%s subscribe %q: granted=%v (code %#x), want %v", tc.who, tc.filter, granted, st.Result()[tc.filter], tc.ok)
		}
	}
}

func TestStoreFailure311DisconnectsWithoutPuback(t *testing.T) {
	for _, fail := range []error{fullErr, errors.New("disk on fire")} {
		t.Run(fail.Error(), func(t *testing.T) {
			st := &fakeStore{}
			st.setFail(func(*msg.Record) error { return fail })
			h := startHub(t, st, nil)
			lost := make(chan error, 1)
			c := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) {
				o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
			})
			tok := c.Publish("devices/leaf-1/messages/events/", 1, false, "x")
			select {
			case <-lost:
			case <-tok.Done():
				if tok.Error() == nil {
					t.Fatal("publish acknowledged although the store failed")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("not disconnected")
			}
			if s := h.Stats(); s.Refused != 1 || s.Stored != 0 {
				t.Fatalf("stats = %+v", s)
			}
		})
	}
}

func TestStoreFailureMQTT5ReasonCode(t *testing.T) {
	for _, tc := range []struct {
		fail error
		code byte
	}{{fullErr, 0x97}, {errors.New("disk on fire"), 0x80}} {
		t.Run(tc.fail.Error(), func(t *testing.T) {
			st := &fakeStore{}
			st.setFail(func(*msg.Record) error { return tc.fail })
			h := startHub(t, st, nil)
			c := rawConnect5(t, h.Addr(), "leaf-1")
			if _, err := c.Write(publish5("devices/leaf-1/messages/events/", 7, []byte("x"))); err != nil {
				t.Fatal(err)
			}
			typ, body := readPacket(t, c)
			if typ>>4 != 4 || len(body) < 3 || body[0] != 0 || body[1] != 7 || body[2] != tc.code {
				t.Fatalf("got packet %#x %x, want PUBACK id 7 reason %#x", typ, body, tc.code)
			}
			// The connection stays usable: the next message is stored.
			st.setFail(nil)
			if _, err := c.Write(publish5("devices/leaf-1/messages/events/", 8, []byte("y"))); err != nil {
				t.Fatal(err)
			}
			typ, body = readPacket(t, c)
			if typ>>4 != 4 || body[1] != 8 || (len(body) > 2 && body[2] != 0) {
				t.Fatalf("got packet %#x %x, want PUBACK id 8 success", typ, body)
			}
			if n := len(st.records()); n != 1 {
				t.Fatalf("%d records", n)
			}
		})
	}
}

func TestOversizeRefused(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, func(o *Options) { o.MaxMessageBytes = 1000 })
	c := rawConnect5(t, h.Addr(), "leaf-1")
	if _, err := c.Write(publish5("devices/leaf-1/messages/events/", 1, make([]byte, 1001))); err != nil {
		t.Fatal(err)
	}
	typ, body := readPacket(t, c)
	if typ>>4 != 4 || len(body) < 3 || body[2] < 0x80 {
		t.Fatalf("got %#x %x, want failed PUBACK", typ, body)
	}
	if _, err := c.Write(publish5("devices/leaf-1/messages/events/", 2, make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	typ, body = readPacket(t, c)
	if typ>>4 != 4 || (len(body) > 2 && body[2] != 0) {
		t.Fatalf("got %#x %x, want PUBACK success for 1000 bytes", typ, body)
	}
	if n := len(st.records()); n != 1 {
		t.Fatalf("%d records", n)
	}
}

func TestObserverSeesOnlyStoredMessages(t *testing.T) {
	st := &fakeStore{}
	h := startHub(t, st, nil)
	got := make(chan paho.Message, 10)
	dash := mustPaho(t, h.Addr(), "dash", nil)
	if tok := dash.Subscribe("devices/+/messages/events/#", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	leaf := mustPaho(t, h.Addr(), "leaf-1", nil)
	if tok := leaf.Publish("devices/leaf-1/messages/events/%24.mid=a1", 1, false, "one"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-got:
		if m.Topic() != "devices/leaf-1/messages/events/%24.mid=a1&outpost-seq=1" || string(m.Payload()) != "one" {
			t.Fatalf("observer got %s %q", m.Topic(), m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("observer got nothing")
	}
	// A refused message is not fanned out: "two" fails in the store, and
	// the observer's next message is "four", published after it.
	st.setFail(func(r *msg.Record) error {
		if string(r.Payload) == "two" {
			return fullErr
		}
		return nil
	})
	leaf.Publish("devices/leaf-1/messages/events/%24.mid=a2", 0, false, "two")
	if tok := leaf.Publish("devices/leaf-1/messages/events/%24.mid=a4", 1, false, "four"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// An adapter record published through Hub.Publish is fanned out too
	// (in no particular order with the leaf's).
	if err := h.Publish(&msg.Record{Seq: 5, ID: "r5", Device: "meter-1", Payload: []byte("three")}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"devices/leaf-1/messages/events/%24.mid=a4&outpost-seq=2 four":   true,
		"devices/meter-1/messages/events/%24.mid=r5&outpost-seq=5 three": true,
	}
	for range 2 {
		select {
		case m := <-got:
			if g := m.Topic() + " " + string(m.Payload()); !want[g] {
				t.Fatalf("observer got %q, want one of %v", g, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("observer got nothing, want %v", want)
		}
	}
}
