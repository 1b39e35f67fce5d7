package layout

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

func TestRecordRoundTrip(t *testing.T) {
	at := time.Unix(0, 1700000000123456789)
	r := &msg.Record{Seq: 7, ID: "m-1", Device: "d", Priority: msg.Normal, Enqueued: at,
		Props: msg.Props{{Key: "k", Value: "v"}}, Payload: []byte("hello")}
	v := EncodeRecord(nil, r)
	got, err := DecodeRecord(v, 7)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("DecodeRecord = %+v, %v; want %+v", got, err, r)
	}
	if size, enq, err := RecordHead(v); size != r.Size() || !enq.Equal(at) || err != nil {
		t.Errorf("RecordHead = %d %v %v", size, enq, err)
	}
	rec, reason, when, err := DecodeDead(EncodeDead("413", at, v), 7)
	if err != nil || reason != "413" || !when.Equal(at) || !reflect.DeepEqual(rec, r) {
		t.Errorf("DecodeDead = %+v %q %v %v", rec, reason, when, err)
	}
	for n := range len(v) - len(r.Payload) { // cut inside the header
		if _, err := DecodeRecord(v[:n], 7); !errors.Is(err, errCorruptRecord) {
			t.Errorf("truncated to %d: %v", n, err)
		}
	}
}

func TestKeysSortFIFO(t *testing.T) {
	if bytes.Compare(OutboxKey(msg.High, 255), OutboxKey(msg.High, 256)) >= 0 ||
		bytes.Compare(OutboxKey(msg.High, 1<<40), OutboxKey(msg.Normal, 1)) >= 0 {
		t.Error("outbox keys do not sort by class, then seq")
	}
	if c, s, ok := ParseOutboxKey(OutboxKey(msg.Low, 42)); c != msg.Low || s != 42 || !ok {
		t.Errorf("ParseOutboxKey = %v %d %v", c, s, ok)
	}
	if DeadSeq(DeadKey(99)) != 99 || FinishedID(FinishedKey(time.Unix(5, 0), "id")) != "id" {
		t.Error("DeadSeq or FinishedID does not invert its key")
	}
	if !bytes.HasPrefix(PendingKey("dev", 3), PendingPrefix("dev")) || bytes.HasPrefix(PendingKey("dev2", 3), PendingPrefix("dev")) {
		t.Error("pending prefix does not separate devices")
	}
}
