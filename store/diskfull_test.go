package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// TestDiskFull fills a small tmpfs: appends must start failing with ErrFull
// (never a SIGBUS from Badger writing into a full mapped file), and every
// record acknowledged before that must still be there after a reopen on the
// full file system. It needs root to mount the tmpfs; without it the
// max_bytes policies are still covered by the contract suite (FullReject,
// FullDropOldest).
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("cannot mount a tmpfs (%v); max_bytes policies are covered by TestContract", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	opt := store.Options{MemTableSize: 2 << 20, ValueLogFileSize: 2 << 20} // reserve: 28 MiB + tables
	for _, policy := range []store.FullPolicy{store.Reject, store.DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			data := fmt.Sprintf("%s/%s", dir, policy)
			opt := opt
			opt.WhenFull = policy
			q, err := store.Open(data, opt)
			if err != nil {
				t.Fatal(err)
			}
			stored := map[string]bool{}
			var full error
			for i := 0; i < 1_000_000 && full == nil; i += 50 {
				recs := make([]*msg.Record, 50)
				for j := range recs {
					recs[j] = &msg.Record{Device: "d", Priority: msg.Normal, Payload: fmt.Appendf(nil, "%0500d", i+j)}
				}
				switch err := q.Append(context.Background(), recs...); {
				case err == nil:
					for _, r := range recs {
						stored[string(r.Payload)] = true
					}
				case errors.Is(err, store.ErrFull):
					full = err
				default:
					t.Fatalf("append %d: %v (want nil or ErrFull)", i, err)
				}
			}
			if full == nil {
				t.Fatal("64 MiB tmpfs never filled up")
			}
			t.Logf("%d records stored, then: %v", len(stored), full)
			// Still full: the next append fails the same way, nothing is lost.
			if err := q.Append(context.Background(), &msg.Record{Device: "d", Payload: []byte("x")}); !errors.Is(err, store.ErrFull) {
				t.Fatalf("append on a full disk: %v, want ErrFull", err)
			}
			if err := q.Close(); err != nil {
				t.Fatalf("close on a full disk: %v", err)
			}
			q, err = store.Open(data, opt)
			if err != nil {
				t.Fatalf("reopen on a full disk: %v", err)
			}
			defer q.Close()
			if q.Quarantined() != "" {
				t.Fatalf("quarantined after disk full")
			}
			recs, err := q.Peek(len(stored) + 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(stored) {
				t.Fatalf("%d records after reopen, %d were acknowledged", len(recs), len(stored))
			}
			for _, r := range recs {
				if !stored[string(r.Payload)] {
					t.Fatalf("unexpected record %.20s", r.Payload)
				}
			}
			// Free the disk for the next policy.
			q.Close()
			os.RemoveAll(data)
		})
	}
}
