package hub

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// sdkLeaf is a run of testdata/sdkleaf.js: Microsoft's Node.js device SDK
// as a real leaf, against the hub's TLS listener.
type sdkLeaf struct {
	*peertest.Proc
}

// sdkEvent is one JSON line the leaf script prints.
type sdkEvent struct {
	Ev  string `json:"ev"`
	ID  string `json:"id"`
	Err string `json:"err"`
	// A received C2D message:
	MessageID     string            `json:"messageId"`
	CorrelationID string            `json:"correlationId"`
	Props         map[string]string `json:"props"`
	Body          string            `json:"body"`
}

func (l sdkLeaf) events(t testing.TB) []sdkEvent {
	t.Helper()
	var evs []sdkEvent
	for line := range strings.SplitSeq(l.Output(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e sdkEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("leaf printed %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}

func count(evs []sdkEvent, ev string) int {
	n := 0
	for _, e := range evs {
		if e.Ev == ev {
			n++
		}
	}
	return n
}

// startSDKHub starts a TLS-only hub whose az-1 has sasKey1 and returns it
// with the CA file the leaf trusts.
func startSDKHub(t *testing.T, st Appender) (*Hub, string) {
	t.Helper()
	p := newPKI(t)
	h := startHub(t, st, func(o *Options) {
		o.Listen = ""
		o.TLSListen = "127.0.0.1:0"
		o.TLS.CertFile, o.TLS.KeyFile = p.serverCrt, p.serverKy
		o.Clients = []Client{{ID: "az-1", SASKey: sasKey1}}
	})
	return h, p.caFile
}

// startSDKLeaf starts the leaf script with a connection string for az-1
// with key and GatewayHostName = the hub's TLS address.
func startSDKLeaf(t *testing.T, h *Hub, ca, key string, env []string, args ...string) sdkLeaf {
	t.Helper()
	sdk := peertest.NeedNodeSDK(t)
	conn := fmt.Sprintf("HostName=myhub.azure-devices.net;DeviceId=az-1;SharedAccessKey=%s;GatewayHostName=%s", key, h.TLSAddr())
	cmd := sdk.Command(filepath.Join("testdata", "sdkleaf.js"), append([]string{"LEAF_CONN=" + conn, "LEAF_CA=" + ca}, env...), args...)
	return sdkLeaf{peertest.Start(t, cmd, nil)}
}

// runSDKLeaf runs the leaf script (startSDKLeaf) and waits for it to exit.
func runSDKLeaf(t *testing.T, h *Hub, ca, key string, env []string, args ...string) sdkLeaf {
	t.Helper()
	l := startSDKLeaf(t, h, ca, key, env, args...)
	select {
	case <-l.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("leaf did not finish:\n%s", l.Output())
	}
	l.Exited()
	return l
}

func TestNodeSDKLeafSendsEvents(t *testing.T) {
	st := &fakeStore{}
	h, ca := startSDKHub(t, st)
	l := runSDKLeaf(t, h, ca, sasKey1, nil, "send:5")
	if evs := l.events(t); count(evs, "sent") != 5 || count(evs, "done") != 1 {
		t.Fatalf("leaf:\n%s", l.Output())
	}
	recs := st.records()
	if len(recs) != 5 {
		t.Fatalf("stored %d records, want 5", len(recs))
	}
	for i, r := range recs {
		want := map[string]string{"seq": fmt.Sprint(i), "alert level": "high temp", "$.ct": "application/json", "$.ce": "utf-8"}
		for k, v := range want {
			if got, _ := r.Props.Get(k); got != v {
				t.Errorf("record %d: %s = %q, want %q (props %v)", i, k, got, v, r.Props)
			}
		}
		if r.Device != "az-1" || r.ID != fmt.Sprintf("leaf-%d", i) || string(r.Payload) != fmt.Sprintf(`{"seq":%d}`, i) {
			t.Errorf("record %d: device %q id %q payload %s", i, r.Device, r.ID, r.Payload)
		}
	}
}

func TestNodeSDKLeafWrongKeyRefused(t *testing.T) {
	st := &fakeStore{}
	h, ca := startSDKHub(t, st)
	l := runSDKLeaf(t, h, ca, sasKey2, nil, "send:1")
	evs := l.events(t)
	if count(evs, "open-failed") != 1 || count(evs, "sent") != 0 {
		t.Fatalf("a leaf with the wrong key got in:\n%s", l.Output())
	}
	if !regexp.MustCompile(`(?i)unauthori|not authori`).MatchString(l.Output()) {
		t.Errorf("refusal not reported as unauthorized:\n%s", l.Output())
	}
	if n := len(st.records()); n != 0 {
		t.Errorf("%d records stored", n)
	}
	if h.Stats().AuthFailures == 0 {
		t.Error("no auth failure counted")
	}
}

// With a token lifetime of a few seconds the SDK renews its token (it
// reconnects with the new one) while sending; every event arrives.
func TestNodeSDKLeafTokenRenewal(t *testing.T) {
	st := &fakeStore{}
	h, ca := startSDKHub(t, st)
	const n = 24
	l := runSDKLeaf(t, h, ca, sasKey1, []string{"LEAF_TOKEN_TTL=3", "LEAF_TOKEN_MARGIN=1"}, fmt.Sprintf("send:%d:250", n))
	evs := l.events(t)
	if count(evs, "sent") != n || count(evs, "done") != 1 {
		t.Fatalf("leaf:\n%s", l.Output())
	}
	t.Logf("leaf:\n%s", l.Output())
	if count(evs, "token") < 2 {
		t.Errorf("the SDK renewed its token %d times in ~6 s with a 3 s lifetime:\n%s", count(evs, "token"), l.Output())
	}
	seen := map[string]bool{}
	for _, r := range st.records() {
		seen[r.ID] = true
	}
	for i := range n {
		if !seen[fmt.Sprintf("leaf-%d", i)] {
			t.Errorf("leaf-%d lost", i)
		}
	}
	if c := h.Stats().Connects; c < 3 {
		t.Errorf("%d connects: the leaf did not reconnect with its renewed tokens", c)
	}
}

// C2D through the hub's Deliver reaches the SDK's message event with its
// system and application properties, queued while the leaf was away and
// while it is connected; the SDK's PUBACK completes each.
func TestNodeSDKLeafReceivesC2D(t *testing.T) {
	h, ca := startSDKHub(t, &fakeStore{})
	done := make(chan error, 2)
	deliver := func(mid string) {
		t.Helper()
		_, c2d, err := iothub.ParseC2DTopic(iothub.C2DTopic("az-1", iothub.C2D{MessageID: mid, CorrelationID: "corr-" + mid,
			Props: msg.Props{{Key: "cmd", Value: "reboot now"}}}))
		if err != nil {
			t.Fatal(err)
		}
		props := msg.Props{{Key: iothub.PropMessageID, Value: c2d.MessageID}, {Key: iothub.PropCorrelationID, Value: c2d.CorrelationID},
			{Key: iothub.PropTo, Value: c2d.To}}
		if err := h.Deliver("az-1", append(props, c2d.Props...), []byte(`{"c2d":"`+mid+`"}`), func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	deliver("c2d-offline") // before the leaf connects
	l := startSDKLeaf(t, h, ca, sasKey1, nil, "recv:2")
	l.WaitFor(t, regexp.MustCompile(`"ev":"message"`), 30*time.Second)
	deliver("c2d-online")
	select {
	case <-l.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("leaf did not get both messages:\n%s", l.Output())
	}
	l.Exited()
	var got []sdkEvent
	for _, e := range l.events(t) {
		if e.Ev == "message" {
			got = append(got, e)
		}
	}
	if len(got) != 2 {
		t.Fatalf("leaf:\n%s", l.Output())
	}
	for i, mid := range []string{"c2d-offline", "c2d-online"} {
		e := got[i]
		if e.MessageID != mid || e.CorrelationID != "corr-"+mid || e.Props["cmd"] != "reboot now" || e.Body != `{"c2d":"`+mid+`"}` {
			t.Errorf("message %d: %+v", i, e)
		}
	}
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("delivery: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a delivery was not completed by the leaf's PUBACK")
		}
	}
}
