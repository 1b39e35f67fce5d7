package store

import (
	"errors"
	"io"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// FullPolicy says what Append does when the store is at MaxBytes. It is
// written in the config file as the store.when_full key.
type FullPolicy string

const (
	// DropOldest (the default; also the zero value "") evicts the oldest
	// records that are not leased, Low class first, to make room; every
	// eviction is counted in Dropped and in the pending gap report.
	DropOldest FullPolicy = "drop-oldest"
	// Reject fails the append with ErrFull; nothing stored is touched.
	Reject FullPolicy = "reject"
)

func (p FullPolicy) String() string {
	if p == "" {
		return string(DropOldest)
	}
	return string(p)
}

var (
	// ErrFull is returned by Append when the records do not fit: the store is
	// at MaxBytes under the Reject policy, nothing evictable is left under
	// DropOldest, or the disk is nearly full. The producer must not be
	// acknowledged; retrying later may succeed.
	ErrFull = errors.New("store: queue full")
	// ErrClosed is returned by every method after Close. Final.
	ErrClosed = errors.New("store: closed")
	// ErrNotLeased is returned by Ack, Release and Reject for a sequence
	// number that is not currently leased (never leased, already acked or
	// released, or leased before a restart).
	ErrNotLeased = errors.New("store: not leased")
	// ErrTooLarge is returned by Append for one call whose records cannot fit
	// one transaction (see Options.MemTableSize). Final for those records.
	ErrTooLarge = errors.New("store: append too large")
	// ErrFailed is returned by every write after a commit failed (see
	// Queue.Damaged): the store acknowledges nothing more until it is
	// reopened.
	ErrFailed = errors.New("store: failed after a write or sync error; reopen it")
	// ErrValueLogSync is the panic value (wrapped) when a sync of the value
	// log fails: the process stops before Badger writes past it (see
	// badgerLogger), and the next open recovers what was synced.
	ErrValueLogSync = errors.New("store: the value log failed to sync; stopping the process before Badger's write-ahead log points past what reached the disk (the next start recovers what was synced)")
	// ErrReadOnly is returned by writing methods of a store opened with
	// OpenReadOnly.
	ErrReadOnly = errors.New("store: read-only")
)

// Options configure a Queue: the Config a user writes and the knobs that
// only code sets. The zero value is a usable low-memory profile.
type Options struct {
	Config
	Logger *slog.Logger // nil = discard

	// MinFreeDisk and the size of the store's tables are kept free on the
	// file system: below that Append fails with ErrFull whatever the policy,
	// so that Badger never writes into a full file system (its files are
	// memory-mapped: a write there is a SIGBUS, not an error, and
	// compactions need room for a level's worth of new tables). 0 = 4 ×
	// MemTableSize + 2 × ValueLogFileSize + 16 MiB, at most a quarter of
	// the file system (at least 4 MiB), so a small disk is still used;
	// < 0 = off.
	MinFreeDisk int64
	minFreeAuto bool // MinFreeDisk was 0: Open sizes it to the disk
	// CommandRetention is how long finished inbox commands are kept for
	// de-duplication and inspection. 0 = 24h.
	CommandRetention time.Duration
	// MaxDead bounds the dead letters; the oldest beyond it are deleted
	// (counted in Stats.DeadDropped). 0 = 10,000.
	MaxDead int

	// Badger knobs (0 = the low-memory default in parentheses).
	MemTableSize     int64         // (4 MiB) also bounds one Append: ~7% of it (values in the value log count as pointers)
	ValueLogFileSize int64         // (16 MiB) small enough to mmap on 32-bit ARM
	ValueThreshold   int64         // (64 B) values this large go to the value log, written once; the tables hold keys and pointers
	TableSize        int64         // (2 MiB) Badger's base table size; each table builder holds ~2x this
	LevelSize        int64         // (16 MiB) Badger's base level size
	BlockCacheSize   int64         // (0: none; blocks are read uncompressed from the mmap)
	GCInterval       time.Duration // (5m) value-log GC and finished-command cleanup
	SweepInterval    time.Duration // (TTL/10 clamped to 1s..1m) TTL sweep

	// TrimBytes: after this many bytes written to or read from the store,
	// its mapped files are paged out of the process (see trim.go), which
	// keeps a large backlog out of the RSS. 0 = 2 MiB; < 0 = never.
	TrimBytes int64

	// Verify checks every block's checksum in the background after open
	// (see Stats.Damaged). It reads the whole store once: on a Pi with a
	// large backlog that is minutes of SD-card reads, and the mapped pages
	// count in the RSS until the kernel reclaims them.
	Verify bool

	// Now is the clock for enqueue times, TTL and retention (nil =
	// time.Now); tests move it.
	Now func() time.Time

	// SyncEach disables group commit: every Append gets its own transaction
	// and sync, serialised. Only for the fsync-per-append benchmark baseline.
	SyncEach bool

	// commitHook, when set, is called after every successful Badger commit;
	// an error it returns is taken as that commit's failure (tests inject
	// a failed sync with it).
	commitHook func() error
}

func (o *Options) fill() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MemTableSize <= 0 {
		o.MemTableSize = 4 << 20
	}
	if o.ValueLogFileSize <= 0 {
		o.ValueLogFileSize = 16 << 20
	}
	if o.TableSize <= 0 {
		o.TableSize = 1 << 20
	}
	if o.LevelSize <= 0 {
		o.LevelSize = 16 << 20
	}
	if o.ValueThreshold <= 0 {
		o.ValueThreshold = 64
	}
	if o.MinFreeDisk == 0 {
		o.MinFreeDisk = 4*o.MemTableSize + 2*o.ValueLogFileSize + 16<<20
		o.minFreeAuto = true
	}
	if o.TrimBytes == 0 {
		o.TrimBytes = 2 << 20
	}
	if o.CommandRetention <= 0 {
		o.CommandRetention = 24 * time.Hour
	}
	if o.MaxDead <= 0 {
		o.MaxDead = 10000
	}
	if o.GCInterval <= 0 {
		o.GCInterval = 5 * time.Minute
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = min(max(o.TTL/10, time.Second), time.Minute)
	}
}

func (o *Options) badger(dir string, readOnly bool) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{o.Logger.With("part", "badger")}).
		WithSyncWrites(true).
		WithDetectConflicts(false).
		WithMetricsEnabled(false).
		WithNumGoroutines(1).
		WithMemTableSize(o.MemTableSize).
		WithNumMemtables(2).
		WithNumLevelZeroTables(6).
		WithNumLevelZeroTablesStall(12).
		WithBaseTableSize(o.TableSize).
		WithBaseLevelSize(o.LevelSize).
		WithNumCompactors(2).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithValueThreshold(o.ValueThreshold).
		WithCompression(options.None).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(0).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithVerifyValueChecksum(true).
		WithReadOnly(readOnly)
	if o.BlockCacheSize > 0 {
		bo = bo.WithCompression(options.Snappy)
	}
	return bo
}
