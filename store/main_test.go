package store_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("STORE_CRASH_CHILD"); dir != "" {
		crashChild(dir, os.Getenv("STORE_CRASH_ROUND"))
		return
	}
	if dir := os.Getenv("STORE_FAIL_CHILD"); dir != "" {
		failChild(dir)
		return
	}
	code := m.Run()
	if code == 0 && os.Getenv("STORE_FAILSYNC_CHILD") == "" { // that child abandons a failed store
		if leaked := leakedGoroutines(); leaked != "" {
			fmt.Fprintln(os.Stderr, "goroutines left running after the tests:\n"+leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines returns the stacks of goroutines still running store or
// Badger code a moment after every Queue was closed.
func leakedGoroutines() string {
	var stacks string
	for range 50 {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for _, g := range strings.Split(stacks, "\n\n") {
			// badger.Open leaks its cache monitor when it fails on some
			// damaged stores and returns no DB to close (TestCorruption).
			if strings.Contains(g, "(*DB).monitorCache") {
				continue
			}
			if strings.Contains(g, "outpost/store.") && !strings.Contains(g, "leakedGoroutines") ||
				strings.Contains(g, "dgraph-io/badger") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return ""
		}
		stacks = strings.Join(leaked, "\n\n")
		time.Sleep(20 * time.Millisecond)
	}
	return stacks
}
