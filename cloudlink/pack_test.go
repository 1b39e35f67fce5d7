package cloudlink

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

func TestPackRecord(t *testing.T) {
	recs := []*msg.Record{
		{Seq: 7, ID: "a", Device: "m1", Props: msg.Props{{Key: "site", Value: "n"}}, Payload: []byte(`{"v":1}`)},
		{Seq: 9, ID: "b", Device: "m1", Props: msg.Props{{Key: "site", Value: "n"}}, Payload: []byte(`{"v":2}`)},
	}
	p := packRecord(recs)
	if string(p.Payload) != `[{"v":1},{"v":2}]` || p.Seq != 7 || p.Device != "m1" {
		t.Fatalf("pack = %+v %s", p, p.Payload)
	}
	if got := p.Props.Encode(); got != "%24.ct=application%2Fjson&outpost-pack=2&site=n" {
		t.Errorf("props = %s", got)
	}
	// $.mid comes from the readings: the same readings, the same id; other
	// readings (or another order), another id.
	if again := packRecord(recs); again.ID != p.ID || !strings.HasPrefix(p.ID, "pack-") {
		t.Errorf("ids %q and %q for the same readings", p.ID, again.ID)
	}
	if other := packRecord([]*msg.Record{recs[1], recs[0]}); other.ID == p.ID {
		t.Errorf("same id %q for other readings", p.ID)
	}
}

// TestPackMosquitto forwards a backlog of small readings with packing on
// through a real Mosquitto: readings of one device with equal properties
// arrive as JSON arrays within max_bytes, everything else alone and
// unchanged, every reading once and in order per device.
func TestPackMosquitto(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := newMemQueue()
	want, payloads := map[string][]uint64{}, map[uint64]string{}
	add := func(dev, body string, props ...msg.Prop) uint64 {
		seq := q.Append(dev, []byte(body), props...)
		want[dev] = append(want[dev], seq)
		payloads[seq] = body
		return seq
	}
	ct := msg.Prop{Key: msg.PropContentType, Value: msg.ContentTypeJSON}
	var rawSeq, alarmSeq, bigSeq uint64
	for i := range 600 {
		dev := []string{"meter-1", "thermo-1"}[i%2]
		add(dev, fmt.Sprintf(`{"ts":"2026-11-27T08:00:%02d.%03dZ","values":{"n":%d,"voltage":229.8}}`, i%60, i, i), ct)
		switch i {
		case 100:
			rawSeq = add("meter-1", "RAW 42\r\n", msg.Prop{Key: msg.PropContentType, Value: "text/plain"})
		case 200:
			alarmSeq = add("meter-1", fmt.Sprintf(`{"alarm":%d}`, i), ct, msg.Prop{Key: "type", Value: "alarm"})
		case 300:
			bigSeq = add("thermo-1", `{"blob":"`+strings.Repeat("x", 3000)+`"}`, ct)
		}
	}
	const maxBytes = 4096
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-pack", MaxInflight: 16, Pack: PackConfig{MaxBytes: maxBytes, MaxDelay: 100 * time.Millisecond}}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	waitDrained(t, q, 20*time.Second)
	col.waitUnique(603, 10*time.Second)
	stop()
	if dups := col.verify(want, payloads, true); dups != 0 {
		t.Errorf("%d duplicates without an outage", dups)
	}
	got, _ := col.snapshot()
	packs, alone := 0, map[uint64]delivery{}
	for _, d := range got {
		n, ok := d.props.Get(PropPack)
		if !ok {
			alone[d.seq] = d
			continue
		}
		packs++
		if size := len(d.payload) + len(d.topic); size > maxBytes {
			t.Errorf("pack %s of %s readings is %d bytes with its topic, over %d", d.mid, n, size, maxBytes)
		}
		if c, _ := d.props.Get(msg.PropContentType); c != msg.ContentTypeJSON {
			t.Errorf("pack %s: $.ct %q", d.mid, c)
		}
		if _, ok := d.props.Get("type"); ok {
			t.Errorf("pack %s has the alarm's property: %s", d.mid, d.topic)
		}
		var elems []json.RawMessage
		if err := json.Unmarshal([]byte(d.payload), &elems); err != nil || len(elems) < 2 {
			t.Errorf("pack %s: %d readings, %v", d.mid, len(elems), err)
		}
	}
	// ~95 bytes a reading: ~40 per pack, so 603 readings take a few dozen
	// messages; unpacked they would take 603.
	if packs == 0 || len(got) > 60 {
		t.Errorf("%d messages (%d packs) for 603 readings: not packed", len(got), packs)
	}
	for _, seq := range []uint64{rawSeq, alarmSeq, bigSeq} {
		d, ok := alone[seq]
		if !ok || d.payload != payloads[seq] {
			t.Errorf("seq %d did not go alone and unchanged: %+v", seq, d)
		}
	}
	if ty, _ := alone[alarmSeq].props.Get("type"); ty != "alarm" {
		t.Errorf("alarm lost its property: %s", alone[alarmSeq].topic)
	}
	st := s.Status()
	t.Logf("603 readings in %d messages (%d packs)", len(got), packs)
	if st.Forwarded != 603 {
		t.Errorf("Forwarded = %d, want 603 (readings, not messages)", st.Forwarded)
	}
}

// A live reading waits max_delay for companions: readings that come within
// it leave together; one that comes alone still leaves, as itself.
func TestPackWaitsForCompanions(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := newMemQueue()
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-pack2", Pack: PackConfig{MaxBytes: 4096, MaxDelay: time.Second}}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	waitConnected(t, s)
	want, payloads := map[string][]uint64{}, map[uint64]string{}
	for i := range 3 {
		body := fmt.Sprintf(`{"i":%d}`, i)
		seq := q.Append("meter-1", []byte(body))
		want["meter-1"] = append(want["meter-1"], seq)
		payloads[seq] = body
		time.Sleep(10 * time.Millisecond) // well within max_delay, even on a loaded machine
	}
	col.waitUnique(3, 10*time.Second)
	got, _ := col.snapshot()
	if len(got) != 1 || got[0].payload != `[{"i":0},{"i":1},{"i":2}]` {
		t.Fatalf("three readings within max_delay arrived as %d messages: %+v", len(got), got)
	}
	seq := q.Append("meter-1", []byte(`{"i":3}`))
	want["meter-1"] = append(want["meter-1"], seq)
	payloads[seq] = `{"i":3}`
	col.waitUnique(4, 10*time.Second)
	got, _ = col.snapshot()
	if len(got) != 2 || got[1].payload != `{"i":3}` {
		t.Fatalf("a lone reading arrived as %+v", got[len(got)-1])
	}
	waitDrained(t, q, 10*time.Second)
	col.verify(want, payloads, true)
}

// TestPackAzure packs leaves' readings under the gateway's identity on the
// stand-in IoT Hub: each pack keeps its leaf in outpost-device, carries a
// JSON $.ct with $.ce=utf-8 (so IoT Hub can route on the body), fits in one
// 4 KB metering unit, and breaks no protocol rule (the hub would drop the
// connection).
func TestPackAzure(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey})
	q := openStore(t)
	for i := range 200 {
		appendRecs(t, q, &msg.Record{Device: fmt.Sprintf("leaf-%d", i%2), Payload: []byte(fmt.Sprintf(`{"i":%d,"t":21.5}`, i))})
	}
	opt := fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Pack: PackConfig{MaxBytes: 4096, MaxDelay: 100 * time.Millisecond}, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t)})
	s, err := New(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	readings := func(h *hubtest.Hub) map[string]int {
		got := map[string]int{}
		for _, d := range h.D2C() {
			var elems []json.RawMessage
			if err := json.Unmarshal(d.Payload, &elems); err != nil {
				elems = []json.RawMessage{d.Payload}
			}
			for _, e := range elems {
				got[string(e)]++
			}
		}
		return got
	}
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return len(readings(h)) >= 200 }) {
		t.Fatalf("hub has %d of 200 readings", len(readings(hub)))
	}
	for r, n := range readings(hub) {
		if n != 1 {
			t.Errorf("reading %s arrived %d times", r, n)
		}
	}
	d2c := hub.D2C()
	for _, d := range d2c {
		leaf, _ := d.Props.Get(PropDevice)
		ct, _ := d.Props.Get(msg.PropContentType)
		ce, _ := d.Props.Get(msg.PropContentEncoding)
		n, _ := d.Props.Get(PropPack)
		if d.Device != "gw-01" || !strings.HasPrefix(leaf, "leaf-") || n == "" || ct != msg.ContentTypeJSON || ce != "utf-8" {
			t.Errorf("D2C %s: want a pack from a leaf under gw-01 with JSON $.ct and $.ce", d.Topic)
		}
		if len(d.Payload)+len(d.Topic) > 4096 {
			t.Errorf("pack of %s is %d bytes with its topic", n, len(d.Payload)+len(d.Topic))
		}
	}
	if len(d2c) > 10 {
		t.Errorf("200 readings took %d messages", len(d2c))
	}
	for _, kind := range []string{hubtest.Violation, hubtest.Refused} {
		if n := hub.Count(kind, ""); n != 0 {
			t.Errorf("hub saw %d %s events", n, kind)
		}
	}
	t.Logf("200 readings in %d messages", len(d2c))
}

// A backlog spread over more devices than the backlog has in-flight slots
// must not wait MaxDelay for each round of packs: the leaser sends the
// packs that hold backlog slots before it waits for one. (Before, the
// review measured 19.1 s for 400 records over 40 devices at a 500 ms
// MaxDelay: a round of MaxDelay per 12 records.)
func TestPackBacklogManyDevices(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	devs := make([]string, 40)
	for i := range devs {
		devs[i] = fmt.Sprintf("leaf-%02d", i)
	}
	q := newMemQueue()
	want, payloads := fill(q, 400, devs...)
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-pack3", MaxInflight: 16, Pack: PackConfig{MaxBytes: 4096, MaxDelay: 2 * time.Second}}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	waitDrained(t, q, 15*time.Second)
	col.waitUnique(400, 10*time.Second)
	col.verify(want, payloads, false)
}

// recordingClient is a paho client whose Publish records the message and
// completes at once: the test sees exactly what the forwarder sends.
type recordingClient struct {
	paho.Client
	mu   sync.Mutex
	sent []string // topic + "\x00" + payload
}

type doneToken struct{ paho.Token }

func (doneToken) Wait() bool                     { return true }
func (doneToken) WaitTimeout(time.Duration) bool { return true }
func (doneToken) Done() <-chan struct{}          { return closedChan }
func (doneToken) Error() error                   { return nil }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *recordingClient) Publish(topic string, _ byte, _ bool, payload any) paho.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, topic+"\x00"+string(payload.([]byte)))
	return doneToken{}
}

// No pack is ever over max_bytes, counting its topic as sent: Azure's bag
// adds $.mid, outpost-seq (large after a long life), outpost-pack,
// outpost-device (a long leaf id), $.ct and $.ce to the readings' own
// properties. (A review found 4,145-byte packs at max_bytes 4096, and at
// 256 KiB an oversize pack that IoT Hub refused after every reconnect.)
func TestPackNeverOverMaxBytes(t *testing.T) {
	for _, max := range []int{512, 4096, 256 << 10} {
		s, err := New(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://h:8883", Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Pack: PackConfig{MaxBytes: msg.Size(max), MaxDelay: time.Hour}}, Logger: testLogger(t)}, newMemQueue())
		if err != nil {
			t.Fatal(err)
		}
		c := &recordingClient{}
		f := newForwarder(s, c)
		ctx := context.Background()
		leaf := "leaf-" + strings.Repeat("d", 40)
		n := 3 * max / 16 // readings of ~22 bytes: a few full packs
		for i := range n {
			r := &msg.Record{Seq: uint64(1e15 + i), ID: fmt.Sprintf("id-%d", i), Device: leaf,
				Props:   msg.Props{{Key: "unit", Value: "deg C"}},
				Payload: fmt.Appendf(nil, `{"i":%d,"t":21.5}`, i)}
			if err := f.pk.add(ctx, r, srcLive); err != nil {
				t.Fatal(err)
			}
			for len(f.pending) > 0 { // the upstream acknowledges at once
				<-f.pending
				<-f.slots
			}
		}
		packs, readings := 0, 0
		for _, m := range c.sent {
			topic, body, _ := strings.Cut(m, "\x00")
			if len(topic)+len(body) > max {
				t.Errorf("max_bytes %d: a %d-byte message went out", max, len(topic)+len(body))
			}
			if strings.HasPrefix(body, "[") {
				packs++
				var elems []json.RawMessage
				json.Unmarshal([]byte(body), &elems)
				readings += len(elems)
			} else {
				readings++
			}
		}
		if packs == 0 {
			t.Errorf("max_bytes %d: nothing packed", max)
		}
		t.Logf("max_bytes %d: %d messages (%d packs) for the %d readings sent so far", max, len(c.sent), packs, readings)
	}
}
