package cloudlink

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/tcpproxy"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// TestLiveFirst queues a large backlog, then produces fresh messages at
// 50/s: fresh ones must arrive within 1 s (p99) while the backlog drains
// behind them.
func TestLiveFirst(t *testing.T) {
	backlog := 200_000
	if testing.Short() {
		backlog = 50_000
	}
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	// Fresh latency is measured on a subscription of its own, so that it
	// is not the collector's queue behind thousands of backlog messages.
	fresh := collectFilter(t, "tcp://"+m.Addr, nil, "", "", "devices/live-1/messages/events/#")
	q := newMemQueue()
	want, payloads := fill(q, backlog, "old-a", "old-b", "old-c", "old-d")
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-live"}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	// Records appended before the link is up are backlog, not fresh.
	if st := waitStatus(t, s, func(st Status) bool { return st.Drain.Active }); !st.Drain.Active {
		t.Fatalf("no drain started: %+v", st)
	}
	sent := map[uint64]time.Time{}
	tick := time.NewTicker(20 * time.Millisecond)
	for range 200 {
		<-tick.C
		seq := q.Append("live-1", []byte(`{"fresh":true}`))
		sent[seq] = time.Now()
		want["live-1"] = append(want["live-1"], seq)
	}
	tick.Stop()
	fresh.waitUnique(len(sent), 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	var lat []time.Duration
	for {
		got, _ := fresh.snapshot()
		lat = lat[:0]
		seen := map[uint64]bool{}
		for _, d := range got {
			if at, ok := sent[d.seq]; ok && !seen[d.seq] {
				seen[d.seq] = true
				lat = append(lat, d.at.Sub(at))
			}
		}
		if len(lat) == len(sent) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := s.Status()
	stop()
	if len(lat) != len(sent) {
		got, _ := fresh.snapshot()
		seen := map[uint64]bool{}
		for _, d := range got {
			seen[d.seq] = true
		}
		q.mu.Lock()
		for seq := range sent {
			if !seen[seq] {
				_, queued := q.recs[seq]
				t.Logf("fresh seq %d missing: still queued %v, leased %v", seq, queued, q.leased[seq])
			}
		}
		q.mu.Unlock()
		t.Fatalf("only %d of %d fresh messages arrived; status %+v", len(lat), len(sent), st)
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("fresh latency p50 %v p99 %v max %v; backlog sent %d of %d, drain %+v", p50, p99, lat[len(lat)-1], st.Forwarded-uint64(len(sent)), backlog, st.Drain)
	if p99 > time.Second {
		t.Errorf("fresh p99 latency %v > 1s", p99)
	}
	// The backlog is still draining (not all of it is in), but what did
	// arrive is in order per device: fresh and old devices are disjoint.
	col.check(want, payloads, true)
	if !st.Drain.Active || st.Drain.Remaining == 0 || st.Drain.Remaining >= backlog {
		t.Errorf("the backlog should be draining while fresh data flows: %+v", st.Drain)
	}
}

// TestReplayRate checks that the backlog is paced by ReplayRate, arrives
// complete and in order per device, and that drain progress is reported.
func TestReplayRate(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := newMemQueue()
	want, payloads := fill(q, 1000, "a", "b")
	s, err := New(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-rate", ReplayRate: 1000, MaxInflight: 16}, Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := runSession(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := q.waitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	col.waitUnique(1000, 10*time.Second)
	col.verify(want, payloads, true) // one stream only: order holds
	// A token bucket of 1000/s with a burst of 12 cannot send 1000 records
	// in less than ~0.99 s (this is a lower bound, not a speed measurement).
	if took < 900*time.Millisecond {
		t.Errorf("1000 backlog records at ReplayRate 1000/s went out in %v", took)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Status().Drain.Active && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Status(); st.Drain.Active || st.Drain.Remaining != 0 {
		t.Errorf("drain not finished in status: %+v", st.Drain)
	}
	stop()
}

// TestLiveFirstOrder produces live records fast while a backlog ends, so
// that both the backlog's Lease and LeaseFrom meet live records: every
// device's records must still arrive in sequence order (old and live devices
// are disjoint, so live-first overtaking is not at play).
func TestLiveFirstOrder(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	q := newMemQueue()
	want, payloads := fill(q, 5000, "old-a", "old-b")
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + m.Addr, ClientID: "gw-order", MaxInflight: 8}, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	if st := waitStatus(t, s, func(st Status) bool { return st.Drain.Active }); !st.Drain.Active {
		t.Fatalf("no drain started: %+v", st)
	}
	prod := produce(q, 200*time.Microsecond, "live-1", "live-2")
	waitStatus(t, s, func(st Status) bool { return !st.Drain.Active })
	time.Sleep(200 * time.Millisecond) // live data after the backlog, too
	w2, p2, n := prod.finish()
	waitDrained(t, q, 20*time.Second)
	maps.Copy(want, w2)
	maps.Copy(payloads, p2)
	col.waitUnique(5000+n, 10*time.Second)
	if dups := col.verify(want, payloads, true); dups != 0 {
		t.Errorf("%d duplicates without an outage", dups)
	}
	if st := s.Status(); st.Drain.Active || st.Forwarded != uint64(5000+n) {
		t.Errorf("status %+v, want %d forwarded and the drain over", st, 5000+n)
	}
}

// TestLiveFirstBurstOrder appends bursts (one wake-up for many records) just
// after each connect, when the backlog's Lease and the live LeaseFrom may
// both be waiting: one device's records must still leave in order.
func TestLiveFirstBurstOrder(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	px := newProxy(t, m.Addr)
	q := newMemQueue()
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + px.Addr(), ClientID: "gw-burst", MaxInflight: 2}, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	want, payloads := map[string][]uint64{}, map[uint64]string{}
	for round := range 5 {
		if round > 0 {
			px.Set(tcpproxy.Cut)
			waitStatus(t, s, func(st Status) bool { return !st.Connected })
			px.Set(tcpproxy.Up)
		}
		waitConnected(t, s)
		seqs, ps := q.AppendBurst("d1", 40)
		want["d1"] = append(want["d1"], seqs...)
		maps.Copy(payloads, ps)
		waitDrained(t, q, 10*time.Second)
	}
	col.waitUnique(200, 10*time.Second)
	if dups := col.verify(want, payloads, true); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
}
