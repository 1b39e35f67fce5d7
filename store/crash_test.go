package store_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest/lazyfs"
)

var crashN = flag.Int("crash.rounds", 20, "SIGKILL rounds in TestCrash")

// crashChild is the child side of TestCrash: 8 producers append records
// "round:producer:counter" and print "P round:producer:counter seq" after
// each Append returned nil; one consumer leases, acks (printing "A seq"
// before each Ack) and releases. It runs until killed.
//
// With STORE_CRASH_BIG set the payloads are padded past the value-log
// threshold and the value-log files are 1 MiB, so rounds start new log
// files often.
func crashChild(dir, round string) {
	opt, pad := store.Options{MemTableSize: 1 << 20}, ""
	if os.Getenv("STORE_CRASH_BIG") != "" {
		opt.ValueLogFileSize, pad = 1<<20, ":"+strings.Repeat("x", 200)
	}
	q, err := store.Open(dir, opt)
	if err != nil {
		fmt.Println("E", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	say := func(f string, a ...any) {
		mu.Lock()
		fmt.Fprintf(out, f+"\n", a...)
		out.Flush()
		mu.Unlock()
	}
	for p := range 8 {
		go func() {
			for c := 0; ; c++ {
				n := 1 + c%3 // some appends carry several records
				recs := make([]*msg.Record, n)
				for i := range recs {
					recs[i] = &msg.Record{Device: fmt.Sprint("p", p), Priority: msg.Priority((p + i) % 3),
						Payload: fmt.Appendf(nil, "%s:%d:%d%s", round, p, c*3+i, pad)}
				}
				if err := q.Append(context.Background(), recs...); err != nil {
					say("E %v", err)
					return
				}
				for _, r := range recs {
					say("P %s %d", r.Payload, r.Seq)
				}
			}
		}()
	}
	// The consumer is slower than the producers, acks out of order and
	// releases some, so a backlog builds up and heads move unevenly.
	for {
		recs, err := q.Lease(context.Background(), 7)
		if err != nil {
			say("E %v", err)
			return
		}
		for i := len(recs) - 1; i >= 0; i-- {
			r := recs[i]
			if i%3 == 1 {
				q.Release(r.Seq)
				continue
			}
			say("A %d", r.Seq)
			q.Ack(r.Seq)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCrash kills a child appending with many goroutines at random points
// and checks that every append that returned nil is still there (or was
// acked), in order per producer, and that the counters match the records.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	crashRounds(t, t.TempDir(), *crashN, nil)
}

// TestPowerCut is TestCrash with the power cut as well: the child's store
// is on lazyfs, which loses at each cut whatever was written but not
// synced (a file's unsynced data, sometimes keeping a torn prefix of the
// last write; a directory entry whose directory was not synced), before
// the child is killed. Every append that returned nil must survive, under
// POSIX's rules (only a directory's fsync makes its entries durable: the
// store must sync the directories it and Badger create) and under ext4's
// data=ordered journal (any fsync commits the entries before it).
func TestPowerCut(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	for _, rules := range []struct {
		name string
		o    lazyfs.Options
	}{{"posix", lazyfs.Options{}}, {"ext4-ordered", lazyfs.Options{Ordered: true}}} {
		t.Run(rules.name, func(t *testing.T) {
			fsys := lazyfs.ForTest(t, rules.o)
			// The data dir's parents do not exist yet: the store creates
			// them, as it does on a fresh SD card.
			crashRounds(t, filepath.Join(fsys.Dir(), "var", "lib", "outpost"), max(*crashN/2, 5), fsys)
			// The cuts must have landed while Badger flushed memtables into
			// tables and value-log GC deleted files, or they prove less.
			var ssts, vlogs, maxVlog int
			for _, n := range strings.Fields(storeFiles(filepath.Join(fsys.Backing(), "var", "lib", "outpost"))) {
				var id int
				fmt.Sscanf(n, "%d", &id)
				switch filepath.Ext(n) {
				case ".sst":
					ssts++
				case ".vlog":
					vlogs, maxVlog = vlogs+1, max(maxVlog, id)
				}
			}
			t.Logf("after the cuts: %d tables, %d of %d value-log files left by GC", ssts, vlogs, maxVlog)
			if ssts < 2 || vlogs >= maxVlog {
				t.Errorf("the run flushed %d tables and GC deleted %d value-log files: it exercised neither", ssts, maxVlog-vlogs)
			}
			st := fsys.Stats()
			t.Logf("lazyfs: %d writes, %d fsyncs, %d dir fsyncs, %d KiB unsynced dropped, %d directory changes undone, %d torn bytes kept",
				st.Writes, st.Fsyncs, st.DirFsyncs, st.DroppedBytes>>10, st.UndoneOps, st.TornBytes)
			if st.DroppedBytes == 0 && st.UndoneOps == 0 {
				t.Error("no cut dropped anything: the run proves nothing")
			}
		})
	}
}

// crashRounds runs rounds of a child appending to the store in dir and
// being killed (after a power cut of fsys, when it is not nil), checking
// after each that every acknowledged append is there.
func crashRounds(t *testing.T, dir string, rounds int, fsys *lazyfs.FS) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{}  // payload -> seq, as the child's Append returned it
	consumed := map[uint64]bool{} // seqs the child's consumer acked (maybe before "P")
	for round := range rounds {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD="+dir, fmt.Sprint("STORE_CRASH_ROUND=", round))
		if fsys != nil {
			cmd.Env = append(cmd.Env, "STORE_CRASH_BIG=1")
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a random number of acknowledged appends (the child's
		// startup time varies too much for a timer alone).
		killAt := 50 + rand.IntN(3000)
		if raceEnabled { // the race detector makes the child ~10x slower
			killAt = 20 + rand.IntN(300)
		}
		seen, cut := 0, false
		timeout := time.After(20 * time.Second)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				f := strings.Fields(line)
				switch f[0] {
				case "P":
					var seq uint64
					fmt.Sscan(f[2], &seq)
					acked[f[1]] = seq
					seen++
				case "A":
					var seq uint64
					fmt.Sscan(f[1], &seq)
					consumed[seq] = true
				case "E":
					if !cut { // after a cut every write fails with EIO
						t.Fatalf("round %d: child: %s", round, line)
					}
				}
				if seen >= killAt && cmd.Process != nil && !cut {
					if fsys != nil {
						torn := 0
						if rand.IntN(2) == 0 {
							torn = 1 + rand.IntN(8192)
						}
						if err := fsys.Cut(lazyfs.CutOptions{TornBytes: torn}); err != nil {
							t.Fatal(err)
						}
					}
					cut = true
					cmd.Process.Signal(syscall.SIGKILL)
				}
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("round %d: child made no progress", round)
			}
		}
		cmd.Wait()
		if seen < killAt {
			t.Fatalf("round %d: child exited after %d appends", round, seen)
		}
		// After a cut the store is read from the backing directory (what
		// the cut left), not through the mount: this process serves the
		// mount, and a Badger here mapping files on it could deadlock with
		// its own server. The mount comes back for the next round.
		openDir := dir
		if fsys != nil {
			if u := fsys.Undone(); len(u) > 0 {
				t.Logf("round %d: the cut undid %d directory changes: %s", round, len(u), strings.Join(u[:min(len(u), 6)], "; "))
			}
			rel, err := filepath.Rel(fsys.Dir(), dir)
			if err != nil {
				t.Fatal(err)
			}
			openDir = filepath.Join(fsys.Backing(), rel)
		}

		var logs strings.Builder
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		q, err := store.Open(openDir, store.Options{MemTableSize: 1 << 20, ValueLogFileSize: 1 << 20, Logger: log})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		t.Cleanup(func() { q.Close() })
		if logs.Len() > 0 {
			t.Logf("round %d: store log:\n%s", round, logs.String())
		}
		if d := q.Quarantined(); d != "" {
			t.Fatalf("round %d: store quarantined after the crash: %s", round, d)
		}
		recs, err := q.Peek(1 << 30)
		if err != nil {
			t.Fatal(err)
		}
		st := q.Stats()
		q.Close()
		if fsys != nil {
			if err := fsys.Remount(); err != nil {
				t.Fatal(err)
			}
		}
		present := map[string]uint64{}
		var bytes int64
		for _, r := range recs {
			if _, dup := present[string(r.Payload)]; dup {
				t.Fatalf("round %d: %s stored twice", round, r.Payload)
			}
			present[string(r.Payload)] = r.Seq
			bytes += int64(r.Size())
		}
		for p, want := range acked {
			seq, ok := present[p]
			switch {
			case !ok && !consumed[want]:
				t.Fatalf("round %d: acknowledged append %s (seq %d) lost", round, p, want)
			case ok && seq != want:
				t.Fatalf("round %d: %s has seq %d, the child was told %d", round, p, seq, want)
			case !ok:
				delete(acked, p) // acked upstream and gone for good
				delete(consumed, want)
			}
		}
		// Per producer, seqs grow with the counter.
		last := map[string][2]int{}
		for _, r := range sortedBySeq(recs) {
			var rd, pr, c int
			fmt.Sscanf(string(r.Payload), "%d:%d:%d", &rd, &pr, &c)
			k := fmt.Sprint(rd, ":", pr)
			if l, ok := last[k]; ok && c <= l[1] {
				t.Fatalf("round %d: producer %s: counter %d stored after %d", round, k, c, l[1])
			}
			last[k] = [2]int{0, c}
		}
		if st.Depth != uint64(len(recs)) || st.Bytes != bytes {
			t.Fatalf("round %d: stats say %d records / %d bytes, store holds %d / %d", round, st.Depth, st.Bytes, len(recs), bytes)
		}
		t.Logf("round %d: killed after %d appends; %d records kept, %d tracked; files %s", round, seen, len(recs), len(acked), storeFiles(openDir))
	}
}

func sortedBySeq(recs []*msg.Record) []*msg.Record {
	out := append([]*msg.Record(nil), recs...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Seq < out[j-1].Seq; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// storeFiles summarises the Badger files in the store under dataDir.
func storeFiles(dataDir string) string {
	ents, _ := os.ReadDir(filepath.Join(dataDir, "queue"))
	var names []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".sst") || strings.HasSuffix(n, ".vlog") || strings.HasSuffix(n, ".mem") {
			names = append(names, n)
		}
	}
	return strings.Join(names, " ")
}
