package cloudlink

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/cloudlink/internal/hubtest"
	"github.com/outpost-iot/outpost/cloudlink/internal/tcpproxy"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

const (
	testLeaf1Key = "bGVhZi1vbmUta2V5LWZvci10aGUtc3RhbmQtaW4taHVi" // "leaf-one-key-for-the-stand-in-hub"
	testLeaf2Key = "bGVhZi10d28ta2V5LWZvci10aGUtc3RhbmQtaW4taHVi" // "leaf-two-key-for-the-stand-in-hub"
)

// TestAzurePerDevice runs identity per-device against the stand-in IoT Hub
// from a real store. Each leaf with a key connects as itself; a leaf
// without one goes under the gateway's identity. A leaf the hub refuses
// (not registered yet) holds up nobody: the others' records all arrive
// while its own wait in the store (parked beyond its buffer), and once the
// hub knows it, its connection comes up by itself and every one of its
// records arrives, in order. C2D to a leaf's own identity reaches Inbox
// for that leaf.
func TestAzurePerDevice(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey, "leaf-1": testLeaf1Key, "leaf-4": testLeaf1Key})
	q := openStore(t)

	counts := map[string]int{"gw-01": 50, "leaf-1": 200, "leaf-2": 700, "leaf-3": 50}
	var recs []*msg.Record
	for i := range 1000 {
		for _, dev := range []string{"gw-01", "leaf-1", "leaf-2", "leaf-3"} {
			if i < counts[dev] {
				recs = append(recs, &msg.Record{Device: dev, Payload: fmt.Appendf(nil, `{"dev":%q,"i":%d}`, dev, i)})
			}
		}
	}
	appendRecs(t, q, recs...)

	var mu sync.Mutex
	var inbox []string
	opt := fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + hub.Addr(), Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Identity: IdentityPerDevice, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t), DeviceKeys: map[string]string{"leaf-1": testLeaf1Key, "leaf-2": testLeaf2Key, "leaf-4": testLeaf1Key}, Inbox: func(_ context.Context, device string, props msg.Props, payload []byte) error {
		mid, _ := props.Get(msg.PropMessageID)
		mu.Lock()
		defer mu.Unlock()
		inbox = append(inbox, fmt.Sprintf("%s %s %s", device, mid, payload))
		return nil
	}})
	l, err := Open(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.(*Fleet); !ok {
		t.Fatalf("Open gave a %T for identity per-device", l)
	}
	runSession(t, l)

	// byDevice counts each leaf's distinct readings the hub has, by the
	// connection (identity) they came on and the leaf they are from.
	type key struct{ conn, leaf string }
	have := func(h *hubtest.Hub) map[key]int {
		seen := map[string]bool{}
		n := map[key]int{}
		for _, d := range h.D2C() {
			leaf := d.Device
			if l, ok := d.Props.Get(PropDevice); ok {
				leaf = l
			}
			mid, _ := d.Props.Get(msg.PropMessageID)
			if !seen[mid] {
				seen[mid] = true
				n[key{d.Device, leaf}]++
			}
		}
		return n
	}
	others := func(h *hubtest.Hub) bool {
		n := have(h)
		return n[key{"gw-01", "gw-01"}] == 50 && n[key{"leaf-1", "leaf-1"}] == 200 && n[key{"gw-01", "leaf-3"}] == 50
	}
	if !hub.Wait(20*time.Second, others) {
		t.Fatalf("with leaf-2 refused, the others did not all arrive: %v", have(hub))
	}
	st := l.Status()
	if d := st.Devices["leaf-2"]; d.Connected || d.Parked == 0 {
		t.Errorf("leaf-2 refused by the hub: status %+v, want down with records parked", d)
	}
	if !st.Connected {
		t.Errorf("the gateway's own connection is up, but the fleet reports the link down: %+v", st)
	}
	if hub.Count(hubtest.Refused, "leaf-2") == 0 {
		t.Errorf("the hub never refused leaf-2")
	}
	if n := have(hub)[key{"leaf-2", "leaf-2"}]; n != 0 {
		t.Fatalf("%d of leaf-2's records arrived although it was refused", n)
	}

	// The operator registers leaf-2: nobody restarts anything.
	hub.SetDevice("leaf-2", testLeaf2Key)
	if !hub.Wait(30*time.Second, func(h *hubtest.Hub) bool { return have(h)[key{"leaf-2", "leaf-2"}] == 700 }) {
		t.Fatalf("leaf-2 has %d of 700 records after it was registered", have(hub)[key{"leaf-2", "leaf-2"}])
	}
	// Each connection carries its leaf's records in queue order.
	last := map[string]uint64{}
	seen := map[string]bool{}
	for _, d := range hub.D2C() {
		mid, _ := d.Props.Get(msg.PropMessageID)
		if seen[mid] {
			continue
		}
		seen[mid] = true
		seq, _ := strconv.ParseUint(func() string { s, _ := d.Props.Get(msg.PropSeq); return s }(), 10, 64)
		if _, ok := d.Props.Get(PropDevice); ok && d.Device != "gw-01" {
			t.Errorf("a leaf's own connection sent outpost-device: %s", d.Topic)
		}
		if seq < last[d.Device] {
			t.Errorf("connection %s: seq %d after %d", d.Device, seq, last[d.Device])
		}
		last[d.Device] = seq
	}
	for _, kind := range []string{hubtest.Violation, hubtest.Expired} {
		if n := hub.Count(kind, ""); n != 0 {
			t.Errorf("hub saw %d %s events", n, kind)
		}
	}

	// C2D to a leaf's own identity.
	if err := hub.SendC2D("leaf-1", msg.Props{{Key: msg.PropMessageID, Value: "c-1"}}, []byte(`{"write":{"x":1}}`)); err != nil {
		t.Fatal(err)
	}
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return h.Completed("leaf-1") == 1 }) {
		t.Fatalf("leaf-1's C2D was not completed")
	}
	// leaf-4 has sent nothing, and is connected for its C2D all the same.
	if err := hub.SendC2D("leaf-4", msg.Props{{Key: msg.PropMessageID, Value: "c-4"}}, []byte(`{"send":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if !hub.Wait(10*time.Second, func(h *hubtest.Hub) bool { return h.Completed("leaf-4") == 1 }) {
		t.Fatalf("leaf-4's C2D was not completed")
	}
	mu.Lock()
	if len(inbox) != 2 || inbox[0] != `leaf-1 c-1 {"write":{"x":1}}` || inbox[1] != `leaf-4 c-4 {"send":"x"}` {
		t.Errorf("inbox = %q", inbox)
	}
	mu.Unlock()

	// Everything acknowledged has left the store.
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := q.Stats()
		if s.Depth == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store still holds %d records (%d leased)", s.Depth, s.Leased)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st = l.Status()
	if st.Forwarded != 1000 || !st.Connected || len(st.Devices) != 4 {
		t.Errorf("status %+v", st)
	}
}

// The fleet's connection gate: a burst, then the rate (on a fake clock).
func TestConnectGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := rate.NewLimiter(10, 5)
		start := time.Now()
		for i := range 25 {
			if err := g.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			// 5 at once, then one every 100 ms.
			want := time.Duration(max(i-4, 0)) * 100 * time.Millisecond
			if got := time.Since(start); got < want-time.Millisecond || got > want+time.Millisecond {
				t.Fatalf("connect %d at %v, want %v", i, got, want)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := g.Wait(ctx); err == nil {
			t.Fatal("wait with no token and a done ctx returned nil")
		}
	})
}

// TestAzurePerDeviceOutage cuts the link to the stand-in hub five times
// while three identities send: every record arrives, each connection in
// queue order, and the fleet reconnects every identity by itself.
func TestAzurePerDeviceOutage(t *testing.T) {
	pki := makePKI(t, t.TempDir())
	hub := startHub(t, pki, map[string]string{"gw-01": testGWKey, "leaf-1": testLeaf1Key, "leaf-2": testLeaf2Key})
	px := newProxy(t, hub.Addr())
	q := openStore(t)
	opt := fastRetry(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://" + px.Addr(), Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Identity: IdentityPerDevice, TLS: TLSConfig{CAFile: pki.ca}}, Logger: testLogger(t), DeviceKeys: map[string]string{"leaf-1": testLeaf1Key, "leaf-2": testLeaf2Key}})
	l, err := Open(opt, q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, l)
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		defer func() { done <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			dev := []string{"gw-01", "leaf-1", "leaf-2"}[n%3]
			if err := q.Append(context.Background(), &msg.Record{Device: dev, Priority: msg.Normal, Payload: fmt.Appendf(nil, `{"n":%d}`, n)}); err != nil {
				t.Errorf("append: %v", err)
				return
			}
			n++
		}
	}()
	for range 5 {
		time.Sleep(150 * time.Millisecond)
		px.Set(tcpproxy.Cut)
		time.Sleep(100 * time.Millisecond)
		px.Set(tcpproxy.Up)
	}
	close(stop)
	n := <-done
	unique := func(h *hubtest.Hub) map[string]bool {
		seen := map[string]bool{}
		for _, d := range h.D2C() {
			mid, _ := d.Props.Get(msg.PropMessageID)
			seen[mid] = true
		}
		return seen
	}
	if !hub.Wait(20*time.Second, func(h *hubtest.Hub) bool { return len(unique(h)) >= n }) {
		t.Fatalf("hub has %d of %d records", len(unique(hub)), n)
	}
	last, seen := map[string]uint64{}, map[string]bool{}
	for _, d := range hub.D2C() {
		mid, _ := d.Props.Get(msg.PropMessageID)
		if seen[mid] {
			continue
		}
		seen[mid] = true
		s, _ := d.Props.Get(msg.PropSeq)
		seq, _ := strconv.ParseUint(s, 10, 64)
		if seq < last[d.Device] {
			t.Errorf("connection %s: seq %d after %d", d.Device, seq, last[d.Device])
		}
		last[d.Device] = seq
	}
	st := l.Status()
	t.Logf("%d records, %d deliveries, %d outages, %d resent", n, len(hub.D2C()), st.Outages, st.Resent)
	if st.Outages < 5 {
		t.Errorf("%d outages counted over 5 cuts of 3 connections", st.Outages)
	}
	for id, d := range st.Devices {
		if d.Outages == 0 {
			t.Errorf("%s: no outage seen", id)
		}
	}
}

// countQueue counts the records the router reads and the parked ones read
// back.
type countQueue struct {
	parkingQueue
	leased, back atomic.Int64
}

func (c *countQueue) Lease(ctx context.Context, n int) ([]*msg.Record, error) {
	r, err := c.parkingQueue.Lease(ctx, n)
	c.leased.Add(int64(len(r)))
	return r, err
}

func (c *countQueue) LeaseParked(seqs ...uint64) ([]*msg.Record, error) {
	r, err := c.parkingQueue.LeaseParked(seqs...)
	c.back.Add(int64(len(r)))
	return r, err
}

// A leaf back after a long outage drains its parked records without the
// store reading them again and again, and without holding up the others:
// another leaf's new record is routed at once, while the first still has
// thousands waiting. (The test plays the leaves' sessions.)
func TestFleetUnparkCost(t *testing.T) {
	const P = 20000
	q := openStore(t)
	for i := 0; i < P; i += 1000 {
		b := make([]*msg.Record, 1000)
		for j := range b {
			b[j] = &msg.Record{Device: "leaf-1", Payload: fmt.Appendf(nil, `{"i":%d}`, i+j)}
		}
		appendRecs(t, q, b...)
	}
	cq := &countQueue{parkingQueue: q}
	f, ctx := routeOnly(t, cq)
	dq1, _ := f.queueFor("leaf-1")
	dq2, _ := f.queueFor("leaf-2")
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("all routed", func() bool { return cq.leased.Load() == P })
	if st := q.Stats(); st.Parked != P-devBuffer || st.Leased != devBuffer {
		t.Fatalf("store: %d parked, %d leased; want %d and %d", st.Parked, st.Leased, P-devBuffer, devBuffer)
	}
	var last uint64
	for got := 0; got < P; {
		recs, err := dq1.Lease(ctx, 16)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq <= last {
				t.Fatalf("seq %d after %d", r.Seq, last)
			}
			last = r.Seq
			if err := dq1.Ack(r.Seq); err != nil {
				t.Fatal(err)
			}
		}
		got += len(recs)
		if got == P/2 {
			appendRecs(t, q, &msg.Record{Device: "leaf-2", Payload: []byte(`{}`)})
			lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
			r2, err := dq2.Lease(lctx, 1)
			lcancel()
			if err != nil || len(r2) != 1 {
				t.Fatalf("leaf-2's record was not routed while leaf-1 drained: %v", err)
			}
			if p := q.Stats().Parked; p < P/4 {
				t.Fatalf("only %d of leaf-1's records were still parked", p)
			}
		}
	}
	if n := cq.leased.Load(); n != P+1 {
		t.Errorf("the router read %d records for %d: records were read again", n, P+1)
	}
	if n := cq.back.Load(); n != P-devBuffer {
		t.Errorf("%d parked records read back, want %d", n, P-devBuffer)
	}
}

// Records a session gives back go to their place in the device's order,
// whatever order they come back in.
func TestDevQueueReleaseOrder(t *testing.T) {
	f := &Fleet{}
	dq := &devQueue{f: f, avail: make(chan struct{}, 1), out: map[uint64]ent{}}
	for s := uint64(1); s <= 5; s++ {
		dq.buf = append(dq.buf, ent{&msg.Record{Seq: s}, dq.next})
		dq.next++
	}
	ctx := context.Background()
	a, _ := dq.Lease(ctx, 2) // in flight
	b, _ := dq.Lease(ctx, 2) // a straggling leaser's
	dq.Release(a[0].Seq, a[1].Seq)
	dq.Release(b[1].Seq, b[0].Seq)
	got, _ := dq.Lease(ctx, 10)
	var seqs []uint64
	for _, r := range got {
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("after releases: %v, want 1..5", seqs)
	}
}

// After a long outage the oldest of a leaf's parked records are evicted
// (drop-oldest) in one run longer than a refill: the leaf must still get
// the rest, and its new records, without a restart.
func TestFleetParkedEvicted(t *testing.T) {
	mk := func(dev string, i int, p msg.Priority) *msg.Record {
		return &msg.Record{ID: fmt.Sprintf("%s-%05d", dev, i), Device: dev, Priority: p, Payload: []byte("0123456789")}
	}
	size := int64(mk("leaf-1", 0, msg.Low).Size())
	q, err := store.Open(filepath.Join(t.TempDir(), "data"), store.Options{Config: store.Config{MaxBytes: msg.Size(3000*size + size/2), WhenFull: store.DropOldest}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() }) // after the router stops (routeOnly)
	for i := range 3000 {
		appendRecs(t, q, mk("leaf-1", i, msg.Low))
	}
	f, ctx := routeOnly(t, q)
	dq1, _ := f.queueFor("leaf-1")
	wait := func(what string, cond func() bool) {
		t.Helper()
		for d := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(d) {
				t.Fatalf("timed out waiting for %s: %+v", what, q.Stats())
			}
		}
	}
	wait("leaf-1 parked", func() bool { return q.Stats().Parked == 3000-devBuffer })
	for i := range 2500 { // leaf-2's High records evict leaf-1's oldest parked ones
		appendRecs(t, q, mk("leaf-2", i, msg.High))
	}
	wait("leaf-2 routed", func() bool { s := q.Stats(); return s.Appends == 5500 && s.Leased+s.Parked == 3000 })
	appendRecs(t, q, mk("leaf-1", 5000, msg.Low))
	var got []string
	for {
		lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
		recs, err := dq1.Lease(lctx, 64)
		lcancel()
		if err != nil {
			break
		}
		for _, r := range recs {
			got = append(got, r.ID)
			if err := dq1.Ack(r.Seq); err != nil {
				t.Fatal(err)
			}
		}
		if got[len(got)-1] == "leaf-1-05000" {
			break
		}
	}
	if len(got) == 0 || got[len(got)-1] != "leaf-1-05000" || !slices.IsSorted(got) {
		t.Fatalf("leaf-1 got %d records, last %v; want every survivor in order, ending with its new one", len(got), got[max(len(got)-1, 0):])
	}
	st := q.Stats()
	t.Logf("leaf-1 got %d records; %d evicted", len(got), st.Dropped)
	if int(st.Dropped)+len(got) != 3001 {
		t.Errorf("%d delivered + %d evicted != 3001", len(got), st.Dropped)
	}
}

// routeOnly runs a fleet of leaf-1 and leaf-2 over q with its router only:
// the test plays the leaves' sessions. The router stops, and must have
// stopped cleanly, when the test ends.
func routeOnly(t *testing.T, q queue) (*Fleet, context.Context) {
	t.Helper()
	f, err := NewFleet(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://127.0.0.1:1", Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Identity: IdentityPerDevice}, DeviceKeys: map[string]string{"leaf-1": testLeaf1Key, "leaf-2": testLeaf2Key}}, q)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	routed := make(chan error, 1)
	go func() { routed <- f.route(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-routed; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	return f, ctx
}

// With a policy key every leaf connects as itself, but a local observer or
// operator is no IoT Hub device: what it publishes goes under the
// gateway's identity.
func TestFleetIdentity(t *testing.T) {
	f, err := NewFleet(Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://127.0.0.1:1", Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, SharedAccessKeyName: "devices", Identity: IdentityPerDevice}, DeviceKeys: map[string]string{"leaf-1": testLeaf1Key}, NotDevices: []string{"dash"}}, openStore(t))
	if err != nil {
		t.Fatal(err)
	}
	bad := Options{Config: Config{Protocol: ProtocolAzure, URL: "mqtts://127.0.0.1:1", Host: testHubHost, DeviceID: "gw-01", SharedAccessKey: testGWKey, Identity: IdentityPerDevice}, DeviceKeys: map[string]string{"leaf-1": "!!"}}
	if _, err := NewFleet(bad, openStore(t)); !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "leaf-1") {
		t.Errorf("a fleet with a leaf key that is not base64: %v", err)
	}
	for dev, want := range map[string]string{"gw-01": "", "leaf-1": "leaf-1", "leaf-9": "leaf-9", "dash": ""} {
		if got := f.identity(dev); got != want {
			t.Errorf("identity(%q) = %q, want %q", dev, got, want)
		}
	}
}
