package hubtest_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/gateway/iothub"
)

// twinClient is a raw paho device subscribed to the twin and method topics;
// what the hub sends it arrives on the returned channel.
func twinClient(t *testing.T, h *hubtest.Hub, id, key string) (paho.Client, chan paho.Message) {
	t.Helper()
	in := make(chan paho.Message, 64)
	c, err := client(t, h, id, cloudlink.AzureUsername(host, id), token(t, id, key, time.Hour), 4, func(_ paho.Client, m paho.Message) { in <- m })
	if err != nil {
		t.Fatal(err)
	}
	tok := c.SubscribeMultiple(map[string]byte{iothub.TwinResponseFilter: 0, iothub.TwinDesiredFilter: 0, iothub.MethodRequestFilter: 0}, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c, in
}

func next(t *testing.T, in chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-in:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("nothing from the hub")
		return nil
	}
}

// request publishes body on topic and returns the hub's answer.
func request(t *testing.T, c paho.Client, in chan paho.Message, topic, body string) (iothub.TwinTopic, string) {
	t.Helper()
	if tok := c.Publish(topic, 1, false, body); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
	m := next(t, in)
	tt, err := iothub.ParseTwinTopic(m.Topic())
	if err != nil || tt.Op != iothub.TwinResponse {
		t.Fatalf("answer on %q: %v", m.Topic(), err)
	}
	return tt, string(m.Payload())
}

func TestTwinRequests(t *testing.T) {
	h := start(t)
	c, in := twinClient(t, h, "dev-1", key1)

	r, body := request(t, c, in, iothub.TwinGetTopic("1"), "")
	if r.Status != 200 || r.RID != "1" {
		t.Fatalf("GET answered %+v", r)
	}
	tw, err := iothub.ParseTwin([]byte(body))
	if err != nil || tw.Desired.Version != 1 || tw.Reported.Version != 1 {
		t.Fatalf("fresh twin %s: %v", body, err)
	}

	r, _ = request(t, c, in, iothub.TwinReportedTopic("2"), `{"fw":"1.0","net":{"rssi":-60}}`)
	if r.Status != 204 || r.RID != "2" || r.Version != 2 {
		t.Fatalf("reported patch answered %+v", r)
	}
	r, _ = request(t, c, in, iothub.TwinReportedTopic("3"), `{"net":{"rssi":null,"ch":6}}`)
	if r.Status != 204 || r.Version != 3 {
		t.Fatalf("second patch answered %+v", r)
	}
	got := h.Twin("dev-1").Reported
	if b, _ := json.Marshal(got); string(b) != `{"$version":3,"fw":"1.0","net":{"ch":6}}` {
		t.Fatalf("reported section %s", b)
	}

	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"malformed JSON", `{"fw":`, 400},
		{"not an object", `[1]`, 400},
		{"bad name", `{"a.b":1}`, 400},
		{"over 32 KB", `{"big":"` + strings.Repeat("x", 4000) + `","b2":"` + strings.Repeat("x", 4000) + `","b3":"` + strings.Repeat("x", 4000) + `","b4":"` + strings.Repeat("x", 4000) + `","b5":"` + strings.Repeat("x", 4000) + `","b6":"` + strings.Repeat("x", 4000) + `","b7":"` + strings.Repeat("x", 4000) + `","b8":"` + strings.Repeat("x", 4000) + `","b9":"` + strings.Repeat("x", 4000) + `"}`, 413},
	} {
		r, body := request(t, c, in, iothub.TwinReportedTopic("x"), tc.body)
		if r.Status != tc.status || !strings.Contains(body, `"errorCode"`) {
			t.Errorf("%s: answered %d %s, want %d", tc.name, r.Status, body, tc.status)
		}
	}
	if v := h.Twin("dev-1").Reported.Version; v != 3 {
		t.Errorf("refused patches moved the version to %d", v)
	}

	h.Throttle(true)
	if r, _ := request(t, c, in, iothub.TwinGetTopic("4"), ""); r.Status != 429 {
		t.Errorf("throttled GET answered %d", r.Status)
	}
	if r, _ := request(t, c, in, iothub.TwinReportedTopic("5"), `{"a":1}`); r.Status != 429 {
		t.Errorf("throttled patch answered %d", r.Status)
	}
	h.Throttle(false)
	if n := len(h.ReportedPatches("dev-1")); n != 2 {
		t.Errorf("%d patches applied, want 2", n)
	}
	if n := h.TwinRequests("dev-1", iothub.TwinReported, 429); n != 1 {
		t.Errorf("%d throttled patches counted, want 1", n)
	}

	// Desired: pushed to dev-1 only, with its $version.
	_, in2 := twinClient(t, h, "dev-2", key2)
	v, err := h.SetDesired("dev-1", map[string]any{"rate": 5})
	if err != nil || v != 2 {
		t.Fatalf("SetDesired = %d, %v", v, err)
	}
	m := next(t, in)
	if m.Topic() != "$iothub/twin/PATCH/properties/desired/?$version=2" || string(m.Payload()) != `{"$version":2,"rate":5}` {
		t.Fatalf("desired push %s %s", m.Topic(), m.Payload())
	}
	select {
	case m := <-in2:
		t.Fatalf("dev-2 got dev-1's %s", m.Topic())
	case <-time.After(200 * time.Millisecond):
	}
	if _, body := request(t, c, in, iothub.TwinGetTopic("6"), ""); !strings.Contains(body, `"desired":{"$version":2,"rate":5}`) {
		t.Errorf("GET after desired change: %s", body)
	}
}

func TestDirectMethods(t *testing.T) {
	h := start(t)
	c, in := twinClient(t, h, "dev-1", key1)
	ctx := context.Background()

	if _, err := h.InvokeMethod(ctx, "dev-2", "reboot", nil, 0); iothub.StatusOf(err) != 404 {
		t.Errorf("offline device: %v, want 404", err)
	}
	if _, err := h.InvokeMethod(ctx, "dev-1", "reboot", nil, 4); iothub.StatusOf(err) != 400 {
		t.Errorf("timeout 4 s: %v, want 400", err)
	}

	go func() {
		m := <-in
		mt, err := iothub.ParseMethodTopic(m.Topic())
		if err != nil || mt.Name != "reboot" || string(m.Payload()) != `{"delay":1}` {
			t.Errorf("method request %s %s: %v", m.Topic(), m.Payload(), err)
			return
		}
		c.Publish(iothub.MethodResponseTopic(201, mt.RID), 0, false, `{"ok":true}`)
	}()
	r, err := h.InvokeMethod(ctx, "dev-1", "reboot", []byte(`{"delay":1}`), 0)
	if err != nil || r.Status != 201 || string(r.Payload) != `{"ok":true}` {
		t.Fatalf("method answered %+v %s, %v", r, r.Payload, err)
	}

	// No answer: 504 after responseTimeoutInSeconds.
	start := time.Now()
	if _, err := h.InvokeMethod(ctx, "dev-1", "slow", nil, 5); iothub.StatusOf(err) != 504 {
		t.Errorf("unanswered call: %v, want 504", err)
	}
	if el := time.Since(start); el < 5*time.Second {
		t.Errorf("timed out after %v, before the 5 s asked", el)
	}
	next(t, in) // the request did arrive
}
