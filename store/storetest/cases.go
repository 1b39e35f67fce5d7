package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

func (s *suite) fifoPerPriority(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	appendAll(t, q, rec("d", msg.Low, "l1"), rec("d", msg.Normal, "n1"), rec("d", msg.High, "h1"))
	appendAll(t, q, rec("d", msg.Normal, "n2"), rec("d", msg.Low, "l2"), rec("d", msg.High, "h2"))
	wantPayloads(t, leaseNow(t, q, 3), "h1", "h2", "n1")
	appendAll(t, q, rec("d", msg.High, "h3"))
	wantPayloads(t, leaseNow(t, q, 10), "h3", "n2", "l1", "l2")
	if got := leaseNow(t, q, 10); len(got) != 0 {
		t.Fatalf("everything is leased, yet leased %v", payloads(got))
	}
}

func (s *suite) persistsEveryField(t *testing.T) {
	dir := t.TempDir()
	c := newClock()
	q := s.mustOpen(t, dir, store.Options{Now: c.now})
	in := []*msg.Record{
		{ID: "mid-1", Device: "meter-1", Priority: msg.Normal,
			Props:   msg.Props{{Key: "$.ct", Value: "application/json"}, {Key: "k", Value: "v w&x"}},
			Payload: []byte(`{"v":1}`)},
		{Device: "leaf-1", Priority: msg.Low, Payload: []byte{0, 1, 2, 255}},
		{Device: "empty", Priority: msg.High},
	}
	appendAll(t, q, in...)
	if in[0].ID != "mid-1" || in[1].ID == "" || in[1].ID == in[2].ID {
		t.Fatalf("ids: %q %q %q (producer id kept, others unique)", in[0].ID, in[1].ID, in[2].ID)
	}
	if in[0].Seq == 0 || in[1].Seq != in[0].Seq+1 || in[2].Seq != in[1].Seq+1 {
		t.Fatalf("seqs %d %d %d not consecutive", in[0].Seq, in[1].Seq, in[2].Seq)
	}
	for _, r := range in {
		if !r.Enqueued.Equal(c.now()) {
			t.Fatalf("enqueued %v, want %v", r.Enqueued, c.now())
		}
	}
	q.Close()
	q = s.mustOpen(t, dir, store.Options{Now: c.now})
	got := leaseNow(t, q, 10)
	want := []*msg.Record{in[2], in[0], in[1]} // High, Normal, Low
	if len(got) != len(want) {
		t.Fatalf("leased %d records after reopen, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.ID != w.ID || g.Device != w.Device || g.Priority != w.Priority ||
			!g.Enqueued.Equal(w.Enqueued) || !slices.Equal(g.Props, w.Props) || string(g.Payload) != string(w.Payload) {
			t.Errorf("record %d after reopen:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func (s *suite) leaseAckRelease(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	for i := range 5 {
		appendAll(t, q, rec("d", msg.Normal, fmt.Sprint(i)))
	}
	first := leaseNow(t, q, 3)
	wantPayloads(t, first, "0", "1", "2")
	if st := q.Stats(); st.Leased != 3 || st.Depth != 5 {
		t.Fatalf("stats after lease: leased %d depth %d, want 3 5", st.Leased, st.Depth)
	}
	if err := q.Ack(first[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(first[2].Seq, first[1].Seq); err != nil {
		t.Fatal(err)
	}
	// Released records keep their place: before 3 and 4.
	wantPayloads(t, leaseNow(t, q, 10), "1", "2", "3", "4")
	if err := q.Ack(first[0].Seq); !errors.Is(err, store.ErrNotLeased) {
		t.Fatalf("second ack: %v, want ErrNotLeased", err)
	}
	if err := q.Release(999); !errors.Is(err, store.ErrNotLeased) {
		t.Fatalf("release of unknown seq: %v, want ErrNotLeased", err)
	}
	waitStats(t, q, "depth 4, acks 1", func(st store.Stats) bool { return st.Depth == 4 && st.Acks == 1 })
}

func (s *suite) leaseBlocks(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	got := make(chan []*msg.Record, 1)
	go func() {
		recs, err := q.Lease(context.Background(), 10)
		if err != nil {
			t.Errorf("lease: %v", err)
		}
		got <- recs
	}()
	appendAll(t, q, rec("d", msg.Normal, "late"))
	select {
	case recs := <-got:
		wantPayloads(t, recs, "late")
	case <-time.After(5 * time.Second):
		t.Fatal("Lease did not wake up for an append")
	}
	// A released record wakes a blocked Lease too.
	go func() {
		recs, err := q.Lease(context.Background(), 10)
		if err != nil {
			t.Errorf("lease: %v", err)
		}
		got <- recs
	}()
	time.Sleep(20 * time.Millisecond) // let it block (either order is correct)
	q.Release(1)
	select {
	case recs := <-got:
		wantPayloads(t, recs, "late")
	case <-time.After(5 * time.Second):
		t.Fatal("Lease did not wake up for a release")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.Lease(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lease on empty queue: %v, want deadline exceeded", err)
	}
}

func (s *suite) reject(t *testing.T) {
	dir := t.TempDir()
	q := s.mustOpen(t, dir, store.Options{})
	appendAll(t, q, rec("d", msg.Normal, "bad"), rec("d", msg.Normal, "good"))
	recs := leaseNow(t, q, 1)
	if err := q.Reject(recs[0].Seq, "413 too large"); err != nil {
		t.Fatal(err)
	}
	if err := q.Reject(recs[0].Seq, "again"); !errors.Is(err, store.ErrNotLeased) {
		t.Fatalf("second reject: %v, want ErrNotLeased", err)
	}
	wantPayloads(t, leaseNow(t, q, 10), "good")
	q.Close()
	q = s.mustOpen(t, dir, store.Options{})
	dead, err := q.Dead(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || string(dead[0].Record.Payload) != "bad" || dead[0].Reason != "413 too large" ||
		dead[0].Record.ID != recs[0].ID || dead[0].At.IsZero() {
		t.Fatalf("dead letters %+v", dead)
	}
	st := q.Stats()
	if st.Dead != 1 || st.DeadDepth != 1 || st.Depth != 1 {
		t.Fatalf("stats dead %d depth %d outbox %d, want 1 1 1", st.Dead, st.DeadDepth, st.Depth)
	}
	wantPayloads(t, leaseNow(t, q, 10), "good") // never the rejected one
}

func (s *suite) ttl(t *testing.T) {
	c := newClock()
	q := s.mustOpen(t, t.TempDir(), store.Options{Config: store.Config{TTL: time.Hour}, Now: c.now})
	appendAll(t, q, rec("d", msg.Normal, "old1"), rec("d", msg.Low, "old2"))
	c.advance(30 * time.Minute)
	appendAll(t, q, rec("d", msg.Normal, "young"))
	c.advance(31 * time.Minute)
	wantPayloads(t, leaseNow(t, q, 10), "young")
	st := waitStats(t, q, "2 expired", func(st store.Stats) bool { return st.Expired == 2 && st.Depth == 1 })
	if st.Gap.Expired != 2 || st.Gap.Dropped != 0 || st.Gap.FirstSeq != 1 || st.Gap.LastSeq != 2 {
		t.Fatalf("gap %+v, want 2 expired, seqs 1-2", st.Gap)
	}
}

func (s *suite) fullReject(t *testing.T) {
	dir := t.TempDir()
	opt := store.Options{Config: store.Config{MaxBytes: 100, WhenFull: store.Reject}}
	q := s.mustOpen(t, dir, opt)
	appendAll(t, q, sized(msg.Normal, string(make([]byte, 58)))) // 60 bytes
	appendAll(t, q, sized(msg.Normal, string(make([]byte, 38)))) // 100
	err := q.Append(context.Background(), sized(msg.High, "x"))
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("append over max_bytes: %v, want ErrFull", err)
	}
	st := q.Stats()
	if st.Depth != 2 || st.Bytes != 100 || st.Dropped != 0 {
		t.Fatalf("after rejected append: depth %d bytes %d dropped %d", st.Depth, st.Bytes, st.Dropped)
	}
	recs := leaseNow(t, q, 1)
	q.Ack(recs[0].Seq)
	waitStats(t, q, "bytes 40", func(st store.Stats) bool { return st.Bytes == 40 })
	appendAll(t, q, sized(msg.High, "x")) // room again
}

func (s *suite) fullDropOldest(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{Config: store.Config{MaxBytes: 50}})
	// 10-byte records: device "d" + 9-byte payload.
	appendAll(t, q, sized(msg.High, "h0000001"), sized(msg.Low, "l0000001"), sized(msg.Normal, "n0000001"))
	appendAll(t, q, sized(msg.Low, "l0000002"), sized(msg.Normal, "n0000002"))  // 50: full
	appendAll(t, q, sized(msg.High, "h0000002"))                                // evicts l1
	appendAll(t, q, sized(msg.Normal, "n0000003"), sized(msg.High, "h0000003")) // evicts l2, n1
	st := q.Stats()
	if st.Dropped != 3 || st.Depth != 5 || st.Bytes != 50 {
		t.Fatalf("dropped %d depth %d bytes %d, want 3 5 50", st.Dropped, st.Depth, st.Bytes)
	}
	if st.Gap.Dropped != 3 || st.Gap.FirstSeq != 2 || st.Gap.LastSeq != 4 {
		t.Fatalf("gap %+v, want 3 dropped, seqs 2-4", st.Gap)
	}
	wantPayloads(t, leaseNow(t, q, 10), "h0000001", "h0000002", "h0000003", "n0000002", "n0000003")
	// A record larger than the whole budget is refused even under drop-oldest.
	if err := q.Append(context.Background(), sized(msg.Low, string(make([]byte, 60)))); !errors.Is(err, store.ErrFull) {
		t.Fatalf("append larger than max_bytes: %v, want ErrFull", err)
	}
}

func (s *suite) dropOldestSparesLeased(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{Config: store.Config{MaxBytes: 30}})
	appendAll(t, q, sized(msg.Low, "a0000001"), sized(msg.Low, "a0000002"), sized(msg.Low, "a0000003"))
	leased := leaseNow(t, q, 2)
	appendAll(t, q, sized(msg.Low, "b0000001")) // evicts a3, the only one not leased
	if err := q.Append(context.Background(), sized(msg.Low, "b0000002")); err != nil {
		t.Fatalf("append that can evict its own batch's predecessor: %v", err) // evicts b1
	}
	err := q.Append(context.Background(), sized(msg.Low, "c0000001"), sized(msg.Low, "c0000002"))
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("append needing leased records evicted: %v, want ErrFull", err)
	}
	if err := q.Ack(seqs(leased)...); err != nil {
		t.Fatal(err)
	}
	wantPayloads(t, leaseNow(t, q, 10), "b0000002")
	if st := q.Stats(); st.Dropped != 2 {
		t.Fatalf("dropped %d, want 2", st.Dropped)
	}
}

func (s *suite) gap(t *testing.T) {
	dir := t.TempDir()
	q := s.mustOpen(t, dir, store.Options{Config: store.Config{MaxBytes: 20}})
	ctx := context.Background()
	if _, ok, err := q.TakeGap(ctx); ok || err != nil {
		t.Fatalf("gap on a fresh store: %v %v", ok, err)
	}
	for i := range 4 {
		appendAll(t, q, sized(msg.Normal, fmt.Sprintf("p%07d", i)))
	}
	g, ok, err := q.TakeGap(ctx)
	if err != nil || !ok || g.Dropped != 2 || g.FirstSeq != 1 || g.LastSeq != 2 || g.ID == "" {
		t.Fatalf("gap %+v %v %v, want 2 dropped, seqs 1-2", g, ok, err)
	}
	appendAll(t, q, sized(msg.Normal, "p0000009")) // one more drop while g is out
	q.Close()
	q = s.mustOpen(t, dir, store.Options{Config: store.Config{MaxBytes: 20}})
	again, ok, err := q.TakeGap(ctx)
	if err != nil || !ok || again != g {
		t.Fatalf("after restart TakeGap = %+v, want the same gap %+v", again, g)
	}
	r := g.Record("gw-1")
	if v, _ := r.Props.Get(msg.PropType); v != "gap" || r.ID != g.ID || r.Device != "gw-1" || len(r.Payload) == 0 {
		t.Fatalf("gap record %+v", r)
	}
	if err := q.AckGap(ctx, g.Gen); err != nil {
		t.Fatal(err)
	}
	next, ok, err := q.TakeGap(ctx)
	if err != nil || !ok || next.Gen == g.Gen || next.ID == g.ID || next.Dropped != 1 || next.FirstSeq != 3 {
		t.Fatalf("next gap %+v, want 1 dropped from seq 3 with a new id", next)
	}
	q.AckGap(ctx, next.Gen)
	if g, ok, _ := q.TakeGap(ctx); ok {
		t.Fatalf("gap after everything was acked: %+v", g)
	}
}

func (s *suite) reopen(t *testing.T) {
	dir := t.TempDir()
	q := s.mustOpen(t, dir, store.Options{})
	for i := range 10 {
		appendAll(t, q, rec("d", msg.Priority(i%3), fmt.Sprint(i)))
	}
	recs := leaseNow(t, q, 4) // 0 3 6 9 (High)
	q.Ack(recs[0].Seq, recs[1].Seq)
	before := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	q = s.mustOpen(t, dir, store.Options{})
	after := q.Stats()
	if after.Depth != 8 || after.Appends != 10 || after.Acks != 2 || after.NextSeq != before.NextSeq {
		t.Fatalf("after reopen: %+v (before close %+v)", after, before)
	}
	// Leases do not survive a restart: 6 and 9 come back first.
	wantPayloads(t, leaseNow(t, q, 10), "6", "9", "1", "4", "7", "2", "5", "8")
	appendAll(t, q, rec("d", msg.High, "new"))
	if recs := leaseNow(t, q, 1); len(recs) != 1 || recs[0].Seq != before.NextSeq {
		t.Fatalf("first append after reopen got %v, want seq %d", seqs(recs), before.NextSeq)
	}
}

func (s *suite) submitOrder(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	const producers, each = 8, 50
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			var mu sync.Mutex
			var order []int
			var done sync.WaitGroup
			for i := range each {
				done.Add(1)
				q.Submit([]*msg.Record{rec(fmt.Sprint(p), msg.Normal, fmt.Sprint(i))}, func(err error) {
					if err != nil {
						t.Errorf("submit: %v", err)
					}
					mu.Lock()
					order = append(order, i)
					mu.Unlock()
					done.Done()
				})
			}
			done.Wait()
			if !slices.IsSorted(order) {
				t.Errorf("producer %d: done calls out of order: %v", p, order)
			}
		})
	}
	wg.Wait()
	got := leaseNow(t, q, producers*each)
	last := map[string]int{}
	for _, r := range got {
		var i int
		fmt.Sscan(string(r.Payload), &i)
		if prev, ok := last[r.Device]; ok && i != prev+1 {
			t.Fatalf("producer %s: %d after %d", r.Device, i, prev)
		}
		last[r.Device] = i
	}
	if len(got) != producers*each {
		t.Fatalf("leased %d, want %d", len(got), producers*each)
	}
}

func (s *suite) closed(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	appendAll(t, q, rec("d", msg.Normal, "x"))
	recs := leaseNow(t, q, 1)
	blocked := make(chan error, 1)
	go func() {
		_, err := q.Lease(context.Background(), 1)
		blocked <- err
	}()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("blocked Lease after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Lease did not return on Close")
	}
	if err := q.Append(context.Background(), rec("d", msg.Normal, "y")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := q.Ack(recs[0].Seq); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("ack after close: %v", err)
	}
	var called int
	q.Submit([]*msg.Record{rec("d", msg.Normal, "z")}, func(err error) {
		called++
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("submit after close: %v", err)
		}
	})
	if called != 1 {
		t.Fatalf("done called %d times", called)
	}
}

func (s *suite) leaseFrom(t *testing.T) {
	q := s.mustOpen(t, t.TempDir(), store.Options{})
	for i := 1; i <= 5; i++ {
		appendAll(t, q, rec("d", msg.Normal, fmt.Sprint("old", i)))
	}
	mark := q.NextSeq()
	appendAll(t, q, rec("d", msg.Normal, "new1"), rec("d", msg.Low, "new2"), rec("d", msg.High, "new3"))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	live, err := q.LeaseFrom(ctx, mark, 2)
	if err != nil {
		t.Fatal(err)
	}
	wantPayloads(t, live, "new3", "new1") // High first, then Normal; only seqs >= mark
	wantPayloads(t, leaseNow(t, q, 3), "old1", "old2", "old3")
	if err := q.Release(live[1].Seq); err != nil { // new1 back
		t.Fatal(err)
	}
	// The backlog lease takes the released live record in seq order.
	wantPayloads(t, leaseNow(t, q, 10), "old4", "old5", "new1", "new2")
	if err := q.Release(live[1].Seq); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	again, err := q.LeaseFrom(ctx2, mark, 10)
	if err != nil {
		t.Fatal(err)
	}
	wantPayloads(t, again, "new1")
	ctx3, cancel3 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel3()
	if recs, err := q.LeaseFrom(ctx3, mark, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("LeaseFrom with everything leased: %v %v", payloads(recs), err)
	}
	// Live records appended later wake LeaseFrom.
	appendAll(t, q, rec("d", msg.Normal, "new4"))
	wantPayloads(t, leaseFromNow(t, q, mark, 10), "new4")
}

func leaseFromNow(t *testing.T, q Queue, from uint64, n int) []*msg.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	recs, err := q.LeaseFrom(ctx, from, n)
	if err != nil && err != context.DeadlineExceeded {
		t.Fatalf("lease from: %v", err)
	}
	return recs
}
