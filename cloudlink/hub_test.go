package cloudlink

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

const (
	testHubHost = "testhub.azure-devices.net"
	testGWKey   = "Z2F0ZXdheS1rZXktZm9yLXRoZS1zdGFuZC1pbi1odWI=" // "gateway-key-for-the-stand-in-hub"
)

// startHub runs the stand-in IoT Hub over TLS with the test PKI's server
// certificate and the given device registry.
func startHub(t *testing.T, pki pkiFiles, devices map[string]string) *hubtest.Hub {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hubtest.Start(hubtest.Options{Host: testHubHost, Devices: devices,
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// openStore opens a real store in a temporary directory.
func openStore(t *testing.T) *store.Queue {
	t.Helper()
	q, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func appendRecs(t *testing.T, q *store.Queue, recs ...*msg.Record) {
	t.Helper()
	for _, r := range recs {
		if r.Priority == 0 {
			r.Priority = msg.Normal
		}
	}
	if err := q.Append(context.Background(), recs...); err != nil {
		t.Fatal(err)
	}
}

// TestAzureConformance runs a session against the stand-in IoT Hub, from a
// real store: D2C arrives under the gateway's identity with $.mid, $.ct,
// $.ce and percent-encoded properties (the hub drops the connection on any
// protocol violation, and none may happen); an oversized record goes to dead
// letters with a reason; C2D reaches Inbox with its property bag before the
// hub sees the PUBACK; the SAS token is renewed by reconnecting before the
// hub would sever the connection, and that is not counted as an outage.
func TestAzureConformance(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey})
	q := openStore(t)

	var mu sync.Mutex
	var inbox []string
	opt := fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t), tokenTTL: 4 * time.Second, RenewBefore: 2 * time.Second, Inbox: func(_ context.Context, device string, props msg.Props, payload []byte) error {
		k, _ := props.Get("k")
		mid, _ := props.Get(msg.PropMessageID)
		mu.Lock()
		defer mu.Unlock()
		// The hub completes a C2D message on its PUBACK: not yet.
		inbox = append(inbox, fmt.Sprintf("%s %s k=%q %s completed=%d", device, mid, k, payload, hub.Completed("gw-01")))
		return nil
	}})
	opt.Keepalive = 2 * time.Second
	s, err := New(opt, q)
	if err != nil {
		t.Fatal(err)
	}

	appendRecs(t, q,
		&msg.Record{Device: "gw-01", Props: msg.Props{{Key: msg.PropContentType, Value: msg.ContentTypeJSON}, {Key: "alert level", Value: "high temp"}, {Key: "unit", Value: "deg+C"}}, Payload: []byte(`{"t":1}`)},
		&msg.Record{Device: "meter-1", Props: msg.Props{{Key: msg.PropContentType, Value: msg.ContentTypeJSON}}, Payload: []byte(`{"v":229.8}`)},
		&msg.Record{Device: "meter-1", Payload: make([]byte, 256*1024+1)}, // over IoT Hub's cap
		&msg.Record{Device: "meter-1", Payload: []byte("after the big one")},
	)
	runSession(t, s)

	// Token renewal: keep records flowing across two renewals.
	var sent int
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(100 * time.Millisecond) {
		appendRecs(t, q, &msg.Record{Device: "leaf-" + fmt.Sprint(sent%3), Payload: []byte(fmt.Sprintf(`{"i":%d}`, sent))})
		sent++
	}
	want := 3 + sent
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return len(uniqueMids(h.D2C())) >= want }) {
		t.Fatalf("hub has %d of %d messages", len(uniqueMids(hub.D2C())), want)
	}

	d2c := hub.D2C()
	for _, d := range d2c {
		if d.Device != "gw-01" || d.QoS != 1 {
			t.Errorf("D2C on %q QoS %d, want the gateway's identity at QoS 1", d.Topic, d.QoS)
		}
	}
	// Live records may overtake the backlog: look deliveries up by seq.
	bySeq := map[string]hubtest.D2C{}
	for _, d := range d2c {
		if seq, _ := d.Props.Get(msg.PropSeq); bySeq[seq].Topic == "" {
			bySeq[seq] = d
		}
	}
	first := bySeq["1"].Topic
	for _, part := range []string{"devices/gw-01/messages/events/%24.mid=", "&%24.ct=application%2Fjson&%24.ce=utf-8&",
		"alert%20level=high%20temp", "unit=deg%2BC", "outpost-seq=1"} {
		if !strings.Contains(first, part) {
			t.Errorf("first record's topic %q lacks %q", first, part)
		}
	}
	if v, _ := bySeq["2"].Props.Get(PropDevice); v != "meter-1" {
		t.Errorf("leaf message props %v, want %s=meter-1", bySeq["2"].Props, PropDevice)
	}
	if _, sent := bySeq["3"]; sent || string(bySeq["4"].Payload) != "after the big one" {
		t.Errorf("oversized seq 3 sent: %v; seq 4 is %q", sent, bySeq["4"].Payload)
	}
	dead, err := q.Dead(0, 10)
	if err != nil || len(dead) != 1 || dead[0].Record.Seq != 3 || !strings.Contains(dead[0].Reason, "over the upstream cap of 262144") {
		t.Errorf("dead letters %+v (%v), want seq 3 with the size reason", dead, err)
	}

	// C2D with a property bag, for a leaf behind the gateway.
	if err := hub.SendC2D("gw-01", msg.Props{{Key: msg.PropMessageID, Value: "c2d-1"}, {Key: PropDevice, Value: "meter-1"}, {Key: "k", Value: "v w&x"}}, []byte(`{"write":{"sp":1}}`)); err != nil {
		t.Fatal(err)
	}
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return h.Completed("gw-01") == 1 }) {
		t.Fatalf("C2D not completed; inbox %v", inbox)
	}
	mu.Lock()
	if len(inbox) != 1 || inbox[0] != `meter-1 c2d-1 k="v w&x" {"write":{"sp":1}} completed=0` {
		t.Errorf("inbox %q", inbox)
	}
	mu.Unlock()

	st := s.Status()
	if n := hub.Count(hubtest.Connect, "gw-01"); n < 3 {
		t.Errorf("%d connections in 5 s with a 4 s token renewed 2 s early, want ≥ 3", n)
	}
	for _, kind := range []string{hubtest.Expired, hubtest.Violation, hubtest.Refused} {
		if n := hub.Count(kind, ""); n != 0 {
			t.Errorf("%d %s events: %v", n, kind, hub.Events())
		}
	}
	if st.Outages != 0 || st.Rejected != 1 || st.C2D != 1 {
		t.Errorf("status %+v, want no outage (renewals are planned), 1 rejected, 1 C2D", st)
	}
}

func uniqueMids(d []hubtest.D2C) map[string]bool {
	m := map[string]bool{}
	for _, x := range d {
		mid, _ := x.Props.Get(msg.PropMessageID)
		m[mid] = true
	}
	return m
}

// TestAzurePolicyKey connects with a shared access policy key (skn) instead
// of the device's own key, and is refused with the policy key under a wrong
// policy name.
func TestAzurePolicyKey(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	const policyKey = "cG9saWN5LWtleS13aXRoLWRldmljZS1jb25uZWN0" // "policy-key-with-device-connect"
	cert, err := tls.LoadX509KeyPair(pki.serverCert, pki.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := hubtest.Start(hubtest.Options{Host: testHubHost, Devices: map[string]string{"gw-01": testGWKey},
		Policies: map[string]string{"device-connect": policyKey}, TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	for _, tc := range []struct {
		name, keyName string
		ok            bool
	}{{"policy", "device-connect", true}, {"wrong policy name", "registryRead", false}} {
		t.Run(tc.name, func(t *testing.T) {
			q := newMemQueue()
			fill(q, 5, "gw-01")
			s, err := New(fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: policyKey, SharedAccessKeyName: tc.keyName, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t)}), q)
			if err != nil {
				t.Fatal(err)
			}
			stop := runSession(t, s)
			if tc.ok {
				waitDrained(t, q, 10*time.Second)
				return
			}
			st := waitStatus(t, s, func(st Status) bool { return st.LastError != "" })
			stop()
			if st.Forwarded != 0 || !strings.Contains(st.LastError, "not Authorized") && !strings.Contains(st.LastError, "bad user name or password") {
				t.Errorf("status %+v, want refused", st)
			}
			if hub.Count(hubtest.Refused, "gw-01") == 0 {
				t.Errorf("hub refused nothing: %v", hub.Events())
			}
		})
	}
}
