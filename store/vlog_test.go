package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// TestValueLogReclaimed fills several value-log files, drains them, and
// checks that value-log GC (asked for by the deletions, not the 5-minute
// timer) removes the drained files, and that what is left after a reopen is
// exactly what was not acked.
func TestValueLogReclaimed(t *testing.T) {
	dataDir := t.TempDir()
	opt := store.Options{MemTableSize: 1 << 20, ValueLogFileSize: 1 << 20}
	q, err := store.Open(dataDir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	const n, keep = 30000, 100
	for i := 0; i < n; i += 200 {
		recs := make([]*msg.Record, 200)
		for j := range recs {
			recs[j] = &msg.Record{Device: "d", Priority: msg.Normal, Payload: fmt.Appendf(nil, "%0200d", i+j)}
		}
		if err := q.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	vlogs := func() int {
		m, _ := filepath.Glob(filepath.Join(dataDir, "queue", "*.vlog"))
		return len(m)
	}
	filled := vlogs()
	if filled < 5 {
		t.Fatalf("%d value-log files after %d records, want several", filled, n)
	}
	for acked := 0; acked < n-keep; {
		recs := leaseN(t, q, min(500, n-keep-acked))
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := q.Ack(seqs...); err != nil {
			t.Fatal(err)
		}
		acked += len(recs)
	}
	// Compaction turns the deletions into discard statistics; each file's
	// worth of deletions asks for a GC. Keep deleting (appending and acking
	// small batches) until the drained files are gone, for at most 20 s.
	deadline := time.Now().Add(20 * time.Second)
	for vlogs() > filled/2 && time.Now().Before(deadline) {
		recs := make([]*msg.Record, 200)
		for j := range recs {
			recs[j] = &msg.Record{Device: "e", Priority: msg.Low, Payload: make([]byte, 200)}
		}
		if err := q.Append(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		got, err := q.LeaseFrom(ctx, recs[0].Seq, 200)
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([]uint64, len(got))
		for i, r := range got {
			seqs[i] = r.Seq
		}
		if err := q.Ack(seqs...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left := vlogs(); left > filled/2 {
		t.Fatalf("%d value-log files after draining, %d when full: GC reclaimed too little", left, filled)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q2, err := store.Open(dataDir, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	rest := leaseN(t, q2, 1000)
	if len(rest) != keep || string(rest[0].Payload) != fmt.Sprintf("%0200d", n-keep) {
		t.Fatalf("after reopen %d records left, want %d (the last ones appended)", len(rest), keep)
	}
}
