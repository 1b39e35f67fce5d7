package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest/lazyfs"
)

var failOpt = store.Options{MemTableSize: 1 << 20, ValueLogFileSize: 1 << 20}

// failChild is the child side of TestFailingDisk (this process must not
// serve the mount it writes to). It appends 200 records ("A payload" after
// each acknowledged one), says "READY" and waits for "GO" on stdin, while
// the parent breaks the disk; then it appends until an append fails
// ("FAILED n") and waits for "HEALED"; then it appends once more ("AFTER
// error") and closes the store ("CLOSED").
func failChild(dir string) {
	in := bufio.NewScanner(os.Stdin)
	say := func(f string, a ...any) { fmt.Printf(f+"\n", a...) }
	q, err := store.Open(dir, failOpt)
	if err != nil {
		say("E open: %v", err)
		os.Exit(1)
	}
	ctx, pad := context.Background(), strings.Repeat("x", 300)
	app := func(p string) error {
		return q.Append(ctx, &msg.Record{Device: "d", Priority: msg.Normal, Payload: []byte(p)})
	}
	for i := range 200 {
		p := fmt.Sprintf("before-%d-%s", i, pad)
		if err := app(p); err != nil {
			say("E append: %v", err)
			os.Exit(1)
		}
		say("A %s", p)
	}
	say("READY")
	in.Scan()
	failed := -1
	for i := range 5000 {
		p := fmt.Sprintf("during-%d-%s", i, pad)
		if err := app(p); err != nil {
			failed = i
			break
		}
		say("A %s", p)
	}
	if q.Failed() == nil {
		say("E Failed is nil after %d appends (failed at %d)", 5000, failed)
	}
	say("FAILED %d", failed)
	in.Scan()
	time.Sleep(1500 * time.Millisecond) // Badger's background flush retries meanwhile
	say("AFTER %v", errors.Is(app("after"), store.ErrFailed))
	q.Close()
	say("CLOSED")
}

// A disk that fails under the store: EIO on every write, EIO on every
// fsync (the file's unsynced data is dropped, as Linux does), EIO on the
// value log's fsyncs only, ENOSPC part-way, a read-only remount. The
// failing append is not acknowledged, nothing after it is (even once the
// disk has healed: ErrFailed), or the store stops the process when the
// value log failed to sync; opening the store again serves everything
// acknowledged before the failure, without a quarantine.
func TestFailingDisk(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range lazyfs.Failures() {
		t.Run(c.Name, func(t *testing.T) {
			fsys := lazyfs.ForTest(t, lazyfs.Options{})
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), "STORE_FAIL_CHILD="+filepath.Join(fsys.Dir(), "data"))
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			lines := make(chan string, 64)
			go func() {
				sc := bufio.NewScanner(stdout)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			var acked []string
			failed := ""
			after := ""
			timeout := time.After(60 * time.Second)
		read:
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						break read
					}
					word, rest, _ := strings.Cut(line, " ")
					switch word {
					case "A":
						acked = append(acked, rest)
					case "READY":
						fsys.SetFaults(c.Faults)
						io.WriteString(stdin, "GO\n")
					case "FAILED":
						failed = rest
						fsys.SetFaults(lazyfs.Faults{})
						io.WriteString(stdin, "HEALED\n")
					case "AFTER":
						after = rest
					case "E":
						t.Fatalf("child: %s", line)
					}
				case <-timeout:
					t.Fatal("the child made no progress")
				}
			}
			cmd.Wait()
			// Either the store failed (it acknowledges nothing more), or the
			// value log failed to sync and the store stopped the process
			// (ErrValueLogSync) before Badger could write past it.
			stopped := strings.Contains(stderr.String(), store.ErrValueLogSync.Error())
			switch {
			case stopped:
				t.Logf("the store stopped the process: %s", firstLine(stderr.String(), "panic: "))
			case failed == "" || failed == "-1":
				t.Fatalf("the disk failed but no append did (FAILED %q)\n%s", failed, stderr.String())
			case after != "true":
				t.Errorf("an append after the disk healed did not fail with ErrFailed")
			}
			// Read what is on disk from the backing directory, as a reboot
			// would find it.
			var logs strings.Builder
			opt := failOpt
			opt.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			q, err := store.Open(filepath.Join(fsys.Backing(), "data"), opt)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			if qd := q.Quarantined(); qd != "" {
				t.Fatalf("reopened after the failure: quarantined to %s\n%s", qd, logs.String())
			}
			got := leaseN(t, q, len(acked)+10)
			have := map[string]bool{}
			for _, r := range got {
				have[string(r.Payload)] = true
			}
			for _, p := range acked {
				if !have[p] {
					t.Fatalf("acknowledged %.12s… lost (%d acknowledged, %d served)", p, len(acked), len(got))
				}
			}
			t.Logf("%d acknowledged, append %s failed; %d served after reopen; lazyfs failed %d operations",
				len(acked), failed, len(got), fsys.Stats().Faults)
		})
	}
}

// firstLine is the first line of s that starts with prefix, or "".
func firstLine(s, prefix string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}
