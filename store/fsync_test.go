package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// TestFailedSyncStopsAcknowledging injects a failed sync into one commit:
// nothing of that batch is acknowledged, every later write fails with
// ErrFailed, Damaged reports it, and reopening the store serves what is on
// disk (everything acknowledged before the failure) and acknowledges again.
func TestFailedSyncStopsAcknowledging(t *testing.T) {
	if dir := os.Getenv("STORE_FAILSYNC_CHILD"); dir != "" {
		failedSyncChild(t, dir)
		return
	}
	dir := t.TempDir()
	// The failed store is abandoned, not closed (see Queue.Close): its
	// files stay held until its process exits, so it runs in a child.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestFailedSyncStopsAcknowledging$", "-test.v")
	cmd.Env = append(os.Environ(), "STORE_FAILSYNC_CHILD="+dir)
	out, err := cmd.CombinedOutput()
	var seq1, seq2 uint64
	if i := strings.Index(string(out), "SEQS "); i >= 0 {
		fmt.Sscanf(string(out[i:]), "SEQS %d %d", &seq1, &seq2)
	}
	if err != nil || !strings.Contains(string(out), "--- PASS") || seq1 == 0 {
		t.Fatalf("child: %v\n%s", err, out)
	}
	ctx := context.Background()
	rec := func(s string) *msg.Record {
		return &msg.Record{Device: "d", Priority: msg.Normal, Payload: []byte(s)}
	}
	acked := []*msg.Record{{Seq: seq1}, {Seq: seq2}}
	q2, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	if q2.Quarantined() != "" || q2.Damaged() != "" {
		t.Fatalf("reopen: quarantined %q, damaged %q", q2.Quarantined(), q2.Damaged())
	}
	got := leaseN(t, q2, 10)
	// Both acknowledged records are there with their seqs; "c" was not
	// acknowledged and may or may not be (at least once); "d" never reached
	// Badger.
	if len(got) < 2 || len(got) > 3 || got[0].Seq != acked[0].Seq || got[1].Seq != acked[1].Seq ||
		string(got[0].Payload) != "a" || string(got[1].Payload) != "b" {
		t.Fatalf("after reopen leased %v", got)
	}
	if len(got) == 3 && string(got[2].Payload) != "c" {
		t.Fatalf("after reopen leased %q as the third record", got[2].Payload)
	}
	if st := q2.Stats(); st.Depth != uint64(len(got)) {
		t.Fatalf("depth %d, %d records", st.Depth, len(got))
	}
	if err := q2.Append(ctx, rec("e")); err != nil {
		t.Fatalf("append after reopen: %v", err)
	}
}

func failedSyncChild(t *testing.T, dir string) {
	var failing atomic.Bool
	opt := store.Options{}
	store.SetCommitHook(&opt, func() error {
		if failing.Load() {
			return syscall.EIO
		}
		return nil
	})
	q, err := store.Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rec := func(s string) *msg.Record {
		return &msg.Record{Device: "d", Priority: msg.Normal, Payload: []byte(s)}
	}
	acked := []*msg.Record{rec("a"), rec("b")}
	if err := q.Append(ctx, acked...); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("SEQS %d %d\n", acked[0].Seq, acked[1].Seq)
	if d := q.Damaged(); d != "" {
		t.Fatalf("healthy store reports %q", d)
	}
	leased, err := q.Lease(ctx, 1)
	if err != nil || len(leased) != 1 {
		t.Fatalf("lease: %v %v", leased, err)
	}

	failing.Store(true)
	if err := q.Append(ctx, rec("c")); err == nil || !errors.Is(err, syscall.EIO) {
		t.Fatalf("append in the failing batch: %v, want the sync error", err)
	}
	failing.Store(false) // the disk "works" again: the store must not believe it
	if err := q.Append(ctx, rec("d")); !errors.Is(err, store.ErrFailed) {
		t.Fatalf("append after a failed sync: %v, want ErrFailed", err)
	}
	if err := q.Ack(leased[0].Seq); !errors.Is(err, store.ErrFailed) {
		t.Fatalf("ack after a failed sync: %v, want ErrFailed", err)
	}
	if d := q.Damaged(); d == "" {
		t.Fatal("Damaged is empty after a failed sync")
	}
	if err := q.Close(); !errors.Is(err, store.ErrFailed) {
		t.Fatalf("Close of a failed store: %v, want it abandoned with ErrFailed", err)
	}
}
