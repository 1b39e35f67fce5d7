package store

import (
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
	"github.com/outpost-iot/outpost/store/internal/metrics"
)

// ClassStats is one priority class of the outbox.
type ClassStats struct {
	Depth uint64 `json:"depth"`
	Bytes int64  `json:"bytes"`
}

// Stats is a snapshot of the store. Counters are durable (they survive
// restarts; a quarantine starts them again from zero).
type Stats struct {
	Depth     uint64                        `json:"depth"` // records in the outbox, leased ones included
	Bytes     int64                         `json:"bytes"` // their msg.Record.Size() sum
	MaxBytes  int64                         `json:"max_bytes"`
	Classes   [msg.NumPriorities]ClassStats `json:"classes"`         // High, Normal, Low
	Oldest    time.Time                     `json:"oldest,omitzero"` // enqueue time of the oldest record; zero when empty
	OldestAge time.Duration                 `json:"-"`               // time since Oldest
	// OldestAgeSeconds is OldestAge in seconds (for JSON).
	OldestAgeSeconds float64 `json:"oldest_age_s"`
	Leased           int     `json:"leased"` // records leased now
	Parked           int     `json:"parked"` // records parked now (see Park)
	NextSeq          uint64  `json:"next_seq"`

	Appends     uint64 `json:"appends"`      // records ever appended
	Acks        uint64 `json:"acks"`         // records acked
	Dropped     uint64 `json:"dropped"`      // evicted under DropOldest
	Expired     uint64 `json:"expired"`      // removed by TTL
	Dead        uint64 `json:"dead"`         // rejected to the dead letters
	DeadDepth   uint64 `json:"dead_depth"`   // dead letters kept now
	DeadDropped uint64 `json:"dead_dropped"` // dead letters deleted beyond MaxDead

	Gap    Gap `json:"gap"`     // accumulating, not yet taken
	GapOut Gap `json:"gap_out"` // taken, waiting for AckGap

	Quarantined string `json:"quarantined,omitempty"` // see Queue.Quarantined
	// Damaged is set when the background checksum pass found damaged
	// blocks after open (the store keeps running on what is readable).
	Damaged string `json:"damaged,omitempty"`
}

// Depth is the number of records in the outbox, leased and parked ones
// included (Stats.Depth), from memory: unlike Stats it reads nothing from
// disk, so a forwarder can call it on every link change.
func (q *Queue) Depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return int(q.pub.depth())
}

// Stats returns a snapshot. It reads the head of each class from disk to find
// the oldest record.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	m := q.pub
	s := Stats{
		Depth: m.depth(), Bytes: m.bytes(), MaxBytes: int64(q.opt.MaxBytes),
		Leased: len(q.leased), Parked: q.parkedLocked(), NextSeq: m.NextSeq,
		Appends: m.Appends, Acks: m.Acks, Dropped: m.Dropped, Expired: m.Expired,
		Dead: m.Dead, DeadDepth: m.DeadDepth, DeadDropped: m.DeadDropped,
		Gap: m.Gap, GapOut: m.GapOut, Quarantined: q.quarantined, Damaged: q.damaged,
	}
	var from [msg.NumPriorities]uint64
	for c := range m.Classes {
		s.Classes[c] = ClassStats{m.Classes[c].Depth, m.Classes[c].Bytes}
		from[c] = m.Classes[c].Head
	}
	q.mu.Unlock()
	_ = q.view(func(txn *badger.Txn) error {
		for c := msg.Priority(0); c < msg.NumPriorities; c++ {
			if s.Classes[c].Depth == 0 {
				continue
			}
			it := txn.NewIterator(badger.IteratorOptions{Prefix: layout.ClassPrefix(c)})
			it.Seek(layout.OutboxKey(c, from[c]))
			if it.Valid() {
				_ = it.Item().Value(func(v []byte) error {
					_, enq, err := layout.RecordHead(v)
					if err == nil && (s.Oldest.IsZero() || enq.Before(s.Oldest)) {
						s.Oldest = enq
					}
					return nil
				})
			}
			it.Close()
		}
		return nil
	})
	if !s.Oldest.IsZero() {
		s.OldestAge = q.opt.Now().Sub(s.Oldest)
		s.OldestAgeSeconds = s.OldestAge.Seconds()
	}
	return s
}

// Collectors returns the store's Prometheus collectors: outpost_store_depth,
// _bytes and _max_bytes (by class), _oldest_age_seconds, _leased, the
// counters _appends_total, _acks_total, _dropped_total, _expired_total,
// _dead_total, _dead_depth, the commit-latency and batch-size histograms,
// _disk_low_total, _quarantined and _damaged.
func (q *Queue) Collectors() []prometheus.Collector {
	return q.met.Collectors(func() metrics.Values {
		s := q.Stats()
		v := metrics.Values{MaxBytes: float64(s.MaxBytes), OldestAgeSeconds: s.OldestAge.Seconds(),
			Leased: s.Leased, Parked: s.Parked, Appends: s.Appends, Acks: s.Acks, Dropped: s.Dropped,
			Expired: s.Expired, Dead: s.Dead, DeadDepth: s.DeadDepth}
		for c, cs := range s.Classes {
			v.Depth[c], v.Bytes[c] = cs.Depth, cs.Bytes
		}
		return v
	})
}
