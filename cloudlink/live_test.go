package cloudlink

import (
	"context"
	"slices"
	"testing"
	"time"

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
	q := newMemQueue()
	for i := range backlog {
		q.Append("old-"+string(rune('a'+i%4)), []byte(`{"v":1}`))
	}
	s, err := New(Options{URL: "mqtt://" + m.Addr, ClientID: "gw-live", Logger: testLogger(t)}, q)
	if err != nil {
		t.Fatal(err)
	}
	stop := runSession(t, s)
	sent := map[uint64]time.Time{}
	tick := time.NewTicker(20 * time.Millisecond)
	for range 200 {
		<-tick.C
		sent[q.Append("live-1", []byte(`{"fresh":true}`))] = time.Now()
	}
	tick.Stop()
	col.waitUnique(len(sent), 10*time.Second) // not enough on its own: fresh ones are checked below
	deadline := time.Now().Add(5 * time.Second)
	var lat []time.Duration
	for {
		got, _ := col.snapshot()
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
		t.Fatalf("only %d of %d fresh messages arrived", len(lat), len(sent))
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("fresh latency p50 %v p99 %v max %v; backlog sent %d of %d, drain %+v", p50, p99, lat[len(lat)-1], st.Forwarded-uint64(len(sent)), backlog, st.Drain)
	if p99 > time.Second {
		t.Errorf("fresh p99 latency %v > 1s", p99)
	}
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
	s, err := New(Options{URL: "mqtt://" + m.Addr, ClientID: "gw-rate", ReplayRate: 1000, MaxInflight: 16, Logger: testLogger(t)}, q)
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
