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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

var crashRounds = flag.Int("crash.rounds", 20, "SIGKILL rounds in TestCrash")

// crashChild is the child side of TestCrash: 8 producers append records
// "round:producer:counter" and print "P round:producer:counter seq" after
// each Append returned nil; one consumer leases, acks (printing "A seq"
// before each Ack) and releases. It runs until killed.
func crashChild(dir, round string) {
	q, err := store.Open(dir, store.Options{MemTableSize: 1 << 20})
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
						Payload: fmt.Appendf(nil, "%s:%d:%d", round, p, c*3+i)}
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
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	acked := map[string]uint64{}  // payload -> seq, as the child's Append returned it
	consumed := map[uint64]bool{} // seqs the child's consumer acked (maybe before "P")
	for round := range *crashRounds {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), "STORE_CRASH_CHILD="+dir, fmt.Sprint("STORE_CRASH_ROUND=", round))
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
		seen := 0
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
					t.Fatalf("round %d: child: %s", round, line)
				}
				if seen >= killAt && cmd.Process != nil {
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

		var logs strings.Builder
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		q, err := store.Open(dir, store.Options{MemTableSize: 1 << 20, Logger: log})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		if logs.Len() > 0 {
			t.Logf("round %d: store log:\n%s", round, logs.String())
		}
		if d := q.Quarantined(); d != "" {
			t.Fatalf("round %d: store quarantined after SIGKILL: %s", round, d)
		}
		recs, err := q.Peek(1 << 30)
		if err != nil {
			t.Fatal(err)
		}
		st := q.Stats()
		q.Close()
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
		t.Logf("round %d: killed after %d appends; %d records kept, %d tracked", round, seen, len(recs), len(acked))
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
