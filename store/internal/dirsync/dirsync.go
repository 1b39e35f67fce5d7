// Package dirsync makes a directory's entries durable: a new file's data
// survives a power cut only once the directory that names it is synced too
// (POSIX fsync(2): "fsync() on the file does not necessarily ensure that
// the entry in the directory containing the file has also reached disk";
// ext4's data=ordered journal happens to commit it, other file systems and
// ext4 with other options do not).
//
// Badger syncs its directory when it writes a manifest or a table, but not
// when it starts a new value-log or write-ahead-log file, and it creates
// the directory itself without syncing its parent. A Watch closes that gap
// at the cost of one non-blocking read per commit: it syncs the directory
// only when an entry was created, renamed or removed since the last sync.
package dirsync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Syncer makes the directory changes made before a call to Sync durable.
type Syncer interface {
	// Sync syncs the directory if an entry in it changed since the last
	// Sync (or since the Watch began). It is called after every commit,
	// before the commit is acknowledged.
	Sync() error
	Close() error
}

// Dir fsyncs the directory at path.
func Dir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", path, err)
	}
	return nil
}

// Existing is the deepest existing directory at or above path: what
// MkdirAll(path) will create entries in.
func Existing(path string) string {
	p := filepath.Clean(path)
	for {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

// Chain fsyncs dir and every directory above it up to and including top
// (an ancestor of dir, or dir itself), deepest first, so that a directory
// tree created under top survives a power cut.
func Chain(dir, top string) error {
	dir, top = filepath.Clean(dir), filepath.Clean(top)
	var errs []error
	for p := dir; ; {
		errs = append(errs, Dir(p))
		if p == top {
			break
		}
		parent := filepath.Dir(p)
		if parent == p { // top was not an ancestor: stop at the root
			break
		}
		p = parent
	}
	return errors.Join(errs...)
}
