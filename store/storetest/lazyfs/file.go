package lazyfs

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// file is an open file of the mount. Reads and writes go through the FS's
// cache; the descriptor on the backing file serves reads of what is not
// cached and attributes.
type file struct {
	fd int
	n  *node
}

var (
	_ fs.FileReader    = (*file)(nil)
	_ fs.FileWriter    = (*file)(nil)
	_ fs.FileFsyncer   = (*file)(nil)
	_ fs.FileFlusher   = (*file)(nil)
	_ fs.FileReleaser  = (*file)(nil)
	_ fs.FileGetattrer = (*file)(nil)
	_ fs.FileAllocater = (*file)(nil)
)

// cacheLocked returns ino's cache, starting it on a read-write descriptor
// reopened from fd (which may be read-only).
func (f *FS) cacheLocked(ino uint64, fd int) (*dirtyFile, error) {
	if d := f.dirty[ino]; d != nil {
		return d, nil
	}
	return f.cachePathLocked(ino, fmt.Sprintf("/proc/self/fd/%d", fd))
}

// cachePathLocked returns ino's cache, starting it on the backing file at
// path.
func (f *FS) cachePathLocked(ino uint64, path string) (*dirtyFile, error) {
	if d := f.dirty[ino]; d != nil {
		return d, nil
	}
	rw, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	d, err := newDirtyFile(rw)
	if err != nil {
		return nil, err
	}
	f.dirty[ino] = d
	return d, nil
}

func (h *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := h.n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return nil, e
	}
	if d := f.dirty[h.n.ino()]; d != nil {
		n, err := d.read(buf, off)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		return fuse.ReadResultData(buf[:n]), 0
	}
	n, err := syscall.Pread(h.fd, buf, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(buf[:n]), 0
}

func (h *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f := h.n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return 0, e
	}
	switch x := &f.faults; {
	case x.ReadOnly:
		return 0, f.checkLocked(syscall.EROFS)
	case x.WriteEIO:
		return 0, f.checkLocked(syscall.EIO)
	case x.ENOSPC && x.SpaceLeft <= 0:
		return 0, f.checkLocked(syscall.ENOSPC)
	case x.ENOSPC && x.SpaceLeft < int64(len(data)):
		data = data[:x.SpaceLeft] // a short write; the rest fails next
	}
	d, err := f.cacheLocked(h.n.ino(), h.fd)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	if err := d.write(data, off); err != nil {
		return 0, fs.ToErrno(err)
	}
	if f.faults.ENOSPC {
		f.faults.SpaceLeft -= int64(len(data))
	}
	f.stats.Writes++
	f.stats.WriteBytes += int64(len(data))
	f.last = &lastWrite{ino: h.n.ino(), off: off, data: append([]byte(nil), data...)}
	return uint32(len(data)), 0
}

func (h *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.n.fs.fsyncFile(h.n.ino(), h.n.Path(nil))
}

// fsyncFile writes ino's cache to its backing file and syncs it. Under an
// injected EIO the cache is dropped unwritten, as Linux marks pages clean
// after a failed writeback: a retry succeeds without the lost data.
func (f *FS) fsyncFile(ino uint64, path string) syscall.Errno {
	f.delay()
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return e
	}
	f.stats.Fsyncs++
	d := f.dirty[ino]
	switch {
	case f.faults.FsyncEIO && strings.HasSuffix(path, f.faults.FsyncEIOSuffix):
		if d != nil {
			f.stats.DroppedBytes += d.bytes()
			f.forgetLocked(ino)
		}
		return f.checkLocked(syscall.EIO)
	case f.faults.ReadOnly && d != nil:
		return f.checkLocked(syscall.EROFS)
	}
	var err error
	if d != nil {
		err = d.flush()
		f.forgetLocked(ino)
	}
	if err == nil && f.opts.Ordered {
		for _, op := range f.journal {
			if e := op.doCommit(); e != nil && err == nil {
				err = e
			}
		}
		clear(f.journal)
		f.journal = f.journal[:0]
	}
	return fs.ToErrno(err)
}

// forgetLocked drops ino's cache.
func (f *FS) forgetLocked(ino uint64) {
	if d := f.dirty[ino]; d != nil {
		d.close()
		delete(f.dirty, ino)
	}
	if f.last != nil && f.last.ino == ino {
		f.last = nil
	}
}

// fsyncDir makes the journaled changes of directory ino durable.
func (f *FS) fsyncDir(ino uint64) syscall.Errno {
	f.delay()
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return e
	}
	f.stats.DirFsyncs++
	if f.faults.FsyncEIO && f.faults.FsyncEIOSuffix == "" {
		return f.checkLocked(syscall.EIO)
	}
	return fs.ToErrno(f.syncDirLocked(ino))
}

func (f *FS) delay() {
	f.mu.Lock()
	d := f.faults.FsyncDelay
	f.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// Flush (at close) syncs nothing.
func (h *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (h *file) Release(ctx context.Context) syscall.Errno {
	return fs.ToErrno(syscall.Close(h.fd))
}

func (h *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.n.Getattr(ctx, h, out)
}

// Allocate grows the file (mode 0); other modes are not supported.
func (h *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if mode != 0 {
		return syscall.EOPNOTSUPP
	}
	f := h.n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return e
	}
	d, err := f.cacheLocked(h.n.ino(), h.fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	if end := int64(off + size); end > d.size {
		d.truncate(end)
	}
	return 0
}

func lstatErr(p string) (*syscall.Stat_t, error) {
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func readdirnames(p string) ([]string, error) {
	d, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// readdirEntries lists directory p, without the grave when p is the root.
func readdirEntries(p string, root bool) ([]fuse.DirEntry, error) {
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	out := make([]fuse.DirEntry, 0, len(ents)+2)
	for _, e := range ents {
		if root && e.Name() == graveName {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p+"/"+e.Name(), &st); err != nil {
			continue // gone meanwhile
		}
		out = append(out, fuse.DirEntry{Name: e.Name(), Mode: st.Mode, Ino: st.Ino})
	}
	return out, nil
}
