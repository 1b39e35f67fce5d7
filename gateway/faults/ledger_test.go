package faults

import (
	"context"
	"testing"
	"time"
)

func TestStreams(t *testing.T) {
	for _, tc := range []struct {
		seqs []uint64
		want int
	}{
		{nil, 0},
		{[]uint64{1, 2, 3}, 1},
		{[]uint64{5, 6, 1, 7, 2, 8, 3}, 2}, // live 5.. overtaking backlog 1..
		{[]uint64{3, 2, 1}, 3},
		{[]uint64{1, 3, 2, 4}, 2},
	} {
		if got := streams(tc.seqs); got != tc.want {
			t.Errorf("streams(%v) = %d, want %d", tc.seqs, got, tc.want)
		}
	}
}

func TestParseID(t *testing.T) {
	if d, s, ok := ParseID("mpub-5-12"); !ok || d != "mpub-5" || s != 12 {
		t.Errorf("ParseID = %q %d %v", d, s, ok)
	}
	for _, bad := range []string{"", "x", "-1", "dev-", "dev-x", "dev-+1"} {
		if _, _, ok := ParseID(bad); ok {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func topicFor(dev, mid string, gseq string) string {
	return "devices/" + dev + "/messages/events/%24.mid=" + mid + "&outpost-seq=" + gseq
}

// The verdict: loss, duplicates, unstable ids, ingest order and delivery
// order are each detected.
func TestLedgerReport(t *testing.T) {
	l := NewLedger()
	for i := 1; i <= 5; i++ {
		l.Sent(1)
		l.Acked(ID("a", i))
	}
	l.Refused(1)
	l.Deliver(topicFor("a", "a-1", "10"), Payload("a-1", 32))
	l.Deliver(topicFor("a", "a-1", "10"), Payload("a-1", 32))          // duplicate, same copy
	l.Deliver(topicFor("a", "a-3", "12"), []byte("a-3"))               // a-2 missing so far
	l.Deliver(topicFor("a", "a-2", "11"), []byte("a-2"))               // arrives after a-3: 2 streams
	l.Deliver(topicFor("a", "other", "11"), []byte("a-2"))             // same copy, another $.mid
	l.Deliver(topicFor("a", "a-4", "9"), []byte("a-4"))                // stored before a-1: inversion
	l.Deliver("devices/b/messages/events/", []byte("not a ledger id")) // foreign
	r := l.Report("test")
	if r.Lost != 1 || r.LostIDs[0] != "a-5" {
		t.Errorf("lost %d %v, want a-5", r.Lost, r.LostIDs)
	}
	if r.Duplicates != 2 || r.MidChanged != 1 || r.Foreign != 1 {
		t.Errorf("duplicates %d mid changed %d foreign %d, want 2 1 1", r.Duplicates, r.MidChanged, r.Foreign)
	}
	if r.IngestInversions != 1 {
		t.Errorf("ingest inversions %d, want 1", r.IngestInversions)
	}
	if r.OrderStreams != 3 { // keys 10, 12, 11, 9
		t.Errorf("order streams %d, want 3", r.OrderStreams)
	}
	if got := l.LostRanges(); got != "a 5" {
		t.Errorf("LostRanges = %q", got)
	}
	l.ClientReorders("a")
	if r := l.Report("test"); r.IngestInversions != 0 {
		t.Errorf("a reordering client still counted: %d", r.IngestInversions)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.WaitDelivered(ctx, time.Second) }()
	l.Deliver(topicFor("a", "a-5", "13"), []byte("a-5"))
	if err := <-done; err != nil {
		t.Errorf("WaitDelivered after the last delivery: %v", err)
	}
	l.Acked(ID("a", 6))
	if err := l.WaitDelivered(ctx, 100*time.Millisecond); err == nil {
		t.Errorf("WaitDelivered returned nil with a-6 missing")
	}
}
