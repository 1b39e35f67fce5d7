package cloudlink

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
	"github.com/outpost-iot/outpost/store"
)

// gapBody is a gap report's payload.
type gapBody struct {
	Gen      uint64 `json:"gen"`
	Dropped  uint64 `json:"dropped"`
	Expired  uint64 `json:"expired"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// seen is one upstream delivery reduced to what the gap tests check.
type seen struct {
	device string
	props  msg.Props
	body   []byte
}

// overflow opens a small drop-oldest store and appends n records one by
// one, so that the oldest are evicted. It returns the store.
func overflow(t *testing.T, n int) *store.Queue {
	t.Helper()
	q, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Config: store.Config{MaxBytes: 8 * msg.KiB, WhenFull: store.DropOldest}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	fillOverflow(t, q, 0, n)
	return q
}

func fillOverflow(t *testing.T, q *store.Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		appendRecs(t, q, &msg.Record{Device: "leaf-1", Payload: fmt.Appendf(nil, "%04d %0100d", i, 0)})
	}
}

// checkGaps checks what the upstream got from an overflowed store of n
// records: every record the store still had, and gap reports (each with
// type=gap, JSON, the gateway as device, a distinct $.mid) whose counts add
// up to exactly the records missing, whose seq ranges cover exactly the
// missing seqs, and the store left with no gap outstanding.
func checkGaps(t *testing.T, q *store.Queue, got []seen, gw string, n int, wantReports int) {
	t.Helper()
	data := map[uint64]bool{}
	var gaps []gapBody
	mids := map[string]bool{}
	for _, d := range got {
		mid, _ := d.props.Get(msg.PropMessageID)
		if typ, _ := d.props.Get(msg.PropType); typ != "gap" {
			s, _ := d.props.Get(msg.PropSeq)
			var seq uint64
			fmt.Sscan(s, &seq)
			data[seq] = true
			continue
		}
		if mids[mid] {
			continue // at least once: a resend of the same report
		}
		mids[mid] = true
		if ct, _ := d.props.Get(msg.PropContentType); ct != msg.ContentTypeJSON || d.device != gw {
			t.Errorf("gap report from %q with $.ct %q, want %s and application/json", d.device, ct, gw)
		}
		var b gapBody
		if err := json.Unmarshal(d.body, &b); err != nil {
			t.Fatalf("gap report %q: %v", d.body, err)
		}
		gaps = append(gaps, b)
	}
	if len(gaps) != wantReports {
		t.Fatalf("%d gap reports %+v, want %d", len(gaps), gaps, wantReports)
	}
	var dropped uint64
	inGap := map[uint64]bool{}
	for _, g := range gaps {
		dropped += g.Dropped
		if g.Expired != 0 {
			t.Errorf("gap %+v counts expiries; none happened", g)
		}
		for s := g.FirstSeq; s <= g.LastSeq; s++ {
			inGap[s] = true
		}
	}
	missing := 0
	for s := uint64(1); s <= uint64(n); s++ {
		if !data[s] {
			missing++
			if !inGap[s] {
				t.Errorf("seq %d missing upstream and in no gap report's range", s)
			}
		} else if inGap[s] {
			t.Errorf("seq %d arrived but lies in a gap report's range", s)
		}
	}
	if missing == 0 || dropped != uint64(missing) {
		t.Errorf("gap reports count %d dropped; %d of %d records are missing upstream", dropped, missing, n)
	}
	if st := q.Stats(); !st.Gap.Empty() || !st.GapOut.Empty() || st.Dropped != dropped {
		t.Errorf("store after the reports: gap %+v, outstanding %+v, dropped %d", st.Gap, st.GapOut, st.Dropped)
	}
}

// waitGaps waits until the store is empty and n gap reports were
// acknowledged.
func waitGaps(t *testing.T, s Link, q *store.Queue, n uint64) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if q.Stats().Depth == 0 && s.Status().Gaps >= n {
			return
		}
	}
	t.Fatalf("after 20s: store %+v, link %+v", q.Stats(), s.Status())
}

// Over generic MQTT (Mosquitto): one gap taken before the session ran (a
// report taken, then the gateway died before its PUBACK) goes up with its
// id, the drops since then as a second report.
func TestGapReportMosquitto(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := overflow(t, 150)
	g1, ok, err := q.TakeGap(context.Background())
	if err != nil || !ok || g1.Dropped == 0 {
		t.Fatalf("TakeGap = %+v, %v, %v; want a gap", g1, ok, err)
	}
	fillOverflow(t, q, 150, 50)
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-gap"}, GatewayID: "gw-gap", Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	waitGaps(t, s, q, 2)
	stop()
	time.Sleep(200 * time.Millisecond) // the subscriber may trail the PUBACKs
	got, _ := col.snapshot()
	var ds []seen
	first := ""
	for _, d := range got {
		ds = append(ds, seen{d.device, d.props, []byte(d.payload)})
		if typ, _ := d.props.Get(msg.PropType); typ == "gap" && first == "" {
			first = d.mid
		}
	}
	if first != g1.ID {
		t.Errorf("first gap report $.mid %q, want the outstanding one's %q", first, g1.ID)
	}
	checkGaps(t, q, ds, "gw-gap", 200, 2)
}

// Over the IoT Hub dialect (the stand-in hub): the report goes up under the
// gateway's identity.
func TestGapReportAzure(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey})
	q := overflow(t, 200)
	s, err := New(fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost,
		DeviceID: "gw-01", SharedAccessKey: testGWKey, TLS: TLSConfig{CAFile: pki.ca}}, GatewayID: "gw-01", Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	waitGaps(t, s, q, 1)
	stop()
	var ds []seen
	for _, d := range hub.D2C() {
		ds = append(ds, seen{d.Device, d.Props, d.Payload})
		if _, leaf := d.Props.Get(PropDevice); leaf {
			if typ, _ := d.Props.Get(msg.PropType); typ == "gap" {
				t.Errorf("gap report names a leaf: %s", d.Topic)
			}
		}
	}
	if n := hub.Count("violation", "gw-01"); n != 0 {
		t.Errorf("%d protocol violations", n)
	}
	checkGaps(t, q, ds, "gw-01", 200, 1)
}

// Under identity per-device the gateway's own connection sends the report;
// the leaf's records go on the leaf's.
func TestGapReportFleet(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey, "leaf-1": testLeaf1Key})
	q := overflow(t, 200)
	l, err := Open(fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost,
		DeviceID: "gw-01", SharedAccessKey: testGWKey, Identity: IdentityPerDevice, TLS: TLSConfig{CAFile: pki.ca}},
		GatewayID: "gw-01", DeviceKeys: map[string]string{"leaf-1": testLeaf1Key}, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, l)
	waitGaps(t, l, q, 1)
	stop()
	var ds []seen
	for _, d := range hub.D2C() {
		ds = append(ds, seen{d.Device, d.Props, d.Payload})
		if typ, _ := d.Props.Get(msg.PropType); typ != "gap" && d.Device != "leaf-1" {
			t.Errorf("leaf record on %q's connection: %s", d.Device, d.Topic)
		}
	}
	checkGaps(t, q, ds, "gw-01", 200, 1)
}
