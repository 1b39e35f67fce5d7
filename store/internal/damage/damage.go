// Package damage finds damage in a store's files before and while Badger
// opens them, so that a damaged store is an error the store can quarantine
// rather than a panic on one of Badger's goroutines (a crash loop). It also
// keeps the clean-close mark, which tells data lost to a damaged MANIFEST
// or write-ahead log from a normal crash recovery, and moves a damaged
// store aside. Every damage it reports wraps ErrDamaged.
package damage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrDamaged marks open failures that mean the files are damaged.
var ErrDamaged = errors.New("store: damaged")

// Is tells damage (quarantine) from environmental failures (return).
// Badger flattens most errors to text ("... err: ..."), so the environmental
// ones are recognised by their text too.
func Is(err error) bool {
	if errors.Is(err, ErrDamaged) {
		return true
	}
	for _, e := range []error{os.ErrPermission, syscall.EWOULDBLOCK, syscall.ENOSPC, syscall.EROFS,
		syscall.EIO, syscall.ENOMEM, syscall.EMFILE, syscall.ENFILE, syscall.EACCES} {
		if errors.Is(err, e) || strings.Contains(err.Error(), e.Error()) {
			return false
		}
	}
	if strings.Contains(err.Error(), "Cannot acquire directory lock") {
		return false
	}
	// Badger reports damage as plain errors (checksum mismatch, bad
	// manifest, truncated table); anything else from Open is damage.
	return true
}

// Open opens Badger with bo after precheck has found no damage in bo.Dir,
// turning a panic on damaged files into an error wrapping ErrDamaged.
func Open(bo badger.Options) (db *badger.DB, err error) {
	if err := precheck(bo.Dir, bo); err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: badger open panicked: %v", ErrDamaged, p)
		}
	}()
	db, err = badger.Open(bo)
	if err != nil {
		if db != nil { // some failures return a half-open DB with goroutines running
			func() {
				defer func() { recover() }()
				db.Close()
			}()
		}
		return nil, fmt.Errorf("store: open %s: %w", bo.Dir, err)
	}
	return db, nil
}

// Verify checks every block's checksum (badger.DB.VerifyChecksum), turning
// the panic Badger raises on some damage into an error wrapping ErrDamaged.
func Verify(db *badger.DB) (err error) {
	defer func() {
		if p := recover(); p != nil { // Badger dereferences a nil block on some damage
			err = fmt.Errorf("%w: checksum pass panicked: %v", ErrDamaged, p)
		}
	}()
	return db.VerifyChecksum()
}

// Quarantine moves the store directory dir to
// dataDir/quarantine-<UTC timestamp> (with a -N suffix when that exists)
// and returns where it went.
func Quarantine(dataDir, dir string) (string, error) {
	base := filepath.Join(dataDir, "quarantine-"+time.Now().UTC().Format("20060102T150405Z"))
	qdir := base
	for i := 1; ; i++ {
		if _, err := os.Lstat(qdir); errors.Is(err, os.ErrNotExist) {
			break
		}
		qdir = fmt.Sprintf("%s-%d", base, i)
	}
	return qdir, os.Rename(dir, qdir)
}

// precheck looks for damage Badger would not report as an error: it opens
// every table file the MANIFEST lists the way Badger will, but on this
// goroutine, so that a damaged table is an error here instead of a panic on
// one of Badger's table-opening goroutines (which no recover can catch: a
// crash loop). Each table's index (checksummed) and first and last blocks
// are read; after a clean close, every block of a table whose size or
// modification time changed since (see cleanMark) is verified too. Other
// damage inside a table is found only when read (Options.Verify).
func precheck(dir string, bo badger.Options) error {
	if err := removeEmptyMemtables(dir); err != nil {
		return err
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil || len(names) == 0 {
		return err
	}
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if err != nil {
		return fmt.Errorf("%w: %d tables but no MANIFEST: %v", ErrDamaged, len(names), err)
	}
	m, _, err := replayManifest(f, bo)
	f.Close()
	if err != nil {
		return fmt.Errorf("%w: MANIFEST: %v", ErrDamaged, err)
	}
	clean, err := readClean(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		id, ok := table.ParseFileID(filepath.Base(name))
		if !ok {
			continue
		}
		tm, listed := m.Tables[id]
		if !listed {
			// Badger deletes it. After a crash that is normal (a flush or
			// compaction that had not reached the MANIFEST; concurrent ones
			// finish out of id order); after a clean close, the clean-close
			// mark catches the loss.
			continue
		}
		full := false // verify every block, not just the index and ends
		if clean != nil {
			st, stamped := clean.Tables[filepath.Base(name)]
			fi, err := os.Stat(name)
			full = !stamped || err != nil || fi.Size() != st.Size || fi.ModTime().UnixNano() != st.Mtime
		}
		if err := checkTable(name, tm.Compression, full); err != nil {
			return fmt.Errorf("%w: table %s: %v", ErrDamaged, filepath.Base(name), err)
		}
	}
	return nil
}

// removeEmptyMemtables deletes write-ahead (.mem) files shorter than their
// 20-byte header. A kill right after Badger created one, before it sized
// it, leaves it empty; Badger v4.9.6 then refuses to open the database
// ("while opening fid: N err: Create a new file": openMemTables treats its
// own z.NewFile sentinel as an error). Such a file never held a record.
func removeEmptyMemtables(dir string) error {
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	removed := false
	for _, name := range mems {
		fi, err := os.Stat(name)
		if err != nil || fi.Size() >= 20 {
			continue
		}
		if err := os.Remove(name); err != nil {
			return fmt.Errorf("store: remove empty write-ahead log: %w", err)
		}
		removed = true
	}
	if removed {
		return syncDir(dir)
	}
	return nil
}

func replayManifest(f *os.File, bo badger.Options) (m badger.Manifest, off int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return badger.ReplayManifestFile(f, bo.ExternalMagicVersion, bo)
}

// checkTable opens a table file as Badger will; with full it also checks
// every block's checksum.
func checkTable(name string, c options.CompressionType, full bool) (err error) {
	mf, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	opened := false
	defer func() {
		if p := recover(); p != nil {
			msg := fmt.Sprint(p)
			if i := strings.IndexByte(msg, '\n'); i >= 0 {
				msg = msg[:i]
			}
			err = fmt.Errorf("panic while opening: %s", strings.TrimSpace(msg))
			if !opened {
				mf.Close(-1)
			}
		}
	}()
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.OnBlockRead, BlockSize: 4 << 10, Compression: c})
	if err != nil {
		return err // OpenTable closed mf
	}
	opened = true
	if full {
		if err := t.VerifyChecksum(); err != nil {
			t.MmapFile.Close(-1)
			return fmt.Errorf("changed while the store was closed, and damaged: %w", err)
		}
	}
	return t.MmapFile.Close(-1)
}

// The clean-close mark: the store's Close writes the last sequence numbers to
// queue/CLEAN; Open compares them with what Badger recovered and removes the
// mark before writing anything. A store that was closed cleanly and now
// remembers less (Badger drops what a damaged MANIFEST no longer lists, and
// a damaged write-ahead log is cut at the damage) has lost acknowledged
// data: that is damage, and the store is quarantined rather than silently
// running on with a hole. After a crash there is no mark and Badger's
// recovery is trusted.
const cleanFile = "CLEAN"

type cleanMark struct {
	NextSeq uint64 `json:"next_seq"`
	CmdSeq  uint64 `json:"cmd_seq"`
	// Tables stamps every table file at close. Badger never changes a
	// table once written, so a table whose size or modification time
	// differs at the next open was written to while the gateway was
	// stopped: precheck then verifies every block of it.
	Tables map[string]tableStamp `json:"tables,omitempty"`
}

type tableStamp struct {
	Size  int64 `json:"size"`
	Mtime int64 `json:"mtime_ns"`
}

// stampTables stamps the table files in dir.
func stampTables(dir string) map[string]tableStamp {
	names, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	stamps := make(map[string]tableStamp, len(names))
	for _, name := range names {
		if fi, err := os.Stat(name); err == nil {
			stamps[filepath.Base(name)] = tableStamp{fi.Size(), fi.ModTime().UnixNano()}
		}
	}
	return stamps
}

// readClean returns the clean-close mark, or nil after a crash.
func readClean(dir string) (*cleanMark, error) {
	b, err := os.ReadFile(filepath.Join(dir, cleanFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	var c cleanMark
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: clean-close mark %q: %v", ErrDamaged, b, err)
	}
	return &c, nil
}

// WriteClean writes the clean-close mark into dir: the store's last outbox
// and command sequence numbers and a stamp of every table file. The store
// calls it after closing Badger.
func WriteClean(dir string, nextSeq, cmdSeq uint64) error {
	b, _ := json.Marshal(cleanMark{NextSeq: nextSeq, CmdSeq: cmdSeq, Tables: stampTables(dir)})
	f, err := os.Create(filepath.Join(dir, cleanFile))
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(dir)
}

// CheckClean compares the clean-close mark in dir, if any, with the
// sequence numbers Badger recovered: less than the mark is damage. Unless
// readOnly it then removes the mark, before the store writes anything.
func CheckClean(dir string, nextSeq, cmdSeq uint64, readOnly bool) error {
	path := filepath.Join(dir, cleanFile)
	c, err := readClean(dir)
	if c == nil || err != nil {
		return err
	}
	if c.NextSeq != nextSeq || c.CmdSeq != cmdSeq {
		return fmt.Errorf("%w: closed cleanly at seq %d (command %d) but recovered seq %d (command %d): data lost",
			ErrDamaged, c.NextSeq, c.CmdSeq, nextSeq, cmdSeq)
	}
	if readOnly {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
