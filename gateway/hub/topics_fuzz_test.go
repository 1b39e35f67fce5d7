package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// FuzzHubTopics drives the hub's hooks for one topic from each kind of
// client (leaf, dashboard, operator, unknown): the ACL for publishing and
// subscribing, and the record a publish becomes (property bag, $.mid,
// outpost-seq). It checks: a client publishes only to its own D2C topic
// (an operator also to a C2D topic) and subscribes only to its own C2D
// topics (a dashboard also to D2C filters of any device); an unknown
// client may do nothing; a record is the client's, carries the bag's
// first $.mid as its ID, keeps neither $.mid nor outpost-seq among its
// properties, and its upstream topic parses back to the same device, ID,
// properties and sequence number; a D2C topic refused as malformed gets
// "topic name invalid". Seeds beyond these are in
// testdata/fuzz/FuzzHubTopics.
func FuzzHubTopics(f *testing.F) {
	for _, s := range []string{
		"devices/leaf-1/messages/events/",
		"devices/leaf-1/messages/events/%24.mid=m-1&%24.mid=m-2&outpost-seq=7&a=b%2Fc",
		"devices/leaf-1/messages/events/a=%zz",
		"devices/leaf-1/messages/events/x/y",
		"devices/leaf-1/messages/devicebound/#",
		"devices/leaf-1/messages/deviceboundx",
		"devices/+/messages/events/#",
		"devices/#",
		"devices/leaf-2/messages/events",
		"devices/leaf-1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
	} {
		f.Add(uint8(0), s, uint16(3))
	}
	h, err := New(Options{
		Config:   Config{Listen: "127.0.0.1:0", Clients: fuzzClients},
		Commands: func(context.Context, string, msg.Props, []byte) error { return nil },
	}, &fakeStore{})
	if err != nil {
		f.Fatal(err)
	}
	ids := []string{"leaf-1", "leaf-2", "dash", "op", "az-1", "nobody"}
	f.Fuzz(func(t *testing.T, who uint8, topic string, size uint16) {
		id := ids[int(who)%len(ids)]
		c := h.clients[id]
		cl := &mqtt.Client{ID: id}

		if h.allowed(cl, topic, true) {
			if c == nil {
				t.Fatalf("unknown %s may publish to %q", id, topic)
			}
			_, _, err := msg.ParseDeviceboundTopic(topic)
			switch {
			case err == nil && !c.Operator:
				t.Fatalf("%s may publish the command %q", id, topic)
			case err == nil && c.Operator:
			case !strings.HasPrefix(topic, "devices/"+id+"/messages/events"):
				t.Fatalf("%s may publish to %q", id, topic)
			}
			if d, _, err := msg.ParseEventsTopic(topic); err == nil && d != id {
				t.Fatalf("%s may publish as %s (%q)", id, d, topic)
			}
		}
		if h.allowed(cl, topic, false) {
			own := "devices/" + id + "/messages/devicebound"
			switch {
			case c == nil:
				t.Fatalf("unknown %s may subscribe to %q", id, topic)
			case topic == own || strings.HasPrefix(topic, own+"/"):
			case c.ReadAll && eventsOnly(topic):
			default:
				t.Fatalf("%s may subscribe to %q", id, topic)
			}
		}

		payload := make([]byte, int(size)%(2*int(h.opt.MaxMessageBytes)))
		r, err := h.record(cl, packets.Packet{TopicName: topic, Payload: payload})
		if err != nil {
			if r != nil {
				t.Fatalf("record %v with error %v", r, err)
			}
			if errors.Is(err, msg.ErrNotEvents) && refusalCode(err) != packets.ErrTopicNameInvalid {
				t.Fatalf("%q: refusal %v", topic, refusalCode(err))
			}
			dev, _, perr := msg.ParseEventsTopic(topic)
			if perr == nil && dev == id && len(payload) <= int(h.opt.MaxMessageBytes) {
				t.Fatalf("%s's own %q refused: %v", id, topic, err)
			}
			return
		}
		_, bag, _ := msg.ParseEventsTopic(topic)
		if r.Device != id || len(r.Payload) > int(h.opt.MaxMessageBytes) {
			t.Fatalf("%s: %q gave a record for %s of %d bytes", id, topic, r.Device, len(r.Payload))
		}
		if mid, ok := bag.Get(msg.PropMessageID); ok && r.ID != mid || !ok && r.ID != "" {
			t.Fatalf("%q: record ID %q", topic, r.ID)
		}
		if _, ok := r.Props.Get(msg.PropMessageID); ok {
			t.Fatalf("%q: $.mid left in %v", topic, r.Props)
		}
		if _, ok := r.Props.Get(msg.PropSeq); ok {
			t.Fatalf("%q: outpost-seq left in %v", topic, r.Props)
		}
		if c != nil && r.Priority != c.Priority {
			t.Fatalf("%q: priority %v, want %v", topic, r.Priority, c.Priority)
		}
		r.Seq = uint64(size) + 1
		dev, ps, err := msg.ParseEventsTopic(r.Topic())
		if err != nil || dev != id {
			t.Fatalf("%q: upstream topic %q: %s %v", topic, r.Topic(), dev, err)
		}
		if mid, _ := ps.Get(msg.PropMessageID); mid != r.ID {
			t.Fatalf("%q: upstream $.mid %q, want %q", topic, mid, r.ID)
		}
		if seq, _ := ps.Get(msg.PropSeq); seq != fmt.Sprint(r.Seq) {
			t.Fatalf("%q: upstream outpost-seq %q", topic, seq)
		}
		rest := ps.Delete(msg.PropMessageID).Delete(msg.PropSeq)
		if rest.Encode() != r.Props.Encode() {
			t.Fatalf("%q: upstream properties %v, want %v", topic, rest, r.Props)
		}
	})
}

// eventsOnly reports whether filter f is devices/{x}/messages/events[/...]
// with x one device id or "+".
func eventsOnly(f string) bool {
	p := strings.Split(f, "/")
	return len(p) >= 4 && p[0] == "devices" && p[2] == "messages" && p[3] == "events" &&
		(p[1] == "+" || msg.ValidDeviceID(p[1]) == nil)
}
