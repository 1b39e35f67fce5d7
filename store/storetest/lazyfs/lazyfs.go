// Package lazyfs is a test file system that can lose power, in the manner
// of Jepsen's LazyFS. It is a FUSE passthrough over a backing directory that
// keeps what its users write in its own cache until they sync it: a file's
// data reaches the backing file on fsync or fdatasync (msync of a mapped
// file is one), and a directory's entries (create, unlink, rename, mkdir,
// rmdir, link, symlink) become durable when the directory is fsynced.
// Before that the backing directory still holds the previous, synced state;
// entry changes are applied to it at once but journaled, and undone on a
// cut.
//
// Cut is the power cut: everything not synced is dropped, optionally
// keeping a torn prefix of the last unsynced write, and from then on every
// operation on the mount fails with EIO. The backing directory then holds
// exactly what was synced; Remount (after the processes using the mount are
// gone) serves it again.
//
// SetFaults injects a failing disk: EIO on write, EIO on fsync, ENOSPC after
// N bytes, a read-only file system (EROFS), and a delay on every fsync (a
// slow SD card).
//
// File attributes other than size (mode, owner, times, xattrs) pass straight
// through and are not subject to loss. The file system uses
// github.com/hanwen/go-fuse/v2 and mounts with mount(2) directly, so it
// needs root and /dev/fuse. go-fuse is the one dependency added for it:
// the FUSE wire protocol, its loopback node and a mount without fusermount
// would be thousands of hand-written lines, and go-fuse is maintained and
// used by real file systems (gocryptfs, rclone's mount among them); only
// tests import this package, so the gateway binary does not carry it.
package lazyfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// graveName is the hidden directory in the backing root that holds what
// was unlinked or replaced but is not yet durably gone.
const graveName = ".lazyfs-grave"

// Faults is a failing disk. The zero value is a healthy one.
type Faults struct {
	WriteEIO bool // every write fails with EIO
	FsyncEIO bool // every fsync (file or directory) fails with EIO; a file's unsynced data is lost, as on Linux
	// FsyncEIOSuffix, with FsyncEIO, fails only the fsyncs of files whose
	// name ends with it (directories are not failed then): one file of
	// several written together fails to sync.
	FsyncEIOSuffix string
	// ENOSPC, when set, lets writes store SpaceLeft more bytes (counted
	// from SetFaults) and fails the rest with ENOSPC.
	ENOSPC     bool
	SpaceLeft  int64
	ReadOnly   bool          // every change fails with EROFS, as after a read-only remount
	FsyncDelay time.Duration // every fsync takes this long first
}

// CutOptions says what a power cut keeps.
type CutOptions struct {
	// TornBytes, when positive, keeps this many bytes (at most all but one)
	// of the last unsynced write: it reached the disk, the rest did not.
	TornBytes int
}

// Stats are counters since Mount.
type Stats struct {
	Writes, WriteBytes int64
	Fsyncs, DirFsyncs  int64
	Faults             int64 // operations failed by SetFaults
	Cuts               int64
	DroppedBytes       int64 // cached bytes (whole pages) dropped by cuts
	UndoneOps          int64 // directory changes undone by cuts
	TornBytes          int64 // bytes of torn writes kept by cuts
}

// Options are a mount's durability rules.
type Options struct {
	// Ordered makes a file's fsync also make every journaled directory
	// change durable, as ext4 (data=ordered) does: one journal commit
	// carries all of them. Without it the rules are POSIX's: only an fsync
	// of the directory makes its changes durable.
	Ordered bool
}

// FS is a mounted lazyfs.
type FS struct {
	backing, mnt string
	opts         Options

	mu      sync.Mutex
	server  *fuse.Server
	off     bool                  // power is cut
	dirty   map[uint64]*dirtyFile // by inode
	journal []*entryOp
	last    *lastWrite
	faults  Faults
	stats   Stats
	graveN  int
	undone  []string // what the last cut undid
}

// lastWrite is the most recent write not yet synced, for a torn cut.
type lastWrite struct {
	ino  uint64
	off  int64
	data []byte
}

// Mount serves backing at mnt (both existing directories) and returns once
// the mount is up.
func Mount(backing, mnt string, o Options) (*FS, error) {
	f := &FS{backing: backing, mnt: mnt, opts: o}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *FS) mount() error {
	if err := os.RemoveAll(filepath.Join(f.backing, graveName)); err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	if err := os.Mkdir(filepath.Join(f.backing, graveName), 0o700); err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(f.backing, &st); err != nil {
		return fmt.Errorf("lazyfs: %w", err)
	}
	root := &fs.LoopbackRoot{Path: f.backing, Dev: uint64(st.Dev)}
	root.NewNode = func(r *fs.LoopbackRoot, _ *fs.Inode, _ string, _ *syscall.Stat_t) fs.InodeEmbedder {
		return &node{LoopbackNode: fs.LoopbackNode{RootData: r}, fs: f}
	}
	root.RootNode = root.NewNode(root, nil, "", &st)
	sec := time.Second
	srv, err := fs.Mount(f.mnt, root.RootNode, &fs.Options{
		EntryTimeout: &sec, AttrTimeout: &sec,
		MountOptions: fuse.MountOptions{DirectMountStrict: true, FsName: f.backing, Name: "lazyfs",
			MaxWrite: 1 << 20},
	})
	if err != nil {
		return fmt.Errorf("lazyfs: mount %s on %s: %w", f.backing, f.mnt, err)
	}
	f.mu.Lock()
	f.server, f.off, f.dirty, f.journal, f.last = srv, false, map[uint64]*dirtyFile{}, nil, nil
	f.mu.Unlock()
	return nil
}

// Dir returns the mount point.
func (f *FS) Dir() string { return f.mnt }

// Backing returns the backing directory.
func (f *FS) Backing() string { return f.backing }

// SetFaults replaces the injected faults; Faults{} heals the disk.
func (f *FS) SetFaults(x Faults) {
	f.mu.Lock()
	f.faults = x
	f.mu.Unlock()
}

// Stats returns the counters.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Undone lists the directory changes the last cut undid, latest first.
func (f *FS) Undone() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.undone)
}

// Cut loses power: unsynced data and directory changes are dropped (keeping
// a torn write if o asks for one), the backing directory is left holding
// what was synced, and the mount fails every operation with EIO until
// Remount. An operation in progress finishes first: an fsync that returned
// before Cut did is durable.
func (f *FS) Cut(o CutOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.off {
		return nil
	}
	f.off = true
	f.stats.Cuts++
	var errs []error
	if w := f.last; w != nil && o.TornBytes > 0 {
		if d := f.dirty[w.ino]; d != nil {
			k := min(o.TornBytes, len(w.data)-1)
			if k > 0 {
				if err := pwriteAll(d.fd, w.data[:k], w.off); err != nil {
					errs = append(errs, fmt.Errorf("torn write: %w", err))
				}
				f.stats.TornBytes += int64(k)
			}
		}
	}
	for ino, d := range f.dirty {
		f.stats.DroppedBytes += d.bytes()
		d.close()
		delete(f.dirty, ino)
	}
	f.last = nil
	f.undone = f.undone[:0]
	for i := len(f.journal) - 1; i >= 0; i-- {
		f.stats.UndoneOps++
		f.undone = append(f.undone, f.journal[i].what)
		if err := f.journal[i].undo(); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("undo %s: %w", f.journal[i].what, err))
		}
	}
	f.journal = nil
	if err := os.RemoveAll(filepath.Join(f.backing, graveName)); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lazyfs: cut: %w", err)
	}
	return nil
}

// Remount unmounts and mounts the backing directory again, with an empty
// cache and power on; after a Cut it serves exactly what was synced. Every
// process that had files open on the mount must be gone.
func (f *FS) Remount() error {
	if err := f.unmount(); err != nil {
		return err
	}
	return f.mount()
}

// Unmount syncs everything (a clean shutdown: nothing is lost unless power
// was cut) and unmounts.
func (f *FS) Unmount() error {
	f.mu.Lock()
	var errs []error
	if !f.off {
		for ino, d := range f.dirty {
			errs = append(errs, d.flush())
			d.close()
			delete(f.dirty, ino)
		}
		for _, op := range f.journal {
			errs = append(errs, op.doCommit())
		}
		f.journal = nil
		f.off = true
	}
	f.mu.Unlock()
	errs = append(errs, f.unmount(), os.RemoveAll(filepath.Join(f.backing, graveName)))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lazyfs: unmount: %w", err)
	}
	return nil
}

func (f *FS) unmount() error {
	f.mu.Lock()
	f.off = true
	srv := f.server
	f.server = nil
	f.mu.Unlock()
	if srv == nil {
		return nil
	}
	var err error
	for range 100 { // a killed process's descriptors close a moment after it is reaped
		if err = srv.Unmount(); err == nil {
			srv.Wait()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("lazyfs: unmount %s: %w", f.mnt, err)
}

// graveLocked returns a fresh path in the grave for something unlinked.
func (f *FS) graveLocked() string {
	f.graveN++
	return filepath.Join(f.backing, graveName, fmt.Sprintf("%d", f.graveN))
}

// check returns EIO after a cut and counts a fault when fail is set.
func (f *FS) checkLocked(fail syscall.Errno) syscall.Errno {
	if f.off {
		return syscall.EIO
	}
	if fail != 0 {
		f.stats.Faults++
	}
	return fail
}
