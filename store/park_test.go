package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

func openPark(t *testing.T, dir string, opt store.Options) *store.Queue {
	t.Helper()
	q, err := store.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func appendDevs(t *testing.T, q *store.Queue, n int, devs ...string) {
	t.Helper()
	for i := range n {
		dev := devs[i%len(devs)]
		if err := q.Append(context.Background(), &msg.Record{ID: fmt.Sprint(dev, "-", i), Device: dev, Priority: msg.Normal, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
}

func leaseAvail(t *testing.T, q *store.Queue, n int) []*msg.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	recs, err := q.Lease(ctx, n)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	return recs
}

func ids(recs []*msg.Record) []string {
	var s []string
	for _, r := range recs {
		s = append(s, r.ID)
	}
	return s
}

// Parked records are out of the lease order, come back by seq in the order
// asked, and leave like any other once acked; Release puts them back in
// the lease order.
func TestPark(t *testing.T) {
	q := openPark(t, t.TempDir(), store.Options{})
	appendDevs(t, q, 8, "a", "b") // a-0 b-1 a-2 b-3 ...
	recs := leaseAvail(t, q, 8)
	var parked, others []uint64
	for _, r := range recs {
		if r.Device == "a" {
			parked = append(parked, r.Seq)
		} else {
			others = append(others, r.Seq)
		}
	}
	if err := q.Park(parked...); err != nil {
		t.Fatal(err)
	}
	if err := q.Park(parked[0]); !errors.Is(err, store.ErrNotLeased) {
		t.Fatalf("parking a parked record: %v, want ErrNotLeased", err)
	}
	if err := q.Ack(others...); err != nil {
		t.Fatal(err)
	}
	appendDevs(t, q, 1, "c")
	if got := ids(leaseAvail(t, q, 10)); !slices.Equal(got, []string{"c-0"}) {
		t.Fatalf("lease with a parked: %v, want only the new record", got)
	}
	if st := q.Stats(); st.Parked != 4 || st.Depth != 5 {
		t.Fatalf("stats %+v, want 4 parked of 5", st)
	}
	got, err := q.LeaseParked(parked[1], parked[0], 999)
	if err != nil || !slices.Equal(ids(got), []string{"a-2", "a-0"}) {
		t.Fatalf("LeaseParked = %v, %v", ids(got), err)
	}
	if again, _ := q.LeaseParked(parked[0]); len(again) != 0 {
		t.Fatalf("a record leased back twice: %v", ids(again))
	}
	if err := q.Release(parked[2:]...); err != nil { // parked → queued again
		t.Fatal(err)
	}
	if got := ids(leaseAvail(t, q, 10)); !slices.Equal(got, []string{"a-4", "a-6"}) {
		t.Fatalf("released parked records lease as %v", got)
	}
	if st := q.Stats(); st.Parked != 0 {
		t.Fatalf("%d parked left", st.Parked)
	}
}

// Parked records are ordinary queued records for the budget and the TTL:
// drop-oldest evicts them, the TTL drops them, and a restart queues them
// again (nothing parked is lost by stopping).
func TestParkedEvictedExpiredAndKept(t *testing.T) {
	t.Run("evicted", func(t *testing.T) {
		q := openPark(t, t.TempDir(), store.Options{Config: store.Config{MaxBytes: 400}})
		appendDevs(t, q, 40, "a") // 40 records of 5-7 budget bytes: 270 bytes
		recs := leaseAvail(t, q, 40)
		var seqs []uint64
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		if err := q.Park(seqs...); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.Dropped != 0 || st.Bytes > 300 {
			t.Fatalf("before parking: %+v", st)
		}
		appendDevs(t, q, 30, "b") // needs room: the oldest parked go
		st := q.Stats()
		if st.Dropped == 0 || st.Parked != 40-int(st.Dropped) {
			t.Fatalf("stats %+v: parked records were not evicted", st)
		}
		back, err := q.LeaseParked(seqs...)
		if err != nil || len(back) != st.Parked || back[0].Seq != seqs[st.Dropped] {
			t.Fatalf("LeaseParked after eviction: %d records (first %v seq %d), %v; want the %d not evicted from seq %d", len(back), ids(back[:1]), back[0].Seq, err, st.Parked, seqs[st.Dropped])
		}
	})
	t.Run("expired", func(t *testing.T) {
		var now atomic.Int64
		now.Store(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC).UnixNano())
		clock := func() time.Time { return time.Unix(0, now.Load()) }
		q := openPark(t, t.TempDir(), store.Options{Config: store.Config{TTL: time.Hour}, Now: clock, SweepInterval: 10 * time.Millisecond})
		appendDevs(t, q, 4, "a")
		recs := leaseAvail(t, q, 4)
		if err := q.Park(recs[0].Seq, recs[1].Seq, recs[2].Seq, recs[3].Seq); err != nil {
			t.Fatal(err)
		}
		now.Add(int64(2 * time.Hour))
		deadline := time.Now().Add(5 * time.Second)
		for q.Stats().Expired != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("parked records not expired: %+v", q.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if st := q.Stats(); st.Parked != 0 || st.Depth != 0 {
			t.Fatalf("after expiry %+v", st)
		}
	})
	t.Run("restart", func(t *testing.T) {
		dir := t.TempDir()
		q, err := store.Open(dir, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		appendDevs(t, q, 6, "a", "b")
		recs := leaseAvail(t, q, 6)
		if err := q.Park(recs[0].Seq, recs[2].Seq); err != nil { // a-0, a-2
			t.Fatal(err)
		}
		if err := q.Ack(recs[1].Seq, recs[3].Seq, recs[4].Seq, recs[5].Seq); err != nil {
			t.Fatal(err)
		}
		q.Close()
		q = openPark(t, dir, store.Options{})
		if got := ids(leaseAvail(t, q, 10)); !slices.Equal(got, []string{"a-0", "a-2"}) {
			t.Fatalf("after a restart the parked records lease as %v", got)
		}
	})
}

// A record leased by LeaseFrom (ahead of the backlog's cursor) and parked
// is neither leased again by Lease nor evicted twice.
func TestParkAheadOfCursor(t *testing.T) {
	q := openPark(t, t.TempDir(), store.Options{Config: store.Config{MaxBytes: 40, WhenFull: store.DropOldest}})
	mark := q.NextSeq()
	appendDevs(t, q, 4, "a") // 4 records of 5 budget bytes
	live, err := q.LeaseFrom(context.Background(), mark, 10)
	if err != nil || len(live) != 4 {
		t.Fatalf("LeaseFrom: %d, %v", len(live), err)
	}
	if err := q.Park(live[2].Seq, live[3].Seq); err != nil {
		t.Fatal(err)
	}
	if got := ids(leaseAvail(t, q, 10)); len(got) != 0 {
		t.Fatalf("Lease handed out %v: parked (or leased) records", got)
	}
	// 30 more bytes: the two parked ones (the only ones not leased) go.
	if err := q.Append(context.Background(), &msg.Record{ID: "big", Device: "b", Priority: msg.Normal, Payload: make([]byte, 26)}); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Depth != 3 || st.Dropped != 2 || st.Parked != 0 {
		t.Fatalf("Depth %d (want 3), Dropped %d (want 2), Parked %d (want 0)", st.Depth, st.Dropped, st.Parked)
	}
}

// LeaseParked never hands out an expired record: it is dropped instead.
func TestLeaseParkedExpired(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC).UnixNano())
	q := openPark(t, t.TempDir(), store.Options{Config: store.Config{TTL: time.Hour}, Now: func() time.Time { return time.Unix(0, now.Load()) }, SweepInterval: time.Hour})
	appendDevs(t, q, 2, "a")
	recs := leaseAvail(t, q, 2)
	if err := q.Park(recs[0].Seq, recs[1].Seq); err != nil {
		t.Fatal(err)
	}
	now.Add(int64(2 * time.Hour))
	got, err := q.LeaseParked(recs[0].Seq, recs[1].Seq)
	if err != nil || len(got) != 0 {
		t.Fatalf("LeaseParked gave %v (%v): expired records", ids(got), err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for st := q.Stats(); st.Expired != 2 || st.Depth != 0; st = q.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("expired parked records not dropped: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close may race with readers (a scrape of /metrics, a leaser): they get
// ErrClosed or a result, never Badger's "DB Closed" panic.
func TestCloseRacesReaders(t *testing.T) {
	for range 20 {
		q, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		appendDevs(t, q, 10, "a")
		stop := make(chan struct{})
		done := make(chan struct{})
		for g := range 3 {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					switch g {
					case 0:
						q.Stats()
					case 1:
						ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
						if recs, err := q.Lease(ctx, 2); err == nil {
							_ = q.Release(recs[0].Seq)
						}
						cancel()
					case 2:
						_, _ = q.Dead(0, 5)
					}
				}
			}()
		}
		time.Sleep(2 * time.Millisecond)
		q.Close()
		close(stop)
		for range 3 {
			<-done
		}
	}
}
