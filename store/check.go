package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

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
		return fmt.Errorf("%w: %d tables but no MANIFEST: %v", errDamaged, len(names), err)
	}
	m, _, err := replayManifest(f, bo)
	f.Close()
	if err != nil {
		return fmt.Errorf("%w: MANIFEST: %v", errDamaged, err)
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
			return fmt.Errorf("%w: table %s: %v", errDamaged, filepath.Base(name), err)
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

// verifyLoop checks every table block's checksum once after open, in the
// background (Options.Verify). Damage is logged at error level and reported
// in Stats.Damaged and the outpost_store_damaged gauge; the readable records
// keep flowing.
func (q *Queue) verifyLoop() {
	defer q.bg.Done()
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil { // Badger dereferences a nil block on some damage
				err = fmt.Errorf("%w: checksum pass panicked: %v", errDamaged, p)
			}
		}()
		return q.db.VerifyChecksum()
	}()
	if err == nil || q.closed.Load() || errors.Is(err, badger.ErrDBClosed) {
		return
	}
	q.log.Error("store: damaged blocks found; records in them cannot be sent", "error", err)
	q.mu.Lock()
	q.damaged = err.Error()
	q.mu.Unlock()
	q.met.damaged.Set(1)
}

// The clean-close mark: Close writes the last sequence numbers to
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
		return nil, fmt.Errorf("%w: clean-close mark %q: %v", errDamaged, b, err)
	}
	return &c, nil
}

func writeClean(dir string, m meta) error {
	b, _ := json.Marshal(cleanMark{NextSeq: m.NextSeq, CmdSeq: m.CmdSeq, Tables: stampTables(dir)})
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
	return nil
}

func checkClean(dir string, m meta, readOnly bool) error {
	path := filepath.Join(dir, cleanFile)
	c, err := readClean(dir)
	if c == nil || err != nil {
		return err
	}
	if c.NextSeq != m.NextSeq || c.CmdSeq != m.CmdSeq {
		return fmt.Errorf("%w: closed cleanly at seq %d (command %d) but recovered seq %d (command %d): data lost",
			errDamaged, c.NextSeq, c.CmdSeq, m.NextSeq, m.CmdSeq)
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
