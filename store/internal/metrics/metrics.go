// Package metrics is the store's Prometheus exposition: the names, help
// texts and types of its outpost_store_* series. Set holds the collectors
// the store updates as things happen (commit latency, batch size, disk-low
// batches, quarantine, damage); the rest are read from the store's Stats
// on every scrape, as Values.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Set is the collectors that are not derived from the store's Stats.
type Set struct {
	CommitSeconds prometheus.Histogram // one per committed batch
	BatchOps      prometheus.Histogram // requests per committed batch
	DiskLow       prometheus.Counter   // batches refused for want of disk space
	Quarantined   prometheus.Gauge     // 1 after a damaged store was moved aside
	Damaged       prometheus.Gauge     // 1 after the checksum pass found damage
	Failed        prometheus.Gauge     // 1 after a commit failed (see Queue.Failed)
}

// New returns a Set, registered nowhere.
func New() *Set {
	return &Set{
		CommitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_store_commit_seconds",
			Help:    "Time to write and sync one group-commit batch (the fsync latency).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		BatchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outpost_store_batch_ops",
			Help:    "Requests (appends, acks, ...) committed per batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		DiskLow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_store_disk_low_total",
			Help: "Batches whose appends failed because free disk space was below the reserve.",
		}),
		Quarantined: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_store_quarantined",
			Help: "1 if a damaged store was moved aside at open.",
		}),
		Damaged: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_store_damaged",
			Help: "1 if the checksum pass after open found damaged blocks.",
		}),
		Failed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_store_failed",
			Help: "1 if a write or sync of the store failed: nothing is acknowledged until the store is reopened.",
		}),
	}
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

// Values are the store's gauges and counters at one moment, as its Stats
// has them.
type Values struct {
	Depth            [msg.NumPriorities]uint64 // records by class
	Bytes            [msg.NumPriorities]int64  // record sizes by class
	MaxBytes         float64
	OldestAgeSeconds float64
	Leased, Parked   int
	Appends, Acks    uint64
	Dropped, Expired uint64
	Dead, DeadDepth  uint64
}

// Collectors returns a collector that calls read on every scrape, then the
// Set's collectors.
func (s *Set) Collectors(read func() Values) []prometheus.Collector {
	return []prometheus.Collector{statsCollector{read}, s.CommitSeconds, s.BatchOps, s.DiskLow, s.Quarantined, s.Damaged, s.Failed}
}

type statsCollector struct{ read func() Values }

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descBytes, descMax, descOldest, descLeased, descParked,
		descAppends, descAcks, descDropped, descExpired, descDead, descDeadN} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.read()
	for p := range s.Depth {
		name := msg.Priority(p).String()
		ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(s.Depth[p]), name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(s.Bytes[p]), name)
	}
	g := func(d *prometheus.Desc, t prometheus.ValueType, v float64) {
		ch <- prometheus.MustNewConstMetric(d, t, v)
	}
	g(descMax, prometheus.GaugeValue, s.MaxBytes)
	g(descOldest, prometheus.GaugeValue, s.OldestAgeSeconds)
	g(descLeased, prometheus.GaugeValue, float64(s.Leased))
	g(descParked, prometheus.GaugeValue, float64(s.Parked))
	g(descAppends, prometheus.CounterValue, float64(s.Appends))
	g(descAcks, prometheus.CounterValue, float64(s.Acks))
	g(descDropped, prometheus.CounterValue, float64(s.Dropped))
	g(descExpired, prometheus.CounterValue, float64(s.Expired))
	g(descDead, prometheus.CounterValue, float64(s.Dead))
	g(descDeadN, prometheus.GaugeValue, float64(s.DeadDepth))
}
