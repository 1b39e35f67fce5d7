package store_test

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

var (
	outageRecords = flag.Int("outage.records", 1_000_000, "records stored then drained by BenchmarkOutageCycle")
	benchDir      = flag.String("cost.dir", "", "directory for the cost benchmarks' stores (default: the test's temp dir; it must be on a real disk, not tmpfs, for disk_bytes_per_payload_byte)")
)

const (
	costPayload   = 200 // bytes per record
	costProducers = 16  // concurrent producers
	costInFlight  = 64  // Submits in flight per producer (a hub leaf's QoS 1 window)
)

// cost is the whole process's use of disk writes, CPU and memory between
// start and stop, reported as per-message metrics.
type cost struct {
	writes  int64
	cpu     time.Duration
	start   time.Time
	stop    chan struct{}
	anon    atomic.Int64 // peak RssAnon, kB, sampled every 10ms
	sampled sync.WaitGroup
}

func startCost(b *testing.B) *cost {
	// Reset the peak RSS (VmHWM) to the current RSS.
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset VmHWM: %v", err)
	}
	c := &cost{writes: procWriteBytes(b), cpu: cpuTime(), start: time.Now(), stop: make(chan struct{})}
	c.sampled.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if a := procStatusKB(b, "RssAnon"); a > c.anon.Load() {
				c.anon.Store(a)
			}
			select {
			case <-c.stop:
				return
			case <-t.C:
			}
		}
	})
	return c
}

func (c *cost) report(b *testing.B, msgs int) {
	close(c.stop)
	c.sampled.Wait()
	writes := procWriteBytes(b) - c.writes
	cpu := cpuTime() - c.cpu
	el := time.Since(c.start)
	b.ReportMetric(float64(writes)/float64(msgs*costPayload), "disk_bytes_per_payload_byte")
	b.ReportMetric(float64(cpu.Microseconds())/float64(msgs), "cpu_us_per_msg")
	b.ReportMetric(float64(procStatusKB(b, "VmHWM"))/1024, "peak_rss_mib")
	b.ReportMetric(float64(c.anon.Load())/1024, "peak_rss_anon_mib")
	b.ReportMetric(float64(msgs)/el.Seconds(), "msg/s")
	b.ReportMetric(0, "ns/op") // the figures above are per message; ns/op is per b.N unit
}

// procWriteBytes is the process's write_bytes from /proc/self/io: bytes it
// caused to be written to the storage layer (dirtied pages of files, mapped
// ones included, counted when dirtied).
func procWriteBytes(b *testing.B) int64 {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Skip("no write_bytes in /proc/self/io")
	return 0
}

func procStatusKB(b *testing.B, key string) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func costStore(b *testing.B) *store.Queue {
	dir := *benchDir
	if dir == "" {
		dir = b.TempDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp(dir, "cost-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	opt := store.Options{}
	q, err := store.Open(dir, opt)
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// produce submits n records of costPayload bytes from costProducers
// producers, each with up to costInFlight Submits outstanding, and waits
// until every one is acknowledged.
func produce(b *testing.B, q *store.Queue, n int) {
	payload := make([]byte, costPayload)
	var next atomic.Int64
	var wg sync.WaitGroup
	for p := range costProducers {
		dev := fmt.Sprint("dev-", p)
		wg.Go(func() {
			window := make(chan struct{}, costInFlight)
			var mine sync.WaitGroup
			for next.Add(1) <= int64(n) {
				window <- struct{}{}
				mine.Add(1)
				r := &msg.Record{Device: dev, Priority: msg.Normal, Payload: payload}
				q.Submit([]*msg.Record{r}, func(err error) {
					if err != nil {
						b.Error(err)
					}
					<-window
					mine.Done()
				})
			}
			mine.Wait()
		})
	}
	wg.Wait()
}

// drain leases (64 at a time) and acks n records.
func drain(b *testing.B, q *store.Queue, n int) {
	for got := 0; got < n; {
		recs, err := q.Lease(context.Background(), 64)
		if err != nil {
			b.Error(err)
			return
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := q.Ack(seqs...); err != nil {
			b.Error(err)
			return
		}
		got += len(recs)
	}
}

// BenchmarkSteadyState is ingest while draining: 16 producers with 64
// Submits in flight each, and one forwarder leasing 64 and acking, 200-byte
// payloads; b.N messages. It reports the whole process's disk bytes written
// per payload byte, CPU per message and the peak RSS.
func BenchmarkSteadyState(b *testing.B) {
	q := costStore(b)
	defer q.Close()
	// Warm up: the first table flush and compaction happen once per store.
	warm := 50_000
	done := make(chan struct{})
	go func() { drain(b, q, warm); close(done) }()
	produce(b, q, warm)
	<-done
	b.ResetTimer()
	c := startCost(b)
	done = make(chan struct{})
	go func() { drain(b, q, b.N); close(done) }()
	produce(b, q, b.N)
	<-done
	b.StopTimer()
	c.report(b, b.N)
}

// BenchmarkOutageCycle stores -outage.records records (the link is down),
// then drains them all: disk bytes per payload byte, CPU per message and
// peak RSS over the whole cycle, and each phase's rate.
func BenchmarkOutageCycle(b *testing.B) {
	for range b.N {
		q := costStore(b)
		n := *outageRecords
		c := startCost(b)
		t0 := time.Now()
		produce(b, q, n)
		stored := time.Since(t0)
		t0 = time.Now()
		drain(b, q, n)
		drained := time.Since(t0)
		if err := q.Close(); err != nil {
			b.Fatal(err)
		}
		c.report(b, n)
		b.ReportMetric(float64(n)/stored.Seconds(), "store_msg/s")
		b.ReportMetric(float64(n)/drained.Seconds(), "drain_msg/s")
	}
}
