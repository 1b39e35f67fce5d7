package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/damage"
	"github.com/outpost-iot/outpost/store/internal/dirsync"
	"github.com/outpost-iot/outpost/store/internal/metrics"
)

// Queue is the durable store. All methods are safe for concurrent use.
type Queue struct {
	opt         Options
	log         *slog.Logger
	dir         string // dataDir/queue
	db          *badger.DB
	readOnly    bool
	quarantined string
	snapshot    string // OpenReadOnly's recovered copy, removed by Close

	dbmu sync.RWMutex // read-held in view, write-held by Close around db.Close

	// writer side (see writer.go)
	wmu        sync.Mutex
	ops        []*op
	wake       chan struct{} // cap 1
	closing    chan struct{} // closed by Close
	closed     atomic.Bool
	bg         sync.WaitGroup
	closeErr   error
	once       sync.Once
	m          meta                  // owned by the writer goroutine, like the next two
	expect     int                   // ops in the last round (see linger)
	lastCommit time.Duration         // duration of the last commit
	sizeAt     time.Time             // when tables was measured (diskLow)
	tables     int64                 // size of the table files
	tablesNow  atomic.Int64          // tables, for readers outside the writer
	low        atomic.Pointer[error] // why appends are refused for lack of space (DiskLow)

	// lease side, guarded by mu (see outbox.go and park.go)
	mu             sync.Mutex
	cls            [msg.NumPriorities]classState
	liveFrom       uint64                    // LeaseFrom's from
	liveCursor     [msg.NumPriorities]uint64 // LeaseFrom's cursors
	leased         map[uint64]ref
	pendingDel     map[uint64]msg.Priority
	pendingDelPeak int
	progress       chan struct{} // closed and replaced after every committed batch
	avail          chan struct{} // closed and replaced when records may be leasable
	pub            meta          // last committed meta
	damaged        string        // what verifyLoop found, or the commit failure
	failed         error         // set by fail: every write fails with it

	// trimmer (see trim.go)
	trimAsk      chan struct{}  // cap 1; nil when trimming is off
	trimDir      string         // dir, absolute, symlinks resolved
	dirs         dirsync.Syncer // nil when read-only; synced after every commit
	trimOff      atomic.Bool    // the kernel cannot page out
	touchedBytes atomic.Int64   // written or read since the last trim

	gcAsk     chan struct{} // cap 1: run value-log GC (see gcLoop)
	gcmu      sync.Mutex    // held by the writer's commits and by value-log GC: Badger's GC reads the memtable's version unsynchronised
	deletedGC int64         // bytes deleted since the last gcAsk; writer goroutine

	met *metrics.Set
}

// Quarantined returns the directory a corrupt store was moved to by Open,
// or "".
func (q *Queue) Quarantined() string { return q.quarantined }

// Damaged is "" or what is wrong with the open store: the background
// checksum pass (Options.Verify) found damaged blocks, or a commit (a write
// or a sync) failed, after which the store acknowledges nothing more (every
// write fails with ErrFailed) until it is closed and opened again. Unlike
// Stats it reads nothing from disk.
func (q *Queue) Damaged() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.damaged
}

// Open opens (creating) the store under dataDir/queue. A store Badger cannot
// open because its files are damaged is renamed to
// dataDir/quarantine-<UTC timestamp> and a fresh one is opened: Open logs it
// at error level and Quarantined reports it, so the gateway keeps running.
// Errors that are not damage (another process holds the store, permissions,
// no space) are returned and nothing is moved.
func Open(dataDir string, opt Options) (*Queue, error) {
	opt.fill()
	if dataDir == "" {
		return nil, errors.New("store: empty data dir")
	}
	top := dirsync.Existing(dataDir)
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	dir := filepath.Join(dataDir, "queue")
	q, err := open(dir, opt, false, false)
	if err == nil {
		return q.durableTree(top)
	}
	if !damage.Is(err) {
		return nil, err
	}
	qdir, qerr := damage.Quarantine(dataDir, dir)
	if qerr != nil {
		return nil, fmt.Errorf("store: %v; quarantine failed: %w", err, qerr)
	}
	opt.Logger.Error("store: damaged store moved aside; starting with an empty queue",
		"error", err, "quarantine", qdir)
	q, err = open(dir, opt, false, false)
	if err != nil {
		return nil, err
	}
	q.quarantined = qdir
	q.met.Quarantined.Set(1)
	return q.durableTree(top)
}

// durableTree syncs the store's directory and every directory above it up
// to top, the deepest one that existed before Open, so that the tree Open
// created (and a quarantine's rename) survives a power cut. It closes q if
// that fails.
func (q *Queue) durableTree(top string) (*Queue, error) {
	if err := dirsync.Chain(q.dir, top); err != nil {
		q.Close()
		return nil, fmt.Errorf("store: %w", err)
	}
	return q, nil
}

// OpenReadOnly opens the store under dataDir/queue for inspection (`outpost
// queue`), without writing anything there. It fails while a gateway holds
// the store. Writing methods and Lease return ErrReadOnly.
//
// A store left by a crash needs its write-ahead log cut to the last complete
// entry before Badger can read it, which a read-only open cannot do; then
// OpenReadOnly copies the store to a temporary directory, recovers the copy
// and reads that (Close removes it). The copy needs as much free space in
// the temporary directory as the store takes.
func OpenReadOnly(dataDir string) (*Queue, error) {
	opt := Options{}
	opt.fill()
	dir := filepath.Join(dataDir, "queue")
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// A clean Close leaves no write-ahead log (*.mem); a crash does, and
	// Badger's read-only open then fails (leaking goroutines on the way).
	// Hold Badger's directory lock shared while deciding and copying, so a
	// gateway that has the store open (exclusive lock) makes this fail, and
	// one that starts meanwhile waits.
	unlock, err := lockShared(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %s is in use (is the gateway running?): %w", dir, err)
	}
	defer unlock()
	var q *Queue
	if mems, _ := filepath.Glob(filepath.Join(dir, "*.mem")); len(mems) == 0 {
		unlock() // Badger takes the shared lock itself
		unlock = func() {}
		q, err = open(dir, opt, true, true)
		if err == nil || !strings.Contains(err.Error(), badger.ErrTruncateNeeded.Error()) {
			return q, err
		}
	} else {
		err = errors.New("store: not closed cleanly")
	}
	tmp, terr := os.MkdirTemp("", "outpost-queue-snapshot-")
	if terr != nil {
		return nil, fmt.Errorf("%w; copying it to recover a copy: %v", err, terr)
	}
	if terr = os.CopyFS(tmp, os.DirFS(dir)); terr == nil {
		q, terr = open(tmp, opt, false, true)
	}
	if terr != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("%w; recovering a copy: %v", err, terr)
	}
	q.snapshot = tmp
	return q, nil
}

// lockShared takes a shared, non-blocking flock on the directory dir (Badger
// locks it exclusively when it opens the store for writing).
func lockShared(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

func open(dir string, opt Options, badgerRO, readOnly bool) (q *Queue, err error) {
	bo := opt.badger(dir, badgerRO)
	db, err := damage.Open(bo)
	if err != nil {
		return nil, err
	}
	q = &Queue{
		opt:        opt,
		log:        opt.Logger,
		dir:        dir,
		db:         db,
		readOnly:   readOnly,
		wake:       make(chan struct{}, 1),
		closing:    make(chan struct{}),
		leased:     make(map[uint64]ref),
		pendingDel: make(map[uint64]msg.Priority),
		avail:      make(chan struct{}),
		progress:   make(chan struct{}),
		gcAsk:      make(chan struct{}, 1),
	}
	q.met = metrics.New()
	if !readOnly && opt.minFreeAuto {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err == nil {
			if quarter := max(int64(st.Blocks)*int64(st.Bsize)/4, 4<<20); quarter < q.opt.MinFreeDisk {
				q.log.Info("store: small file system: keeping a quarter of it free for Badger",
					"size_bytes", int64(st.Blocks)*int64(st.Bsize), "reserve_bytes", quarter)
				q.opt.MinFreeDisk = quarter
			}
		}
	}
	if !readOnly && q.opt.MinFreeDisk >= 0 {
		// Start out knowing whether the disk is full (DiskLow), not at
		// the first append.
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err == nil {
			q.tablesNow.Store(tablesSize(dir))
			q.spaceLow(st)
		}
	}
	if err := q.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	if err := damage.CheckClean(dir, q.m.NextSeq, q.m.CmdSeq, readOnly); err != nil {
		db.Close()
		return nil, err
	}
	for c := range q.cls {
		q.cls[c].cursor = q.m.Classes[c].Head
	}
	q.pub = q.m
	if !readOnly {
		if q.dirs, err = dirsync.Watch(dir); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
		q.bg.Add(2)
		go q.writeLoop()
		go q.gcLoop()
		if opt.TrimBytes > 0 {
			if abs, err := filepath.Abs(dir); err == nil {
				if real, err := filepath.EvalSymlinks(abs); err == nil {
					q.trimDir, q.trimAsk = real, make(chan struct{}, 1)
					q.bg.Add(1)
					go q.trimLoop()
				}
			}
		}
		if opt.Verify {
			q.bg.Add(1)
			go q.verifyLoop()
		}
	}
	return q, nil
}

// verifyLoop checks every table block's checksum once after open, in the
// background (Options.Verify). Damage is logged at error level and reported
// in Stats.Damaged and the outpost_store_damaged gauge; the readable records
// keep flowing.
func (q *Queue) verifyLoop() {
	defer q.bg.Done()
	err := damage.Verify(q.db)
	if err == nil || q.closed.Load() || errors.Is(err, badger.ErrDBClosed) {
		return
	}
	q.log.Error("store: damaged blocks found; records in them cannot be sent", "error", err)
	q.mu.Lock()
	q.damaged = err.Error()
	q.mu.Unlock()
	q.met.Damaged.Set(1)
}

// Close stops the background goroutines, commits what was already queued
// (pending Submits and Acks) and closes Badger. Safe to call twice; Lease
// calls blocked in other goroutines return ErrClosed.
func (q *Queue) Close() error {
	q.once.Do(func() {
		q.wmu.Lock()
		q.closed.Store(true)
		close(q.closing)
		q.wmu.Unlock()
		q.bg.Wait()
		q.dbmu.Lock() // no reader is in a Badger transaction from here on
		if err := q.failure(); err != nil {
			// Badger's memtable may hold the failed batch, with pointers
			// into value-log pages that never reached the disk; closing
			// would flush it into a table and leave those pointers
			// dangling for the next open. The store is abandoned as a
			// crash would leave it, and the next open recovers what was
			// synced. Its files stay open until the process exits, which
			// is what a failed store asks for (see Failed).
			q.closeErr = fmt.Errorf("store: not closed (abandoned, as after a crash, until the process exits): %w", err)
			q.dbmu.Unlock()
			return
		}
		q.closeErr = q.db.Close()
		q.dbmu.Unlock()
		if q.dirs != nil {
			q.dirs.Close()
		}
		if q.closeErr == nil && !q.readOnly && q.failure() == nil {
			q.closeErr = damage.WriteClean(q.dir, q.m.NextSeq, q.m.CmdSeq)
		}
		if q.snapshot != "" {
			os.RemoveAll(q.snapshot)
		}
	})
	return q.closeErr
}

// view runs fn in a read transaction, or returns ErrClosed once Close has
// begun. Badger panics when an iterator is made on a closed DB, and the
// public calls (Lease, Stats, Dead, ...) may race with Close: Close takes
// dbmu for writing before it closes the DB.
func (q *Queue) view(fn func(txn *badger.Txn) error) error {
	q.dbmu.RLock()
	defer q.dbmu.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	return q.db.View(fn)
}

// gcLoop runs value-log GC and the inbox retention sweep every GCInterval,
// and value-log GC alone whenever a value-log file's worth of records was
// deleted (see Queue.deleted): a FIFO's oldest value-log files then hold only deleted
// records, and Badger's discard statistics (kept by compaction) pick them.
func (q *Queue) gcLoop() {
	defer q.bg.Done()
	t := time.NewTicker(q.opt.GCInterval)
	defer t.Stop()
	space := time.NewTicker(time.Second)
	defer space.Stop()
	for {
		sweep := false
		select {
		case <-q.closing:
			return
		case <-space.C:
			q.recheckSpace()
			continue
		case <-t.C:
			sweep = true
		case <-q.gcAsk:
		}
		for q.runGC() == nil {
			if q.closed.Load() {
				return
			}
			if q.trimAsk != nil {
				q.trimMapped() // GC read a whole value-log file
			}
		}
		if !sweep {
			continue
		}
		if err := q.sweepCommands(context.Background(), q.opt.Now()); err != nil && !errors.Is(err, ErrClosed) {
			q.log.Warn("store: command retention sweep failed", "error", err)
		}
	}
}

// runGC runs one value-log GC round. Badger's GC, when it rewrites a
// file's live entries, reads the memtable's max version without the lock
// the memtable's writes take (a data race in Badger v4.9.6), so it never
// runs during a commit.
func (q *Queue) runGC() error {
	q.gcmu.Lock()
	defer q.gcmu.Unlock()
	if err := q.failure(); err != nil {
		return err // a failed store writes nothing more
	}
	return q.db.RunValueLogGC(0.5)
}

// badgerLogger logs Badger's messages. One of them is a failure Badger
// reports only in its log: with SyncWrites, a failed sync of the value log
// is logged ("Error while curlf sync") and the write goes on, so Badger
// writes and syncs its write-ahead log next, pointing at value-log bytes
// that may never reach the disk; the next open would find the store
// damaged. No error comes back to stop it, so the logger stops the process
// there, before the write-ahead log is written (PostgreSQL's answer to a
// failed fsync, since 2018, is the same: PANIC, then crash recovery). The
// service manager restarts it and the store opens with what was synced.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	m := trimNL(fmt.Sprintf(f, a...))
	b.l.Error(m)
	if strings.HasPrefix(m, "Error while curlf sync") {
		b.l.Error(ErrValueLogSync.Error(), "error", m)
		panic(fmt.Errorf("%w: %s", ErrValueLogSync, m))
	}
}

func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug(trimNL(fmt.Sprintf(f, a...))) }
func (b badgerLogger) Debugf(string, ...any)       {}

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}
