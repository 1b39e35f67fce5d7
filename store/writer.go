package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
)

// The writer goroutine owns q.m and is the only one to write to Badger. Every
// mutation is an op queued in q.ops; the writer takes all queued ops (up to a
// transaction's size), applies them to one Badger transaction, commits it
// with one sync, then calls the ops' done functions in order. While a batch
// is syncing the next one gathers: that is the group commit.

type opKind uint8

const (
	opAppend opKind = iota // recs
	opAck                  // refs: delete, count Acks
	opDrop                 // refs: delete, count Expired (TTL), add to the gap
	opReject               // refs[0]: move to dead letters with reason
	opFunc                 // fn: inbox and gap bookkeeping
)

// ref names one outbox record and its budget share.
type ref struct {
	seq   uint64
	class msg.Priority
	size  int
}

type op struct {
	kind   opKind
	recs   []*msg.Record
	refs   []ref
	reason string
	fn     func(b *batch) error // returns an error only before its first write
	done   func(error)
	err    error // the op's own outcome (nothing of it was written)
	est    int64 // estimated transaction bytes
	n      int64 // estimated transaction entries
}

// batch is one transaction being built.
type batch struct {
	txn       *badger.Txn
	now       time.Time
	size, n   int64 // estimated use of the transaction
	evicted   []ref // records evicted by DropOldest (for rollback)
	appended  bool
	firstSeq  uint64 // q.m.NextSeq when the batch started
	threshold int64  // Options.ValueThreshold
}

// errBatch wraps errors that fail the whole batch (its transaction is
// half-written).
type errBatch struct{ err error }

func (e errBatch) Error() string { return e.err.Error() }
func (e errBatch) Unwrap() error { return e.err }

func (b *batch) set(k, v []byte) error {
	vs := int64(len(v))
	if vs >= b.threshold { // stored in the value log: a pointer in the batch
		vs = 32
	}
	b.size += int64(len(k)) + vs + 16
	b.n++
	if err := b.txn.Set(k, v); err != nil {
		return errBatch{err}
	}
	return nil
}

func (b *batch) del(k []byte) error {
	b.size += int64(len(k) + 16)
	b.n++
	if err := b.txn.Delete(k); err != nil {
		return errBatch{err}
	}
	return nil
}

// Txn, Set and Delete are the batch as an inbox.Tx.
func (b *batch) Txn() *badger.Txn      { return b.txn }
func (b *batch) Set(k, v []byte) error { return b.set(k, v) }
func (b *batch) Delete(k []byte) error { return b.del(k) }

// room reports whether n more entries of size bytes fit the transaction.
func (q *Queue) room(b *batch, n, size int64) bool {
	return b.n+n < q.db.MaxBatchCount()*3/4 && b.size+size < q.db.MaxBatchSize()*3/4
}

// estimate is what recs take of a Badger transaction: key and value, or
// key and a value-log pointer for values at or above ValueThreshold.
func (q *Queue) estimate(recs []*msg.Record) (size, n int64) {
	for _, r := range recs {
		v := int64(r.Size() + len(r.Props)*4 + 48)
		if v >= q.opt.ValueThreshold {
			v = 32
		}
		size += v + 10 + 16
	}
	return size, int64(len(recs))
}

// enqueue hands o to the writer, or fails with ErrClosed.
func (q *Queue) enqueue(o *op) error {
	if q.readOnly {
		return ErrReadOnly
	}
	q.wmu.Lock()
	if q.closed.Load() {
		q.wmu.Unlock()
		return ErrClosed
	}
	q.ops = append(q.ops, o)
	q.wmu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

// takeBatch removes from q.ops as many ops as fit half a transaction (the
// rest is left for evictions and bookkeeping), and at least one.
func (q *Queue) takeBatch() []*op {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	if len(q.ops) == 0 {
		return nil
	}
	maxN, maxSize := q.db.MaxBatchCount()/2, q.db.MaxBatchSize()/2
	var n, size int64
	i := 0
	for i < len(q.ops) {
		o := q.ops[i]
		if i > 0 && (n+o.n > maxN || size+o.est > maxSize || q.opt.SyncEach) {
			break
		}
		n += o.n
		size += o.est
		i++
	}
	ops := make([]*op, i)
	copy(ops, q.ops)
	q.ops = q.ops[:copy(q.ops, q.ops[i:])]
	return ops
}

func (q *Queue) writeLoop() {
	defer q.bg.Done()
	var sweep <-chan time.Time
	if q.opt.TTL > 0 {
		t := time.NewTicker(q.opt.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	failures := 0
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		sweepAgain := false
		select {
		case <-q.wake:
		case <-sweep:
			sweepAgain = true
		case <-q.closing:
		}
		for {
			if sweepAgain && !q.closed.Load() {
				sweepAgain = q.sweepExpired(q.opt.Now())
			}
			q.linger(linger)
			ops := q.takeBatch()
			if len(ops) == 0 {
				break
			}
			if q.commit(ops) == nil {
				failures = 0
				continue
			}
			sweepAgain = false
			failures++
			wait := min(50*time.Millisecond<<min(failures, 7), 5*time.Second)
			select {
			case <-q.closing:
			case <-time.After(wait):
			}
		}
		if q.closed.Load() {
			q.wmu.Lock()
			n := len(q.ops)
			q.wmu.Unlock()
			if n == 0 {
				return
			}
		}
	}
}

// linger waits briefly, before taking a batch, for the producers released by
// the previous batch to submit again, so that closed-loop producers form one
// batch per sync instead of alternating cohorts. It waits until as many ops
// are queued as took part in the last round (that batch plus what arrived
// while it synced), for at most half the last commit time.
func (q *Queue) linger(t *time.Timer) {
	expect, d := q.expect, q.lastCommit/2
	if q.opt.SyncEach || expect <= 1 || d <= 0 || q.closed.Load() {
		return
	}
	t.Reset(min(d, 2*time.Millisecond))
	defer t.Stop()
	for q.queued() < expect {
		select {
		case <-q.wake:
		case <-t.C:
			return
		case <-q.closing:
			return
		}
	}
}

func (q *Queue) queued() int {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	return len(q.ops)
}

// commit applies ops in one transaction and reports the batch's fate to
// every op. It returns the batch error, if any.
func (q *Queue) commit(ops []*op) error {
	if err := q.failure(); err != nil {
		q.finish(ops, &batch{}, err, q.m)
		return nil // fail fast: no backoff, nothing is retried
	}
	saved := q.m
	b := &batch{txn: q.db.NewTransaction(true), now: q.opt.Now(), firstSeq: q.m.NextSeq, threshold: q.opt.ValueThreshold}
	defer b.txn.Discard()
	diskErr := q.diskLow()
	var err error
	for _, o := range ops {
		switch o.kind {
		case opAppend:
			if diskErr != nil {
				o.err = diskErr
				continue
			}
			err = q.applyAppend(b, o)
		case opAck, opDrop:
			err = q.applyDelete(b, o)
		case opReject:
			err = q.applyReject(b, o)
		case opFunc:
			err = o.fn(b)
			var be errBatch
			if err != nil && !errors.As(err, &be) {
				o.err, err = err, nil
			}
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		err = q.putMeta(b)
	}
	start := time.Now()
	if err == nil {
		q.gcmu.Lock()
		err = b.txn.Commit()
		q.gcmu.Unlock()
		if err == nil && q.opt.commitHook != nil {
			err = q.opt.commitHook()
		}
		if err == nil {
			// A commit that started a new log file is durable only once
			// the directory naming that file is.
			err = q.dirs.Sync()
		}
		if err != nil {
			q.fail(err)
		}
		q.lastCommit = time.Since(start)
		q.touched(b.size)
		q.expect = len(ops) + q.queued()
		q.met.CommitSeconds.Observe(q.lastCommit.Seconds())
		q.met.BatchOps.Observe(float64(len(ops)))
	}
	if err != nil {
		err = fmt.Errorf("store: commit: %w", err)
		q.m = saved
	}
	q.finish(ops, b, err, saved)
	return err
}

// finish publishes a committed batch (or rolls back a failed one) and calls
// the done functions in submission order.
func (q *Queue) finish(ops []*op, b *batch, err error, saved meta) {
	var retry []*op
	q.mu.Lock()
	if err == nil {
		q.pub = q.m
		for _, o := range ops {
			if o.kind == opAck || o.kind == opDrop || o.kind == opReject {
				for _, r := range o.refs {
					delete(q.pendingDel, r.seq)
				}
			}
		}
		if len(q.pendingDel) == 0 && q.pendingDelPeak > 4096 {
			q.pendingDel, q.pendingDelPeak = make(map[uint64]msg.Priority), 0 // maps never shrink
		}
		if len(q.leased) == 0 && len(q.pendingDel) == 0 {
			q.leased = make(map[uint64]ref)
		}
		if b.appended {
			q.signalLocked()
		}
	} else {
		// Seqs from saved.NextSeq on will be assigned again.
		for c := range q.cls {
			q.cls[c].cursor = min(q.cls[c].cursor, saved.NextSeq)
			q.liveCursor[c] = min(q.liveCursor[c], max(saved.NextSeq, q.liveFrom))
		}
		for _, r := range b.evicted {
			if r.seq < saved.NextSeq {
				q.cls[r.class].insertReleased(r)
			}
		}
		for _, o := range ops {
			if (o.kind == opAck || o.kind == opDrop) && !q.closed.Load() && q.failed == nil {
				retry = append(retry, o) // still in pendingDel
			}
		}
		if len(b.evicted) > 0 {
			q.signalLocked()
		}
	}
	close(q.progress) // wake Acks waiting for the writer, also after a failure
	q.progress = make(chan struct{})
	q.mu.Unlock()
	if len(retry) > 0 {
		q.log.Warn("store: commit failed; will retry deletions", "error", err, "ops", len(retry))
		q.wmu.Lock()
		q.ops = append(retry, q.ops...)
		q.wmu.Unlock()
	}
	for _, o := range ops {
		if o.done != nil {
			e := o.err
			if e == nil {
				e = err
			}
			o.done(e)
		}
	}
}

// fail puts the store in the failed state after a commit (a write or a
// sync) failed. Badger may have applied the batch in memory and written part
// of it, so nothing it says from now on is trusted as durable: every later
// write fails with ErrFailed (nothing more is acknowledged), Damaged reports
// it, and Close writes no clean-close mark. Reopening reads what is really
// on disk.
func (q *Queue) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failed != nil {
		return
	}
	q.failed = fmt.Errorf("%w: %v", ErrFailed, err)
	q.damaged = "a commit failed; nothing is acknowledged until the store is reopened: " + err.Error()
	q.met.Failed.Set(1)
	q.log.Error("store: commit failed; the store stops acknowledging until it is reopened", "error", err)
}

// Failed is nil, or the error that put the store in the failed state: a
// commit (a write or a sync) failed, so nothing more is acknowledged until
// the store is closed and opened again, which reads what really reached
// the disk. Unlike damage found by the checksum pass, a reopen (a restart
// of the gateway) is the remedy.
func (q *Queue) Failed() error { return q.failure() }

// failure is the failed state's error, or nil.
func (q *Queue) failure() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failed
}

func (q *Queue) applyAppend(b *batch, o *op) error {
	// Generated ids count toward the budget, so assign them first (they
	// depend only on the seq, which eviction does not change).
	var size int64
	var generated []int
	for i, r := range o.recs {
		if r.ID == "" {
			r.ID = q.m.Instance + "-" + strconv.FormatUint(q.m.NextSeq+uint64(i), 10)
			generated = append(generated, i)
		}
		size += int64(r.Size())
	}
	fail := func(err error) error {
		for _, i := range generated {
			o.recs[i].ID = ""
		}
		o.err = err
		return nil
	}
	if limit := int64(q.opt.MaxBytes); limit > 0 && q.m.bytes()+size > limit {
		if q.opt.WhenFull == Reject || size > limit {
			return fail(fmt.Errorf("%w (%d of %d bytes used, %d more asked)", ErrFull, q.m.bytes(), limit, size))
		}
		ok, err := q.evict(b, q.m.bytes()+size-limit)
		if err != nil {
			return err
		}
		if !ok {
			// Only leased records are left, or more evictions are needed
			// than one transaction holds (a large record among tiny ones).
			return fail(fmt.Errorf("%w: not enough to evict (%d of %d bytes used, %d more asked)",
				ErrFull, q.m.bytes(), limit, size))
		}
	}
	for _, r := range o.recs {
		r.Seq = q.m.NextSeq
		q.m.NextSeq++
		r.Enqueued = b.now
		if err := b.set(layout.OutboxKey(r.Priority, r.Seq), layout.EncodeRecord(nil, r)); err != nil {
			return err
		}
		c := &q.m.Classes[r.Priority]
		c.Depth++
		c.Bytes += int64(r.Size())
	}
	q.m.Appends += uint64(len(o.recs))
	b.appended = true
	return nil
}

func (q *Queue) applyDelete(b *batch, o *op) error {
	for _, r := range o.refs {
		if err := b.del(layout.OutboxKey(r.class, r.seq)); err != nil {
			return err
		}
		q.m.uncount(r)
		q.deleted(int64(r.size))
		if o.kind == opAck {
			q.m.Acks++
		} else {
			q.m.Expired++
			q.m.Gap.add(r.seq, false)
		}
	}
	return nil
}

// deleted counts n bytes of records deleted and asks gcLoop for a value-log
// GC once a value-log file's worth was.
func (q *Queue) deleted(n int64) {
	if q.deletedGC += n; q.deletedGC < q.opt.ValueLogFileSize {
		return
	}
	q.deletedGC = 0
	select {
	case q.gcAsk <- struct{}{}:
	default:
	}
}

// uncount removes r from the depth and byte counters.
func (m *meta) uncount(r ref) {
	c := &m.Classes[r.class]
	if c.Depth > 0 {
		c.Depth--
	}
	c.Bytes = max(c.Bytes-int64(r.size), 0)
}

// putMeta writes q.m with fresh per-class heads: the lowest seq that may
// still be live (leased, released, parked, awaiting deletion, or at the
// cursor).
func (q *Queue) putMeta(b *batch) error {
	q.mu.Lock()
	var heads [msg.NumPriorities]uint64
	for c := range q.cls {
		heads[c] = q.cls[c].cursor
		if rs := q.cls[c].released; len(rs) > 0 {
			heads[c] = min(heads[c], rs[0].seq)
		}
		if r, ok := q.cls[c].oldestParked(); ok {
			heads[c] = min(heads[c], r.seq)
		}
	}
	for seq, l := range q.leased {
		heads[l.class] = min(heads[l.class], seq)
	}
	for seq, c := range q.pendingDel {
		heads[c] = min(heads[c], seq)
	}
	q.mu.Unlock()
	for c := range heads {
		q.m.Classes[c].Head = heads[c]
	}
	v, err := json.Marshal(&q.m)
	if err != nil {
		return errBatch{err}
	}
	return b.set(layout.MetaKey, v)
}

// diskLow returns ErrFull when the file system holding the store has less
// free space than the reserve: MinFreeDisk plus the size of the store's
// tables. Badger's files are memory-mapped, so running out of space is a
// SIGBUS, not an error; and a compaction writes its output tables before it
// deletes its inputs, which with a queue's interleaved keys can be a whole
// level. The table size is re-read at most every 250ms.
func (q *Queue) diskLow() error {
	if q.opt.MinFreeDisk < 0 {
		return nil
	}
	if now := time.Now(); now.Sub(q.sizeAt) > 250*time.Millisecond {
		q.sizeAt, q.tables = now, tablesSize(q.dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(q.dir, &st); err != nil {
		return nil // cannot tell; let Badger report real errors
	}
	q.tablesNow.Store(q.tables)
	if err := q.spaceLow(st); err != nil {
		q.met.DiskLow.Inc()
		return err
	}
	return nil
}

// spaceLow is the disk-low error for the file system state st, or nil. It
// records the state for DiskLow: set while refusing, cleared once space
// is back.
func (q *Queue) spaceLow(st syscall.Statfs_t) error {
	free := int64(st.Bavail) * int64(st.Bsize)
	if reserve := q.opt.MinFreeDisk + q.tablesNow.Load(); free < reserve {
		err := fmt.Errorf("%w: disk nearly full (%d MiB free, %d MiB reserved for Badger)", ErrFull, free>>20, reserve>>20)
		if q.low.Swap(&err) == nil {
			q.log.Warn("store: refusing new records: the disk is nearly full", "free_bytes", free, "reserve_bytes", reserve)
			select { // value-log GC may give space back
			case q.gcAsk <- struct{}{}:
			default:
			}
		}
		return err
	}
	if q.low.Swap(nil) != nil {
		q.log.Info("store: disk space is back; taking new records again", "free_bytes", free)
	}
	return nil
}

// DiskLow is nil, or why the store refuses new records for lack of disk
// space (ErrFull): the file system has less free than the reserve. It is
// re-checked at every commit and every second while set, so it clears by
// itself when space returns.
func (q *Queue) DiskLow() error {
	if p := q.low.Load(); p != nil {
		return *p
	}
	return nil
}

// recheckSpace re-reads the free space while the store refuses for lack of
// it, so that DiskLow clears even when nothing is being appended.
func (q *Queue) recheckSpace() {
	if q.low.Load() == nil {
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(q.dir, &st); err == nil {
		q.spaceLow(st)
	}
}

// tablesSize is the size of the store's table files.
func tablesSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}
