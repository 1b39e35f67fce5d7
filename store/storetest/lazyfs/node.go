package lazyfs

import (
	"context"
	"path/filepath"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const renameExchange = unix.RENAME_EXCHANGE

func renameat2(a, b string, flags uint) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, flags)
}

// node is a file or directory of the mount: the loopback's, with writes,
// sizes, syncs and directory changes routed through the FS.
type node struct {
	fs.LoopbackNode
	fs *FS
}

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeStatxer        = (*node)(nil)
)

func (n *node) ino() uint64 { return n.StableAttr().Ino }

// path is the node's path in the backing directory.
func (n *node) path() string { return filepath.Join(n.RootData.Path, n.Path(nil)) }

func (n *node) child(name string) string { return filepath.Join(n.path(), name) }

func (n *node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

func inoOf(in *fs.Inode) uint64 { return in.StableAttr().Ino }

// fixSizeLocked reports a cached file's size instead of the backing file's.
func (f *FS) fixSizeLocked(ino uint64, a *fuse.Attr) {
	if d := f.dirty[ino]; d != nil {
		a.Size = uint64(d.size)
		a.Blocks = (a.Size + 511) / 512
	}
}

// change checks that a directory change may happen now.
func (f *FS) changeLocked() syscall.Errno {
	if e := f.checkLocked(0); e != 0 {
		return e
	}
	if f.faults.ReadOnly {
		return f.checkLocked(syscall.EROFS)
	}
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return nil, e
	}
	if n.isRoot() && name == graveName {
		return nil, syscall.ENOENT
	}
	ch, e := n.LoopbackNode.Lookup(ctx, name, out)
	if e == 0 {
		f.fixSizeLocked(inoOf(ch), &out.Attr)
	}
	return ch, e
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return e
	}
	var st syscall.Stat_t
	var err error
	if h, ok := fh.(*file); ok {
		err = syscall.Fstat(h.fd, &st)
	} else {
		err = syscall.Lstat(n.path(), &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	out.Ino = n.ino()
	f.fixSizeLocked(n.ino(), &out.Attr)
	return 0
}

// Statx is refused so the kernel asks Getattr, which knows cached sizes.
func (n *node) Statx(context.Context, fs.FileHandle, uint32, uint32, *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// CopyFileRange is refused so the kernel copies through Read and Write.
func (n *node) CopyFileRange(context.Context, fs.FileHandle, uint64, *fs.Inode, fs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	if e := f.changeLocked(); e != 0 {
		f.mu.Unlock()
		return e
	}
	if sz, ok := in.GetSize(); ok {
		var d *dirtyFile
		var err error
		if h, ok := fh.(*file); ok {
			d, err = f.cacheLocked(n.ino(), h.fd)
		} else {
			d, err = f.cachePathLocked(n.ino(), n.path())
		}
		if err != nil {
			f.mu.Unlock()
			return fs.ToErrno(err)
		}
		d.truncate(int64(sz))
		in.Valid &^= fuse.FATTR_SIZE
	}
	f.mu.Unlock()
	if e := n.LoopbackNode.Setattr(ctx, nil, in, out); e != 0 { // mode, owner, times: straight through
		return e
	}
	return n.Getattr(ctx, fh, out)
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.checkLocked(0); e != 0 {
		return nil, 0, e
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY && f.faults.ReadOnly {
		return nil, 0, f.checkLocked(syscall.EROFS)
	}
	trunc := flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY
	flags &^= syscall.O_APPEND | fuse.FMODE_EXEC | syscall.O_TRUNC
	fd, err := syscall.Open(n.path(), int(flags)|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	if trunc {
		d, err := f.cacheLocked(n.ino(), fd)
		if err != nil {
			syscall.Close(fd)
			return nil, 0, fs.ToErrno(err)
		}
		d.truncate(0)
	}
	return &file{fd: fd, n: n}, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return nil, nil, 0, e
	}
	p := n.child(name)
	_, statErr := lstatErr(p)
	existed := statErr == nil
	trunc := flags&syscall.O_TRUNC != 0
	flags &^= syscall.O_APPEND | syscall.O_TRUNC
	fd, err := syscall.Open(p, int(flags)|syscall.O_CREAT|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, mode)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	if !existed {
		f.recordLocked(created("create", p, n.ino()))
	}
	ch := n.newChild(ctx, name, &st)
	if trunc && existed {
		d, err := f.cacheLocked(inoOf(ch), fd)
		if err != nil {
			syscall.Close(fd)
			return nil, nil, 0, fs.ToErrno(err)
		}
		d.truncate(0)
	}
	out.FromStat(&st)
	out.Ino = inoOf(ch)
	f.fixSizeLocked(inoOf(ch), &out.Attr)
	return ch, &file{fd: fd, n: ch.Operations().(*node)}, 0, 0
}

// newChild makes the inode for name, which now exists with attributes st.
func (n *node) newChild(ctx context.Context, name string, st *syscall.Stat_t) *fs.Inode {
	sa := fs.StableAttr{Mode: st.Mode, Ino: st.Ino}
	if n.RootData.Dev != st.Dev {
		swapped := (st.Dev << 32) | (st.Dev >> 32)
		root := (n.RootData.Dev << 32) | (n.RootData.Dev >> 32)
		sa.Ino = (swapped ^ root) ^ st.Ino
	}
	return n.NewInode(ctx, &node{LoopbackNode: fs.LoopbackNode{RootData: n.RootData}, fs: n.fs}, sa)
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return nil, e
	}
	ch, e := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if e == 0 {
		f.recordLocked(madeDir(n.child(name), n.ino()))
	}
	return ch, e
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return nil, e
	}
	ch, e := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if e == 0 {
		f.recordLocked(created("mknod", n.child(name), n.ino()))
	}
	return ch, e
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return nil, e
	}
	ch, e := n.LoopbackNode.Symlink(ctx, target, name, out)
	if e == 0 {
		f.recordLocked(created("symlink", n.child(name), n.ino()))
	}
	return ch, e
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return nil, e
	}
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	p := n.child(name)
	if err := syscall.Link(t.path(), p); err != nil {
		return nil, fs.ToErrno(err)
	}
	f.recordLocked(created("link", p, n.ino()))
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	out.FromStat(&st)
	f.fixSizeLocked(t.ino(), &out.Attr)
	return t.EmbeddedInode(), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, "unlink")
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno { return n.remove(name, "rmdir") }

// remove moves name into the grave, where it stays until n is synced.
func (n *node) remove(name, what string) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return e
	}
	p := n.child(name)
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	isDir := st.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if isDir != (what == "rmdir") {
		if isDir {
			return syscall.EISDIR
		}
		return syscall.ENOTDIR
	}
	if isDir {
		if ents, err := readdirnames(p); err != nil {
			return fs.ToErrno(err)
		} else if len(ents) > 0 {
			return syscall.ENOTEMPTY
		}
	}
	g := f.graveLocked()
	if err := syscall.Rename(p, g); err != nil {
		return fs.ToErrno(err)
	}
	f.recordLocked(buried(what, p, g, n.ino()))
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.changeLocked(); e != 0 {
		return e
	}
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	from, to := n.child(name), np.child(newName)
	dirs := []uint64{n.ino(), np.ino()}
	switch flags {
	case unix.RENAME_EXCHANGE:
		if err := renameat2(from, to, unix.RENAME_EXCHANGE); err != nil {
			return fs.ToErrno(err)
		}
		f.recordLocked(exchanged(from, to, dirs...))
		return 0
	case 0, unix.RENAME_NOREPLACE:
	default:
		return syscall.EINVAL
	}
	if _, err := lstatErr(from); err != nil {
		return fs.ToErrno(err)
	}
	var grave string
	if st, err := lstatErr(to); err == nil {
		if flags == unix.RENAME_NOREPLACE {
			return syscall.EEXIST
		}
		// Keep the replaced entry in the grave: a hard link for a file,
		// so the rename itself stays atomic; a directory (empty, or the
		// rename fails) is moved there first.
		grave = f.graveLocked()
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			err = syscall.Rename(to, grave)
		} else {
			err = syscall.Link(to, grave)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	if err := syscall.Rename(from, to); err != nil {
		if grave != "" {
			syscall.Rename(grave, to)
		}
		return fs.ToErrno(err)
	}
	if grave != "" {
		op := buried("replace", to, grave, dirs...)
		f.recordLocked(op)
	}
	f.recordLocked(renamed(from, to, dirs...))
	return 0
}

// Fsync of a directory makes its journaled changes durable; of a file, its
// cached data.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if n.IsDir() {
		return n.fs.fsyncDir(n.ino())
	}
	if h, ok := fh.(*file); ok {
		return h.Fsync(ctx, flags)
	}
	return n.fs.fsyncFile(n.ino(), n.Path(nil))
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	n.fs.mu.Lock()
	e := n.fs.checkLocked(0)
	n.fs.mu.Unlock()
	if e != 0 {
		return nil, e
	}
	ents, err := readdirEntries(n.path(), n.isRoot())
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fs.NewListDirStream(ents), 0
}

// OpendirHandle lists the directory at open; FsyncDir then reaches Fsync.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	ds, e := n.Readdir(ctx)
	if e != 0 {
		return nil, 0, e
	}
	return ds.(fs.FileHandle), 0, 0
}
