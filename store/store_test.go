package store_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"

	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string, opt store.Options) (storetest.Queue, error) {
		return store.Open(dir, opt)
	})
}

// A 256 KiB message (the hub's default max_message_bytes) fits one Append
// with the low-memory profile: large payloads go to the value log.
func TestLargeRecord(t *testing.T) {
	for _, mt := range []int64{0, 2 << 20} {
		q, err := store.Open(t.TempDir(), store.Options{MemTableSize: mt})
		if err != nil {
			t.Fatal(err)
		}
		big := &msg.Record{Device: "d", Priority: msg.Normal, Payload: bytes.Repeat([]byte("x"), 256<<10)}
		if err := q.Append(context.Background(), big, &msg.Record{Device: "d", Payload: []byte("small")}); err != nil {
			t.Fatalf("memtable %d: append 256 KiB: %v", mt, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		recs, err := q.Lease(ctx, 2)
		cancel()
		if err != nil || len(recs) != 2 || !bytes.Equal(recs[1].Payload, big.Payload) {
			t.Fatalf("lease: %d records, %v", len(recs), err)
		}
		tooMany := make([]*msg.Record, 100000)
		for i := range tooMany {
			tooMany[i] = &msg.Record{Device: "d", Payload: []byte("r")}
		}
		if err := q.Append(context.Background(), tooMany...); !errors.Is(err, store.ErrTooLarge) {
			t.Fatalf("append of 100000 records in one call: %v, want ErrTooLarge", err)
		}
		q.Close()
	}
}

// A store held by another Queue (another gateway process) is not damage:
// Open fails and moves nothing.
func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Append(context.Background(), &msg.Record{Device: "d", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	q2, err := store.Open(dir, store.Options{})
	if err == nil {
		q2.Close()
		t.Fatalf("second Open of a held store succeeded (quarantined %q)", q2.Quarantined())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("data dir after a refused open: %v", ents)
	}
	if _, err := store.OpenReadOnly(dir); err == nil {
		t.Fatal("OpenReadOnly of a held store succeeded")
	}
	if st := q.Stats(); st.Depth != 1 {
		t.Fatalf("depth %d after the refused opens", st.Depth)
	}
}

// OpenReadOnly reads a store left by a crash (its write-ahead log needs
// recovery) through a recovered temporary copy, and changes nothing in it.
func TestOpenReadOnlyAfterCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child process")
	}
	dir := t.TempDir()
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD="+dir, "STORE_CRASH_ROUND=0")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for n := 0; n < 200 && sc.Scan(); n++ {
	}
	cmd.Process.Kill()
	cmd.Wait()
	before := dirSnapshot(t, filepath.Join(dir, "queue"))
	q, err := store.OpenReadOnly(dir)
	if err != nil {
		t.Fatalf("read-only open after a crash: %v", err)
	}
	recs, err := q.Peek(10)
	if err != nil || len(recs) == 0 {
		t.Fatalf("peek: %d records, %v", len(recs), err)
	}
	if err := q.Append(context.Background(), &msg.Record{Device: "d"}); !errors.Is(err, store.ErrReadOnly) {
		t.Fatalf("append on a read-only store: %v", err)
	}
	q.Close()
	if after := dirSnapshot(t, filepath.Join(dir, "queue")); after != before {
		t.Fatalf("read-only open changed the store:\n%s\n%s", before, after)
	}
}

func dirSnapshot(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range ents {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, "%s %d %x\n", e.Name(), len(data), sha256.Sum256(data))
	}
	return b.String()
}
