package msg

import (
	"strings"
	"testing"
	"time"
)

// The vector from IOTHUB.md section 3, computed with the Python SDK's algorithm.
func TestEncodeIoTHubVector(t *testing.T) {
	ps := Props{
		{"unit", "degC"},
		{"$.ce", "utf-8"},
		{"alert level", "high temp"},
		{"$.ct", "application/json;charset=utf-8"},
		{"$.cid", "corr 1"},
		{"$.mid", "msg-0001"},
	}
	got := EventsTopic("gw-leaf-01", ps)
	want := "devices/gw-leaf-01/messages/events/%24.mid=msg-0001&%24.cid=corr%201&%24.ct=application%2Fjson%3Bcharset%3Dutf-8&%24.ce=utf-8&alert%20level=high%20temp&unit=degC"
	if got != want {
		t.Fatalf("EventsTopic =\n %s\nwant\n %s", got, want)
	}
	dev, back, err := ParseEventsTopic(got)
	if err != nil || dev != "gw-leaf-01" {
		t.Fatalf("ParseEventsTopic = %q, %v", dev, err)
	}
	for _, p := range ps {
		if v, ok := back.Get(p.Key); !ok || v != p.Value {
			t.Errorf("round trip %q = %q, %v; want %q", p.Key, v, ok, p.Value)
		}
	}
}

func TestParseTopics(t *testing.T) {
	tests := []struct {
		topic  string
		device string
		props  Props
		bad    bool
	}{
		{topic: "devices/leaf-1/messages/events", device: "leaf-1"},
		{topic: "devices/leaf-1/messages/events/", device: "leaf-1"},
		{topic: "devices/leaf-1/messages/events/$.mid=a&k=v+w", device: "leaf-1", props: Props{{"$.mid", "a"}, {"k", "v+w"}}},
		{topic: "devices/leaf-1/messages/events/flag", device: "leaf-1", props: Props{{"flag", ""}}},
		{topic: "devices/leaf-1/messages/events/a/b", bad: true},
		{topic: "devices/leaf-1/messages/eventsX", bad: true},
		{topic: "devices//messages/events", bad: true},
		{topic: "devices/a+b/messages/events", bad: true},
		{topic: "devices/a#/messages/events", bad: true},
		{topic: "devices/leaf-1/messages/events/k=%zz", bad: true},
		{topic: "sensors/leaf-1", bad: true},
	}
	for _, tt := range tests {
		dev, ps, err := ParseEventsTopic(tt.topic)
		if tt.bad {
			if err == nil {
				t.Errorf("ParseEventsTopic(%q) = %q, nil; want an error", tt.topic, dev)
			}
			continue
		}
		if err != nil || dev != tt.device || len(ps) != len(tt.props) {
			t.Errorf("ParseEventsTopic(%q) = %q, %v, %v", tt.topic, dev, ps, err)
			continue
		}
		for i := range ps {
			if ps[i] != tt.props[i] {
				t.Errorf("ParseEventsTopic(%q) prop %d = %v, want %v", tt.topic, i, ps[i], tt.props[i])
			}
		}
	}
	if dev, ps, err := ParseDeviceboundTopic("devices/d1/messages/devicebound/%24.mid=m1&iothub-ack=full"); err != nil || dev != "d1" || ps[0] != (Prop{"$.mid", "m1"}) {
		t.Errorf("ParseDeviceboundTopic = %q %v %v", dev, ps, err)
	}
}

func TestValidDeviceID(t *testing.T) {
	for _, ok := range []string{"leaf-1", "a:b.c_d", "x@y;z$'"} {
		if err := ValidDeviceID(ok); err != nil {
			t.Errorf("ValidDeviceID(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a/b", "a+b", "a#", "é", "a b", strings.Repeat("x", 129)} {
		if ValidDeviceID(bad) == nil {
			t.Errorf("ValidDeviceID(%q) = nil, want an error", bad)
		}
	}
}

func TestRecordTopicCarriesIDAndSeq(t *testing.T) {
	r := &Record{Seq: 42, ID: "m-1", Device: "leaf-1", Props: Props{{"$.ct", "application/json"}}}
	dev, ps, err := ParseEventsTopic(r.Topic())
	if err != nil || dev != "leaf-1" {
		t.Fatal(err)
	}
	if v, _ := ps.Get(PropMessageID); v != "m-1" {
		t.Errorf("$.mid = %q", v)
	}
	if v, _ := ps.Get(PropSeq); v != "42" {
		t.Errorf("seq = %q", v)
	}
}

func TestReadingBodyAndCommand(t *testing.T) {
	r := Reading{Device: "m", Time: time.Date(2026, 11, 27, 8, 0, 0, 123e6, time.UTC), Values: map[string]any{"pump": true, "voltage": 229.8}}
	if got, want := string(r.Body()), `{"ts":"2026-11-27T08:00:00.123Z","values":{"pump":true,"voltage":229.8}}`; got != want {
		t.Errorf("Body = %s, want %s", got, want)
	}
	c, err := ParseCommand("c1", "m", time.Time{}, []byte(`{"pulse":{"relay":"500ms"}}`))
	if err != nil || c.Pulse["relay"] != 500*time.Millisecond {
		t.Errorf("ParseCommand pulse = %+v, %v", c, err)
	}
	for _, bad := range []string{`{}`, `{"write":{"a":1},"send":"x"}`, `{"pulse":{"r":"soon"}}`, `not json`} {
		if _, err := ParseCommand("c", "m", time.Time{}, []byte(bad)); err == nil {
			t.Errorf("ParseCommand(%s) = nil error", bad)
		}
	}
}
