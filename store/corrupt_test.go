package store_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// fillStore writes n 200-byte records (enough to flush several tables with
// a 1 MiB memtable) and closes the store.
func fillStore(t *testing.T, dataDir string, n int) {
	t.Helper()
	q, err := store.Open(dataDir, store.Options{MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 100 {
		recs := make([]*msg.Record, 100)
		for j := range recs {
			recs[j] = &msg.Record{Device: "d", Priority: msg.Normal, Payload: fmt.Appendf(nil, "%0200d", i+j)}
		}
		if err := q.Append(context.Background(), recs...); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

func flip(off func(size int) int, n int) func(t *testing.T, path string) {
	return func(t *testing.T, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for i := off(len(b)); i < off(len(b))+n && i < len(b); i++ {
			b[i] ^= 0xa5
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func truncateHalf(t *testing.T, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
}

// TestCorruption damages one file of a closed store and reopens it: either
// the damage is detected (the store is moved to quarantine-<ts> and a fresh
// one works) or the store opens and serves what it can; never a panic.
func TestCorruption(t *testing.T) {
	const n = 20000
	base := t.TempDir()
	fillStore(t, base, n)
	firstSST := func() string {
		m, _ := filepath.Glob(filepath.Join(base, "queue", "*.sst"))
		if len(m) < 2 {
			t.Fatalf("want several tables, got %v", m)
		}
		return filepath.Base(m[0])
	}()
	for _, tc := range []struct {
		name, file string
		damage     func(*testing.T, string)
		quarantine bool
	}{
		{"manifest-flipped", "MANIFEST", flip(func(s int) int { return s / 2 }, 8), true},
		{"manifest-truncated", "MANIFEST", truncateHalf, true},
		{"table-truncated", firstSST, truncateHalf, true},
		{"table-index-flipped", firstSST, flip(func(s int) int { return s - 300 }, 100), true},
		{"table-block-flipped", firstSST, flip(func(s int) int { return s / 2 }, 64), true}, // the table changed since the clean close: every block is verified
		{"vlog-truncated", "000001.vlog", truncateHalf, true},                               // the value log holds the records (and the last meta): it is damage
		{"discard-flipped", "DISCARD", flip(func(s int) int { return 0 }, 64), false},
		{"keyregistry-flipped", "KEYREGISTRY", flip(func(s int) int { return 0 }, 8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(filepath.Join(dir, "queue"), os.DirFS(filepath.Join(base, "queue"))); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, filepath.Join(dir, "queue", tc.file))
			q, err := store.Open(dir, store.Options{MemTableSize: 1 << 20})
			if err != nil {
				t.Fatalf("open after damage: %v (want quarantine or a working store)", err)
			}
			defer q.Close()
			qd := q.Quarantined()
			if (qd != "") != tc.quarantine {
				t.Fatalf("quarantined %q, want quarantine=%v", qd, tc.quarantine)
			}
			st := q.Stats()
			if tc.quarantine {
				if _, err := os.Stat(filepath.Join(qd, tc.file)); err != nil {
					t.Fatalf("damaged file not in the quarantine dir: %v", err)
				}
				if filepath.Dir(qd) != dir || st.Depth != 0 || st.Quarantined != qd {
					t.Fatalf("quarantine dir %s, fresh store depth %d, stats %q", qd, st.Depth, st.Quarantined)
				}
				// The fresh store works.
				if err := q.Append(context.Background(), &msg.Record{Device: "d", Priority: msg.High, Payload: []byte("x")}); err != nil {
					t.Fatal(err)
				}
				if recs := leaseN(t, q, 10); len(recs) != 1 {
					t.Fatalf("fresh store leased %d records", len(recs))
				}
				// Reopening the fresh store is not a quarantine again.
				q.Close()
				q2, err := store.Open(dir, store.Options{})
				if err != nil || q2.Quarantined() != "" {
					t.Fatalf("reopen after quarantine: %v %q", err, q2.Quarantined())
				}
				q2.Close()
				return
			}
			if st.Depth != n {
				t.Fatalf("depth %d, want %d", st.Depth, n)
			}
			recs := leaseN(t, q, n)
			t.Logf("%d of %d records readable", len(recs), n)
			if tc.file != firstSST && len(recs) != n {
				t.Fatalf("damage to %s lost records: %d of %d readable", tc.file, len(recs), n)
			}
		})
	}
}

func leaseN(t *testing.T, q *store.Queue, n int) []*msg.Record {
	t.Helper()
	var out []*msg.Record
	for len(out) < n {
		ctx, cancel := context.WithTimeout(context.Background(), 100*1e6)
		recs, err := q.Lease(ctx, n-len(out))
		cancel()
		if err != nil {
			break
		}
		out = append(out, recs...)
	}
	return out
}

// A kill right after Badger created a write-ahead file, before it sized it,
// leaves an empty .mem file; the store must still open with every record.
func TestEmptyMemtableAfterKill(t *testing.T) {
	base := t.TempDir()
	fillStore(t, base, 1000)
	if err := os.WriteFile(filepath.Join(base, "queue", "00099.mem"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(base, "queue", "CLEAN")) // as after a kill
	q, err := store.Open(base, store.Options{})
	if err != nil {
		t.Fatalf("open with an empty .mem file: %v", err)
	}
	defer q.Close()
	if qd := q.Quarantined(); qd != "" {
		t.Fatalf("quarantined %s for an empty write-ahead file", qd)
	}
	if d := q.Stats().Depth; d != 1000 {
		t.Fatalf("depth %d, want 1000", d)
	}
}
