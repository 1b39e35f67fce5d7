package hub

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/store"
)

// startTwinHub starts a hub whose leaf-1 and leaf-2 have twins kept by a
// twins.Manager on a real store.
func startTwinHub(t *testing.T, tweak func(*twins.Options)) (*Hub, *twins.Manager) {
	t.Helper()
	q, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	var h *Hub
	opt := twins.Options{
		Store:      q,
		Known:      func(d string) bool { return d == "leaf-1" || d == "leaf-2" },
		Send:       func(d, topic string, p []byte) error { return h.SendLeaf(d, topic, p) },
		Subscribed: func(d, f string) bool { return h.Subscribed(d, f) },
	}
	if tweak != nil {
		tweak(&opt)
	}
	m, err := twins.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	h = startHub(t, q, func(o *Options) { o.Twins = m })
	return h, m
}

// inbox collects what a paho client receives.
type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (b *inbox) handler(_ paho.Client, m paho.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

// wait returns the first message on a topic with prefix, waiting up to 5 s.
func (b *inbox) wait(t *testing.T, prefix string) paho.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		for i, m := range b.msgs {
			if strings.HasPrefix(m.Topic(), prefix) {
				b.msgs = append(b.msgs[:i], b.msgs[i+1:]...)
				b.mu.Unlock()
				return m
			}
		}
		b.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("nothing received on %s", prefix)
	return nil
}

func (b *inbox) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, m := range b.msgs {
		out = append(out, m.Topic())
	}
	return out
}

func subscribeCodes(t *testing.T, c paho.Client, filters ...string) map[string]byte {
	t.Helper()
	fs := map[string]byte{}
	for _, f := range filters {
		fs[f] = 0
	}
	tok := c.SubscribeMultiple(fs, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %v: %v", filters, tok.Error())
	}
	return tok.(*paho.SubscribeToken).Result()
}

func pub(t *testing.T, c paho.Client, topic string, qos byte, body string) {
	t.Helper()
	tok := c.Publish(topic, qos, false, body)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// A leaf's twin requests on the raw topics get IoT Hub's answers: 200 with
// the twin, 204 with the new $version, 400 malformed, 413 too large, each
// on $iothub/twin/res/{status}/?$rid= and with QoS 0 or 1 alike.
func TestTwinTopicStatuses(t *testing.T) {
	h, _ := startTwinHub(t, nil)
	var in inbox
	c := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in.handler) })
	if codes := subscribeCodes(t, c, iothub.TwinResponseFilter); codes[iothub.TwinResponseFilter] != 0 {
		t.Fatalf("subscribe to the twin answers: %v", codes)
	}
	var large strings.Builder
	large.WriteString(`{`)
	for i := range 9 {
		if i > 0 {
			large.WriteString(",")
		}
		large.WriteString(`"k` + string(rune('0'+i)) + `":"` + strings.Repeat("v", 4000) + `"`)
	}
	large.WriteString(`}`)
	for _, qos := range []byte{0, 1} {
		q := string(rune('0' + qos))
		pub(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=p"+q, qos, `{"fw":"1.`+q+`"}`)
		if m := in.wait(t, "$iothub/twin/res/"); m.Topic() != "$iothub/twin/res/204/?$rid=p"+q+"&$version="+string(rune('2'+qos)) || len(m.Payload()) != 0 {
			t.Errorf("qos %d: reported patch answered on %s: %s", qos, m.Topic(), m.Payload())
		}
		pub(t, c, "$iothub/twin/GET/?$rid=g"+q, qos, "")
		m := in.wait(t, "$iothub/twin/res/")
		tw, err := iothub.ParseTwin(m.Payload())
		if m.Topic() != "$iothub/twin/res/200/?$rid=g"+q || err != nil || tw.Reported.Props["fw"] != json.Number("1."+q) && tw.Reported.Props["fw"] != "1."+q {
			t.Errorf("qos %d: GET answered on %s: %s (%v)", qos, m.Topic(), m.Payload(), err)
		}
		for _, bad := range []struct{ body, status string }{{`{"fw":`, "400"}, {`{"a b":1}`, "400"}, {large.String(), "413"}} {
			pub(t, c, "$iothub/twin/PATCH/properties/reported/?$rid=bad", qos, bad.body)
			m := in.wait(t, "$iothub/twin/res/")
			var e struct {
				Code int    `json:"errorCode"`
				Msg  string `json:"message"`
			}
			if m.Topic() != "$iothub/twin/res/"+bad.status+"/?$rid=bad" || json.Unmarshal(m.Payload(), &e) != nil || strconv.Itoa(e.Code/1000) != bad.status || e.Msg == "" {
				t.Errorf("qos %d: patch %.20s answered on %s: %.200s", qos, bad.body, m.Topic(), m.Payload())
			}
		}
	}
	if !c.IsConnected() {
		t.Fatal("the leaf was disconnected")
	}
	if st := h.Stats(); st.TwinRequests != 10 || st.TwinRefused != 6 || st.Received != 0 {
		t.Errorf("stats %+v: want 10 twin requests, 6 refused, no D2C received", st)
	}
}

// Over the rate a twin request is answered 429.
func TestTwinThrottled(t *testing.T) {
	h, _ := startTwinHub(t, func(o *twins.Options) { o.Rate, o.Burst = 0.01, 2 })
	var in inbox
	c := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in.handler) })
	subscribeCodes(t, c, iothub.TwinResponseFilter)
	var got []string
	for i := range 3 {
		pub(t, c, "$iothub/twin/GET/?$rid="+string(rune('a'+i)), 0, "")
		got = append(got, in.wait(t, "$iothub/twin/res/").Topic())
	}
	if got[0] != "$iothub/twin/res/200/?$rid=a" || got[1] != "$iothub/twin/res/200/?$rid=b" || got[2] != "$iothub/twin/res/429/?$rid=c" {
		t.Errorf("answers %v", got)
	}
}

// A leaf subscribes to its own $iothub filters only, publishes only twin
// requests and method answers, sees only its own twin's answers and
// desired patches, and cannot answer another leaf's method call.
func TestTwinTopicsConfined(t *testing.T) {
	h, m := startTwinHub(t, nil)
	var in1, in2 inbox
	c1 := mustPaho(t, h.Addr(), "leaf-1", func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in1.handler) })
	c2 := mustPaho(t, h.Addr(), "leaf-2", func(o *paho.ClientOptions) { o.SetDefaultPublishHandler(in2.handler) })
	codes := subscribeCodes(t, c1, "$iothub/#", "#", "$iothub/twin/#", "$iothub/methods/res/#",
		iothub.TwinResponseFilter, iothub.TwinDesiredFilter, iothub.MethodRequestFilter)
	for f, want := range map[string]byte{"$iothub/#": 0x80, "#": 0x80, "$iothub/twin/#": 0x80, "$iothub/methods/res/#": 0x80,
		iothub.TwinResponseFilter: 0, iothub.TwinDesiredFilter: 0, iothub.MethodRequestFilter: 0} {
		if codes[f] != want {
			t.Errorf("subscribe %s: code %#x, want %#x", f, codes[f], want)
		}
	}
	subscribeCodes(t, c2, iothub.TwinResponseFilter, iothub.TwinDesiredFilter, iothub.MethodRequestFilter)

	pub(t, c1, "$iothub/twin/GET/?$rid=1", 0, "")
	in1.wait(t, "$iothub/twin/res/200/?$rid=1")
	if _, err := m.PatchDesired(context.Background(), "leaf-1", iothub.Patch{"mode": "eco"}, 0); err != nil {
		t.Fatal(err)
	}
	if msg := in1.wait(t, "$iothub/twin/PATCH/properties/desired/"); msg.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" ||
		string(msg.Payload()) != `{"$version":2,"mode":"eco"}` {
		t.Errorf("desired patch on %s: %s", msg.Topic(), msg.Payload())
	}

	// A method call for leaf-1 answered by leaf-2 with its $rid: ignored.
	done := make(chan error, 1)
	go func() {
		_, err := m.Call(context.Background(), "leaf-1", iothub.MethodCall{Name: "reboot", ResponseTimeout: 2 * time.Second})
		done <- err
	}()
	req := in1.wait(t, "$iothub/methods/POST/reboot/")
	mt, err := iothub.ParseMethodTopic(req.Topic())
	if err != nil {
		t.Fatal(err)
	}
	pub(t, c2, iothub.MethodResponseTopic(200, mt.RID), 0, `{"spoofed":true}`)
	if err := <-done; iothub.StatusOf(err) != 504 {
		t.Errorf("leaf-1's call after leaf-2 answered it: %v, want 504", err)
	}
	waitFor(t, "the unmatched answer counted", func() bool { return h.Stats().MethodUnmatched == 1 })
	if got := in2.all(); len(got) != 0 {
		t.Errorf("leaf-2 received leaf-1's traffic: %v", got)
	}

	// A leaf posing as the hub (a twin answer, a method request) is refused:
	// QoS 1 on MQTT 3.1.1 disconnects it.
	pub(t, c2, "$iothub/twin/res/200/?$rid=1", 0, "{}")
	pub(t, c2, "$iothub/methods/POST/reboot/?$rid=1", 0, "{}")
	if got := in1.all(); len(got) != 0 {
		t.Errorf("leaf-1 received what leaf-2 published: %v", got)
	}
	before := h.Stats().ACLDenied
	c2.Publish("$iothub/twin/res/200/?$rid=1", 1, false, "{}")
	waitFor(t, "leaf-2 disconnected", func() bool { return !c2.IsConnected() })
	if h.Stats().ACLDenied == before {
		t.Error("the refusal was not counted")
	}
}

// Without Twins the $iothub topics stay closed.
func TestTwinTopicsClosedWithoutTwins(t *testing.T) {
	h := startHub(t, &fakeStore{}, nil)
	c := mustPaho(t, h.Addr(), "leaf-1", nil)
	if codes := subscribeCodes(t, c, iothub.TwinResponseFilter); codes[iothub.TwinResponseFilter] != 0x80 {
		t.Errorf("subscribe to twin answers without twins: %#x", codes[iothub.TwinResponseFilter])
	}
}
