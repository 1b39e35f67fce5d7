package lazyfs

import (
	"os"
	"path/filepath"
	"testing"
)

// ForTest mounts a lazyfs over a fresh backing directory and unmounts it at
// cleanup (mount it before starting what uses it, so that is stopped
// first). Mounting needs root and /dev/fuse: without them the test is
// skipped, and fails under CI=true, where a skip would hide it.
func ForTest(t testing.TB, o Options) *FS {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "the power-cut file system (lazyfs) mounts with mount(2) and needs root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "the power-cut file system (lazyfs) needs /dev/fuse: " + err.Error()
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(why + "; CI must run this test")
		}
		t.Skip("skipped: " + why)
	}
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Mount(backing, mnt, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Error(err)
		}
	})
	return f
}

// Failure is a named failing disk.
type Failure struct {
	Name   string
	Faults Faults
}

// Failures are the ways a disk fails that the store's and the gateway's
// tests run under: EIO on every write, EIO on every fsync, EIO on the
// value log's fsyncs only (Badger logs that one and goes on), ENOSPC after
// 48 KiB, a read-only remount.
func Failures() []Failure {
	return []Failure{
		{"write-eio", Faults{WriteEIO: true}},
		{"fsync-eio", Faults{FsyncEIO: true}},
		{"vlog-fsync-eio", Faults{FsyncEIO: true, FsyncEIOSuffix: ".vlog"}},
		{"enospc", Faults{ENOSPC: true, SpaceLeft: 48 << 10}},
		{"read-only", Faults{ReadOnly: true}},
	}
}
