package lazyfs

import (
	"os"
	"syscall"
)

// entryOp is a directory change applied to the backing directory but not
// yet durable: an fsync of one of its directories makes it durable
// (commit), a cut undoes it.
type entryOp struct {
	what   string
	dirs   []uint64 // inodes of the directories whose fsync makes it durable
	undo   func() error
	commit func() error // nil: nothing to do
}

func (op *entryOp) touches(dir uint64) bool {
	for _, d := range op.dirs {
		if d == dir {
			return true
		}
	}
	return false
}

func (op *entryOp) doCommit() error {
	if op.commit == nil {
		return nil
	}
	return op.commit()
}

// recordLocked journals op.
func (f *FS) recordLocked(op *entryOp) { f.journal = append(f.journal, op) }

// syncDirLocked makes every journaled change to dir durable.
func (f *FS) syncDirLocked(dir uint64) error {
	var err error
	kept := f.journal[:0]
	for _, op := range f.journal {
		if op.touches(dir) {
			if e := op.doCommit(); e != nil && err == nil {
				err = e
			}
			continue
		}
		kept = append(kept, op)
	}
	clear(f.journal[len(kept):])
	f.journal = kept
	return err
}

// created journals a new entry at path (file, symlink, node or hard link):
// undone by removing it.
func created(what, path string, dir uint64) *entryOp {
	return &entryOp{what: what + " " + path, dirs: []uint64{dir}, undo: func() error { return syscall.Unlink(path) }}
}

// madeDir journals a new directory: undone by removing it and all in it.
func madeDir(path string, dir uint64) *entryOp {
	return &entryOp{what: "mkdir " + path, dirs: []uint64{dir}, undo: func() error { return os.RemoveAll(path) }}
}

// buried journals an entry moved from path into the grave at grave:
// undone by moving it back, made durable by deleting it.
func buried(what, path, grave string, dirs ...uint64) *entryOp {
	return &entryOp{what: what + " " + path, dirs: dirs,
		undo:   func() error { return syscall.Rename(grave, path) },
		commit: func() error { return os.RemoveAll(grave) }}
}

// renamed journals a rename from → to that replaced nothing: undone by
// renaming back.
func renamed(from, to string, dirs ...uint64) *entryOp {
	return &entryOp{what: "rename " + from + " " + to, dirs: dirs, undo: func() error { return syscall.Rename(to, from) }}
}

// exchanged journals a RENAME_EXCHANGE: undone by exchanging again.
func exchanged(a, b string, dirs ...uint64) *entryOp {
	return &entryOp{what: "exchange " + a + " " + b, dirs: dirs, undo: func() error { return renameat2(a, b, renameExchange) }}
}
