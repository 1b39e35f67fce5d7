package store

import (
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store/internal/layout"
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

// metrics are the collectors that are not derived from Stats.
type metrics struct {
	commitSeconds prometheus.Histogram
	batchOps      prometheus.Histogram
	diskLow       prometheus.Counter
	quarantined   prometheus.Gauge
	damaged       prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_store_commit_seconds",
			Help:    "Time to write and sync one group-commit batch (the fsync latency).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_store_batch_ops",
			Help:    "Requests (appends, acks, ...) committed per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		diskLow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_store_disk_low_total",
			Help: "Batches whose appends failed because free disk space was below the reserve.",
		}),
		quarantined: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_store_quarantined",
			Help: "1 if a damaged store was moved aside at open.",
		}),
		damaged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_store_damaged",
			Help: "1 if the checksum pass after open found damaged blocks.",
		}),
	}
}

// Collectors returns the store's Prometheus collectors: outpost_store_depth,
// _bytes and _max_bytes (by class), _oldest_age_seconds, _leased, the
// counters _appends_total, _acks_total, _dropped_total, _expired_total,
// _dead_total, _dead_depth, the commit-latency and batch-size histograms,
// _disk_low_total, _quarantined and _damaged.
func (q *Queue) Collectors() []prometheus.Collector {
	return []prometheus.Collector{statsCollector{q}, q.met.commitSeconds, q.met.batchOps, q.met.diskLow, q.met.quarantined, q.met.damaged}
}

var (
	descDepth   = prometheus.NewDesc("outpost_store_depth", "Records in the outbox.", []string{"priority"}, nil)
	descBytes   = prometheus.NewDesc("outpost_store_bytes", "Bytes (record sizes) in the outbox.", []string{"priority"}, nil)
	descMax     = prometheus.NewDesc("outpost_store_max_bytes", "Configured byte budget (0 = unlimited).", nil, nil)
	descOldest  = prometheus.NewDesc("outpost_store_oldest_age_seconds", "Age of the oldest outbox record.", nil, nil)
	descLeased  = prometheus.NewDesc("outpost_store_leased", "Records leased to the forwarder.", nil, nil)
	descParked  = prometheus.NewDesc("outpost_store_parked", "Records parked by the forwarder (their device's connection is down).", nil, nil)
	descAppends = prometheus.NewDesc("outpost_store_appends_total", "Records appended.", nil, nil)
	descAcks    = prometheus.NewDesc("outpost_store_acks_total", "Records acked upstream and deleted.", nil, nil)
	descDropped = prometheus.NewDesc("outpost_store_dropped_total", "Records evicted under drop-oldest.", nil, nil)
	descExpired = prometheus.NewDesc("outpost_store_expired_total", "Records removed by TTL.", nil, nil)
	descDead    = prometheus.NewDesc("outpost_store_dead_total", "Records rejected to the dead letters.", nil, nil)
	descDeadN   = prometheus.NewDesc("outpost_store_dead_depth", "Dead letters kept.", nil, nil)
)

type statsCollector struct{ q *Queue }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descBytes, descMax, descOldest, descLeased, descParked,
		descAppends, descAcks, descDropped, descExpired, descDead, descDeadN} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.q.Stats()
	for p, cs := range s.Classes {
		name := msg.Priority(p).String()
		ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(cs.Depth), name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(cs.Bytes), name)
	}
	g := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v)
	}
	g(descMax, prometheus.GaugeValue, float64(s.MaxBytes))
	g(descOldest, prometheus.GaugeValue, s.OldestAge.Seconds())
	g(descLeased, prometheus.GaugeValue, float64(s.Leased))
	g(descParked, prometheus.GaugeValue, float64(s.Parked))
	g(descAppends, prometheus.CounterValue, float64(s.Appends))
	g(descAcks, prometheus.CounterValue, float64(s.Acks))
	g(descDropped, prometheus.CounterValue, float64(s.Dropped))
	g(descExpired, prometheus.CounterValue, float64(s.Expired))
	g(descDead, prometheus.CounterValue, float64(s.Dead))
	g(descDeadN, prometheus.GaugeValue, float64(s.DeadDepth))
}
