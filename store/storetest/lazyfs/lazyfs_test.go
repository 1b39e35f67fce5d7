package lazyfs_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outpost-iot/outpost/store/storetest/lazyfs"
)

// mount serves a fresh backing dir and unmounts it at cleanup. Without root
// or /dev/fuse the test is skipped, and fails under CI=true, where a skip
// would hide it.
func mount(t *testing.T) *lazyfs.FS { return mountWith(t, lazyfs.Options{}) }

func mountWith(t *testing.T, o lazyfs.Options) *lazyfs.FS { return lazyfs.ForTest(t, o) }

func write(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// content returns the file's bytes, or nil when it does not exist.
func content(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

func cut(t *testing.T, f *lazyfs.FS, o lazyfs.CutOptions) {
	t.Helper()
	if err := f.Cut(o); err != nil {
		t.Fatal(err)
	}
}

func TestReadsSeeUnsyncedWrites(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "a")
	write(t, p, []byte("hello, world"), false)
	if got := content(t, p); string(got) != "hello, world" {
		t.Fatalf("read through the mount: %q", got)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 12 {
		t.Fatalf("stat: %v %v", st, err)
	}
	if got := content(t, filepath.Join(f.Backing(), "a")); len(got) != 0 {
		t.Fatalf("backing file holds %q before any fsync", got)
	}
}

func TestCutDropsUnsyncedData(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "a")
	write(t, p, nil, true)
	syncDir(t, f.Dir()) // the name is durable, the data below is not
	write(t, p, []byte("not synced"), false)
	cut(t, f, lazyfs.CutOptions{})
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after the cut: %v, want EIO", err)
	}
	if got := content(t, filepath.Join(f.Backing(), "a")); got == nil || len(got) != 0 {
		t.Errorf("after the cut the file holds %q, want it empty", got)
	}
	if err := f.Remount(); err != nil {
		t.Fatal(err)
	}
	if got := content(t, p); got == nil || len(got) != 0 {
		t.Errorf("after remount the file holds %q, want it empty", got)
	}
	if st := f.Stats(); st.Cuts != 1 || st.DroppedBytes == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestSyncedDataSurvivesCut(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "a")
	write(t, p, []byte("synced"), true)
	syncDir(t, f.Dir())
	cut(t, f, lazyfs.CutOptions{})
	if err := f.Remount(); err != nil {
		t.Fatal(err)
	}
	if got := content(t, p); string(got) != "synced" {
		t.Errorf("after the cut: %q, want %q", got, "synced")
	}
}

func TestCreateWithoutDirSyncIsLost(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "new")
	write(t, p, []byte("data synced, name not"), true)
	cut(t, f, lazyfs.CutOptions{})
	if got := content(t, filepath.Join(f.Backing(), "new")); got != nil {
		t.Errorf("a file whose directory was never synced survived the cut: %q", got)
	}
	if ents, _ := os.ReadDir(f.Backing()); len(ents) != 0 {
		t.Errorf("backing dir after the cut: %v, want empty", ents)
	}
}

// With Ordered, a file's fsync makes the directory changes before it
// durable, as ext4's journal does.
func TestOrderedFsyncCommitsCreate(t *testing.T) {
	f := mountWith(t, lazyfs.Options{Ordered: true})
	if err := os.MkdirAll(filepath.Join(f.Dir(), "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.Dir(), "d", "e", "new"), []byte("x"), true)
	write(t, filepath.Join(f.Dir(), "d", "later"), []byte("y"), false)
	cut(t, f, lazyfs.CutOptions{})
	if got := content(t, filepath.Join(f.Backing(), "d", "e", "new")); string(got) != "x" {
		t.Errorf("ordered: a fsynced new file is %q after the cut", got)
	}
	if got := content(t, filepath.Join(f.Backing(), "d", "later")); got != nil {
		t.Errorf("ordered: a file created after the last fsync survived the cut: %q", got)
	}
}

func TestTornWrite(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "log")
	write(t, p, []byte("AAAA"), true)
	syncDir(t, f.Dir())
	h, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(bytes.Repeat([]byte("B"), 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(bytes.Repeat([]byte("C"), 100)); err != nil {
		t.Fatal(err)
	}
	cut(t, f, lazyfs.CutOptions{TornBytes: 10})
	h.Close()
	got := content(t, filepath.Join(f.Backing(), "log"))
	// The first unsynced write is gone; 10 bytes of the last one landed.
	want := append([]byte("AAAA"), make([]byte, 100)...)
	want = append(want, bytes.Repeat([]byte("C"), 10)...)
	if !bytes.Equal(got, want) {
		t.Errorf("after a torn cut: %q, want %q", got, want)
	}
}

func TestRenameDurability(t *testing.T) {
	for _, synced := range []bool{false, true} {
		name := map[bool]string{false: "dir not synced", true: "dir synced"}[synced]
		t.Run(name, func(t *testing.T) {
			f := mount(t)
			dst, tmp := filepath.Join(f.Dir(), "CURRENT"), filepath.Join(f.Dir(), "CURRENT.tmp")
			write(t, dst, []byte("old"), true)
			syncDir(t, f.Dir())
			write(t, tmp, []byte("new"), true)
			if err := os.Rename(tmp, dst); err != nil {
				t.Fatal(err)
			}
			if got := content(t, dst); string(got) != "new" {
				t.Fatalf("before the cut %q", got)
			}
			if synced {
				syncDir(t, f.Dir())
			}
			cut(t, f, lazyfs.CutOptions{})
			b := f.Backing()
			gotDst, gotTmp := content(t, filepath.Join(b, "CURRENT")), content(t, filepath.Join(b, "CURRENT.tmp"))
			wantDst := map[bool]string{false: "old", true: "new"}[synced]
			if string(gotDst) != wantDst || gotTmp != nil {
				t.Errorf("after the cut CURRENT=%q CURRENT.tmp=%q, want %q and none", gotDst, gotTmp, wantDst)
			}
			if ents, _ := os.ReadDir(b); len(ents) != 1 {
				t.Errorf("backing dir holds %v", ents)
			}
		})
	}
}

func TestUnlinkDurability(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(map[bool]string{false: "dir not synced", true: "dir synced"}[synced], func(t *testing.T) {
			f := mount(t)
			if err := os.Mkdir(filepath.Join(f.Dir(), "d"), 0o755); err != nil {
				t.Fatal(err)
			}
			syncDir(t, f.Dir())
			p := filepath.Join(f.Dir(), "d", "x")
			write(t, p, []byte("x"), true)
			syncDir(t, filepath.Join(f.Dir(), "d"))
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Fatalf("stat after unlink: %v", err)
			}
			if synced {
				syncDir(t, filepath.Join(f.Dir(), "d"))
			}
			cut(t, f, lazyfs.CutOptions{})
			got := content(t, filepath.Join(f.Backing(), "d", "x"))
			if synced && got != nil || !synced && string(got) != "x" {
				t.Errorf("after the cut d/x = %q (nil: gone)", got)
			}
			if _, err := os.Stat(filepath.Join(f.Backing(), ".lazyfs-grave")); !os.IsNotExist(err) {
				t.Errorf("the grave is left in the backing dir: %v", err)
			}
		})
	}
}

func TestTruncateIsCached(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "t")
	write(t, p, []byte("0123456789"), true)
	syncDir(t, f.Dir())
	if err := os.Truncate(p, 4); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 8); err != nil {
		t.Fatal(err)
	}
	if got := content(t, p); string(got) != "0123\x00\x00\x00\x00" {
		t.Fatalf("after truncating down and up: %q", got)
	}
	cut(t, f, lazyfs.CutOptions{})
	if got := content(t, filepath.Join(f.Backing(), "t")); string(got) != "0123456789" {
		t.Errorf("an unsynced truncate survived the cut: %q", got)
	}
}

// A file written through a shared mapping, the way Badger writes its
// memtable log: msync(MS_SYNC) makes the pages durable, pages written
// after it are lost in a cut. The mapping is made by a child process: page
// writeback of a mapping holds its process's memory lock, which the FUSE
// server, in this process, may need.
func TestMmapMsync(t *testing.T) {
	f := mount(t)
	p := filepath.Join(f.Dir(), "wal")
	write(t, p, nil, true)
	syncDir(t, f.Dir())
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "LAZYFS_MMAP_CHILD="+p)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap child: %v\n%s", err, out)
	}
	if got := content(t, p); len(got) != mmapSize || !bytes.HasPrefix(got[2*4096:], []byte("unsynced page")) {
		t.Fatalf("the mapped write is not visible through the mount: %d bytes", len(got))
	}
	if st := f.Stats(); st.Fsyncs < 2 {
		t.Errorf("msync(MS_SYNC) reached no fsync: %+v", st)
	}
	cut(t, f, lazyfs.CutOptions{})
	got := content(t, filepath.Join(f.Backing(), "wal"))
	if len(got) != mmapSize || !bytes.HasPrefix(got, []byte("synced page")) {
		t.Fatalf("after the cut the log is %d bytes starting %q, want %d starting %q", len(got), got[:min(len(got), 16)], mmapSize, "synced page")
	}
	if !bytes.Equal(got[2*4096:3*4096], make([]byte, 4096)) {
		t.Errorf("a mapped page never msynced survived the cut: %q", got[2*4096:2*4096+16])
	}
}

const mmapSize = 4 * 4096

// TestMmapChild is TestMmapMsync's child process; it does nothing unless
// LAZYFS_MMAP_CHILD names the file to map.
func TestMmapChild(t *testing.T) {
	p := os.Getenv("LAZYFS_MMAP_CHILD")
	if p == "" {
		return
	}
	h, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.Truncate(mmapSize); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(h.Fd()), 0, mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(m[0:], "synced page")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	copy(m[2*4096:], "unsynced page")
	if err := unix.Munmap(m); err != nil { // the kernel writes the page back, without a sync
		t.Fatal(err)
	}
}

func TestFaults(t *testing.T) {
	t.Run("write EIO", func(t *testing.T) {
		f := mount(t)
		h, err := os.Create(filepath.Join(f.Dir(), "a"))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		f.SetFaults(lazyfs.Faults{WriteEIO: true})
		if _, err := h.Write([]byte("x")); !errors.Is(err, syscall.EIO) {
			t.Errorf("write: %v, want EIO", err)
		}
		f.SetFaults(lazyfs.Faults{})
		if _, err := h.Write([]byte("x")); err != nil {
			t.Errorf("write after the fault cleared: %v", err)
		}
	})
	t.Run("fsync EIO", func(t *testing.T) {
		f := mount(t)
		p := filepath.Join(f.Dir(), "a")
		write(t, p, nil, true)
		syncDir(t, f.Dir())
		h, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		if _, err := h.Write([]byte("batch")); err != nil {
			t.Fatal(err)
		}
		f.SetFaults(lazyfs.Faults{FsyncEIO: true})
		if err := h.Sync(); !errors.Is(err, syscall.EIO) {
			t.Errorf("fsync: %v, want EIO", err)
		}
		f.SetFaults(lazyfs.Faults{})
		if err := h.Sync(); err != nil { // the retry "succeeds": the batch is gone
			t.Errorf("fsync retry: %v", err)
		}
		cut(t, f, lazyfs.CutOptions{})
		if got := content(t, filepath.Join(f.Backing(), "a")); len(got) != 0 {
			t.Errorf("data whose fsync failed reached the disk: %q", got)
		}
	})
	t.Run("ENOSPC after N bytes", func(t *testing.T) {
		f := mount(t)
		h, err := os.Create(filepath.Join(f.Dir(), "a"))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		f.SetFaults(lazyfs.Faults{ENOSPC: true, SpaceLeft: 1000})
		n, err := h.Write(make([]byte, 3000))
		if n != 1000 || !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("write of 3000 with 1000 left: %d, %v; want 1000, ENOSPC", n, err)
		}
		if _, err := h.Write([]byte("x")); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("write on a full disk: %v, want ENOSPC", err)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		f := mount(t)
		p := filepath.Join(f.Dir(), "a")
		write(t, p, []byte("x"), true)
		h, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		f.SetFaults(lazyfs.Faults{ReadOnly: true})
		if _, err := h.Write([]byte("y")); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write: %v, want EROFS", err)
		}
		if _, err := os.Create(filepath.Join(f.Dir(), "b")); !errors.Is(err, syscall.EROFS) {
			t.Errorf("create: %v, want EROFS", err)
		}
		if err := os.Rename(p, p+".2"); !errors.Is(err, syscall.EROFS) {
			t.Errorf("rename: %v, want EROFS", err)
		}
		if err := os.Remove(p); !errors.Is(err, syscall.EROFS) {
			t.Errorf("unlink: %v, want EROFS", err)
		}
		if got := content(t, p); string(got) != "x" {
			t.Errorf("read on a read-only disk: %q", got)
		}
	})
	t.Run("fsync delay", func(t *testing.T) {
		f := mount(t)
		h, err := os.Create(filepath.Join(f.Dir(), "a"))
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		f.SetFaults(lazyfs.Faults{FsyncDelay: 50 * time.Millisecond})
		start := time.Now()
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Errorf("fsync took %v with a 50 ms delay", d)
		}
	})
}
