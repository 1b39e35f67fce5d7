package cloudlink

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/cloudlink/internal/tcpproxy"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/twins"
)

// twinLeaf stands in for a leaf on the local hub, as twins.Manager sees
// it: what the Manager sends it is recorded; a method request is answered
// with {"echo":<payload>} and status 200.
type twinLeaf struct {
	m      *twins.Manager
	online atomic.Bool
	mu     sync.Mutex
	sent   []string // topic + " " + payload
}

func (l *twinLeaf) send(device, topic string, payload []byte) error {
	l.mu.Lock()
	l.sent = append(l.sent, topic+" "+string(payload))
	l.mu.Unlock()
	if mt, err := iothub.ParseMethodTopic(topic); err == nil && !mt.Response {
		go l.m.MethodResponse(device, mt.RID, 200, append(append([]byte(`{"echo":`), payload...), '}'))
	}
	return nil
}

func (l *twinLeaf) sentTo(prefix string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, s := range l.sent {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// cloudRelay is the twins' Cloud: the Fleet, once made.
type cloudRelay struct{ f atomic.Pointer[Fleet] }

func (r *cloudRelay) ReportedPending(device string) {
	if f := r.f.Load(); f != nil {
		f.ReportedPending(device)
	}
}

func section(s iothub.Section) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// eventually polls ok for up to 20 s.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestTwinsPerDevice syncs a leaf's twin over its own connection to the
// stand-in IoT Hub, through a real twins.Manager on a real store: the
// desired section set before the link came up arrives by the GET on
// connect; reported patches made locally arrive merged and in order, also
// those made while the link was down (after the reconnect), and through a
// spell of 429s; a desired change pushed by the hub, and one made while
// the link was down (by the GET after the reconnect), reach the Manager
// and the leaf; a direct method invoked on the hub reaches the leaf and
// its answer returns with its status, and an offline leaf is a 404. A
// device with a key and no local twin (meter-1) keeps its connection and
// syncs no twin.
func TestTwinsPerDevice(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey, "leaf-1": testLeaf1Key, "meter-1": testLeaf2Key})
	px := newProxy(t, hub.Addr())
	q := openStore(t)
	ctx := context.Background()

	leaf := &twinLeaf{}
	leaf.online.Store(true)
	relay := &cloudRelay{}
	m, err := twins.New(twins.Options{Store: q, Known: func(d string) bool { return d == "leaf-1" },
		Send: leaf.send, Subscribed: func(string, string) bool { return leaf.online.Load() }, Cloud: relay})
	if err != nil {
		t.Fatal(err)
	}
	leaf.m = m

	if _, err := hub.SetDesired("leaf-1", map[string]any{"rate": 1}); err != nil {
		t.Fatal(err)
	}
	opt := fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + px.Addr(), Host: testHubHost, DeviceID: "gw-01",
		SharedAccessKey: testGWKey, Identity: IdentityPerDevice, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t),
		DeviceKeys: map[string]string{"leaf-1": testLeaf1Key, "meter-1": testLeaf2Key}, Twins: m})
	f, err := NewFleet(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	relay.f.Store(f)
	runSession(t, f)

	// GET on connect → ReplaceDesired.
	eventually(t, "the desired section from the GET on connect", func() bool {
		tw, _ := m.Twin("leaf-1")
		return section(tw.Desired) == `{"$version":2,"rate":1}`
	})
	if got := leaf.sentTo("$iothub/twin/PATCH/properties/desired/"); len(got) != 1 || got[0] != `$iothub/twin/PATCH/properties/desired/?$version=2 {"$version":2,"rate":1}` {
		t.Errorf("the leaf got %q", got)
	}
	for _, dev := range []string{"gw-01", "meter-1"} {
		if n := hub.TwinRequests(dev, iothub.TwinGet, 200); n != 0 {
			t.Errorf("%s, which has no local twin, fetched its twin %d times", dev, n)
		}
	}

	// Reported patches, merged and in order.
	for _, p := range []string{`{"a":1}`, `{"b":{"c":1}}`, `{"a":2,"d":"x"}`, `{"d":null}`} {
		if _, err := m.PatchReported(ctx, "leaf-1", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the reported patches at the hub", func() bool {
		s := section(hub.Twin("leaf-1").Reported)
		return strings.HasPrefix(s, `{"$version":`) && strings.HasSuffix(s, `"a":2,"b":{"c":1}}`)
	})
	eventually(t, "the patches acknowledged", func() bool { n, _ := m.PendingReported("leaf-1"); return n == 0 })

	// A desired push.
	if _, err := hub.SetDesired("leaf-1", map[string]any{"rate": 5}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pushed desired patch", func() bool {
		tw, _ := m.Twin("leaf-1")
		return section(tw.Desired) == `{"$version":3,"rate":5}`
	})

	// Link down: reported patches wait; a desired change comes with the GET after the reconnect.
	gets := hub.TwinRequests("leaf-1", iothub.TwinGet, 200)
	px.Set(tcpproxy.Cut)
	eventually(t, "the leaf's connection down", func() bool { return !f.Status().Devices["leaf-1"].Connected })
	if _, err := m.PatchReported(ctx, "leaf-1", []byte(`{"a":3}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.PatchReported(ctx, "leaf-1", []byte(`{"b":{"e":true}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.SetDesired("leaf-1", map[string]any{"rate": 7, "mode": "eco"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if s := section(hub.Twin("leaf-1").Reported); strings.Contains(s, `"a":3`) {
		t.Fatalf("a patch arrived while the link was cut: %s", s)
	}
	px.Set(tcpproxy.Up)
	eventually(t, "the reported patches made while down", func() bool {
		return strings.HasSuffix(section(hub.Twin("leaf-1").Reported), `"a":3,"b":{"c":1,"e":true}}`)
	})
	eventually(t, "the desired change made while down", func() bool {
		tw, _ := m.Twin("leaf-1")
		return section(tw.Desired) == `{"$version":4,"mode":"eco","rate":7}`
	})
	if n := hub.TwinRequests("leaf-1", iothub.TwinGet, 200); n <= gets {
		t.Errorf("no GET after the reconnect (%d before, %d after)", gets, n)
	}
	// The order the hub applied them in: never an older value after a newer one.
	var as []string
	for _, p := range hub.ReportedPatches("leaf-1") {
		if a, ok := p["a"]; ok {
			as = append(as, a.(json.Number).String())
		}
	}
	if strings.Join(as, ",") != "2,3" && strings.Join(as, ",") != "1,2,3" {
		t.Errorf("values of a applied at the hub in the order %v", as)
	}

	// 429: retried after a back-off.
	hub.Throttle(true)
	if _, err := m.PatchReported(ctx, "leaf-1", []byte(`{"t":1}`)); err != nil {
		t.Fatal(err)
	}
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return h.TwinRequests("leaf-1", iothub.TwinReported, 429) > 0 }) {
		t.Fatal("the patch never met the throttled hub")
	}
	hub.Throttle(false)
	eventually(t, "the throttled patch", func() bool {
		return strings.Contains(section(hub.Twin("leaf-1").Reported), `"t":1`)
	})

	// Direct methods.
	r, err := hub.InvokeMethod(ctx, "leaf-1", "reboot", []byte(`{"in":1}`), 10)
	if err != nil || r.Status != 200 || string(r.Payload) != `{"echo":{"in":1}}` {
		t.Fatalf("method: %+v %s, %v", r, r.Payload, err)
	}
	if got := leaf.sentTo("$iothub/methods/POST/reboot/"); len(got) != 1 || !strings.HasSuffix(got[0], ` {"in":1}`) {
		t.Errorf("the leaf got %q", got)
	}
	eventually(t, "meter-1 connected again", func() bool { return f.Status().Devices["meter-1"].Connected })
	if d := f.Status().Devices["meter-1"]; !d.Connected || d.Outages != 1 {
		// One outage: the cut above.
		t.Errorf("meter-1, a device with no local twin: %+v, want connected", d)
	}
	leaf.online.Store(false)
	r, err = hub.InvokeMethod(ctx, "leaf-1", "reboot", nil, 10)
	if err != nil || r.Status != 404 || !strings.Contains(string(r.Payload), `"errorCode":404001`) {
		t.Fatalf("method of an offline leaf: %+v %s, %v", r, r.Payload, err)
	}
}
