package cloudlink

import (
	"context"
	"strings"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// A record whose topic would be over MQTT's 65,535 bytes is rejected to
// dead letters, never handed to paho (which cuts the topic short: the
// upstream would get a truncated $.mid and no outpost-seq).
func TestTopicOverMQTTLimitRejected(t *testing.T) {
	q := newMemQueue()
	s, err := New(Options{Config: Config{URL: "mqtt://h:1883", ClientID: "gw"}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	q.Append("leaf-1", []byte("x"), msg.Prop{Key: msg.PropMessageID, Value: strings.Repeat("!", 22000)})
	q.Append("leaf-1", []byte("y"))
	recs, err := q.Lease(context.Background(), 2)
	if err != nil || len(recs) != 2 {
		t.Fatalf("lease: %d records, %v", len(recs), err)
	}
	c := &recordingClient{}
	f := newForwarder(s, c)
	for _, r := range recs {
		f.leased[r.Seq] = struct{}{}
		if err := f.publishOne(context.Background(), r, srcLive); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.sent {
		topic, _, _ := strings.Cut(m, "\x00")
		if len(topic) > 65535 {
			t.Errorf("a %d-byte topic was handed to paho", len(topic))
		}
	}
	if len(c.sent) != 1 {
		t.Errorf("%d messages sent, want 1 (the short one)", len(c.sent))
	}
	q.mu.Lock()
	dead := len(q.dead)
	q.mu.Unlock()
	if dead != 1 {
		t.Errorf("%d dead letters, want 1", dead)
	}
}
