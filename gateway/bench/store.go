package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// StoreOptions configure Store.
type StoreOptions struct {
	Dir      string        // where the temporary stores go (the data_dir's file system)
	Duration time.Duration // length of each throughput run
	Records  int           // backlog for the reopen and RSS runs (0 skips them)
	Size     int           // payload bytes per record
	Only     string        // run only these parts, comma-separated: backlog, throughput ("": both)
	Log      Log
}

// Store measures durable appends/s of Size-byte records with 1, 16 and 64
// concurrent producers (each Append returns after its batch is synced), the
// same with one sync per append as the baseline, the time to reopen a store
// holding 1,000,000 records until the first record is leased, and this
// process's peak RSS while appending and draining those records (measured
// before the throughput runs).
func Store(ctx context.Context, opt StoreOptions) (*Report, error) {
	tmp, err := os.MkdirTemp(opt.Dir, "outpost-bench-store-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var fs0 syscall.Statfs_t
	if syscall.Statfs(tmp, &fs0) == nil && fs0.Type == 0x01021994 { // TMPFS_MAGIC
		opt.Log.note("note: %s is a tmpfs (RAM); use --dir on the data_dir's file system", opt.Dir)
	}
	want := func(part string) bool { return opt.Only == "" || strings.Contains(","+opt.Only+",", ","+part+",") }

	metrics := map[string]float64{}
	var notes []string
	payload := make([]byte, opt.Size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}

	if opt.Records > 0 && want("backlog") {
		opt.Log.progress("backlog: appending and draining %d records...", opt.Records)
		stopPeak := make(chan struct{})
		peakAnon := make(chan float64, 1)
		go func() { peakAnon <- storePeakAnon(stopPeak) }()
		r, err := storeBacklog(ctx, tmp+"/backlog", opt.Records, payload)
		close(stopPeak)
		anon := <-peakAnon
		if err != nil {
			return nil, fmt.Errorf("backlog: %w", err)
		}
		if opt.Records == 1_000_000 {
			metrics["reopen_1m_s"] = round(r.reopen.Seconds(), 3)
		} else {
			notes = append(notes, fmt.Sprintf("reopen with %d records: %.3fs", opt.Records, r.reopen.Seconds()))
		}
		if rss, ok := peakRSS(); ok {
			metrics["peak_rss_mib"] = round(rss, 1)
		}
		if anon > 0 {
			// The rest of the RSS is Badger's memory-mapped table files:
			// page cache the kernel reclaims under pressure.
			metrics["peak_rss_anon_mib"] = round(anon, 1)
		}
		notes = append(notes, fmt.Sprintf("backlog fill %.0f records/s, drain %.0f records/s",
			float64(opt.Records)/r.fill.Seconds(), float64(opt.Records)/r.drain.Seconds()))
	}
	if want("throughput") {
		if lat, err := storeFsyncLatency(tmp); err == nil {
			metrics["fsync_latency_ms"] = round(lat.Seconds()*1000, 3)
		}
		for _, run := range []struct {
			key       string
			producers int
			each      bool
		}{
			{"appends_per_s_p1", 1, false},
			{"appends_per_s_p16", 16, false},
			{"appends_per_s_p64", 64, false},
			{"fsync_each_appends_per_s_p16", 16, true},
		} {
			opt.Log.progress("%s...", run.key)
			rate, err := storeThroughput(ctx, fmt.Sprintf("%s/%s", tmp, run.key), run.producers, run.each, opt.Duration, payload)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", run.key, err)
			}
			metrics[run.key] = round(rate, 1)
		}
	}
	if ctx.Err() != nil {
		return nil, errInterrupted
	}

	rep := &Report{Bench: "store", Machine: machine(), Metrics: metrics}
	var text strings.Builder
	tw := tabwriter.NewWriter(&text, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", rep.Machine)
	for _, k := range []string{"appends_per_s_p1", "appends_per_s_p16", "appends_per_s_p64",
		"fsync_each_appends_per_s_p16", "fsync_latency_ms", "reopen_1m_s", "peak_rss_mib", "peak_rss_anon_mib"} {
		if v, ok := metrics[k]; ok {
			fmt.Fprintf(tw, "%s\t%s\n", k, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	if g, e := metrics["appends_per_s_p16"], metrics["fsync_each_appends_per_s_p16"]; g > 0 && e > 0 {
		fmt.Fprintf(tw, "group commit vs sync each (p16)\t%.1fx\n", g/e)
	}
	for _, n := range notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	tw.Flush()
	rep.Text = text.String()
	return rep, nil
}

// storeThroughput runs producers closed-loop Appends of one record each for
// d and returns appends/s.
func storeThroughput(ctx context.Context, dir string, producers int, each bool, d time.Duration, payload []byte) (float64, error) {
	q, err := store.Open(dir, store.Options{SyncEach: each})
	if err != nil {
		return 0, err
	}
	defer q.Close()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for p := range producers {
		wg.Go(func() {
			dev := fmt.Sprintf("dev-%d", p)
			for ctx.Err() == nil {
				r := &msg.Record{Device: dev, Priority: msg.Normal, Payload: payload}
				if err := q.Append(context.Background(), r); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), firstErr
}

type backlogResult struct{ fill, reopen, drain time.Duration }

// storeBacklog appends n records (16 producers, 16 records per Append),
// closes, reopens (timed until the first record is leased) and drains them
// all with Lease/Ack.
func storeBacklog(ctx context.Context, dir string, n int, payload []byte) (backlogResult, error) {
	var res backlogResult
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		return res, err
	}
	start := time.Now()
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	const batch = 16
	for p := range 16 {
		wg.Go(func() {
			dev := fmt.Sprintf("dev-%d", p)
			for ctx.Err() == nil {
				k := int(next.Add(batch)) - batch
				if k >= n {
					return
				}
				recs := make([]*msg.Record, min(batch, n-k))
				for i := range recs {
					recs[i] = &msg.Record{Device: dev, Priority: msg.Normal, Payload: payload}
				}
				if err := q.Append(ctx, recs...); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	res.fill = time.Since(start)
	if err := errors.Join(firstErr, q.Close(), ctx.Err()); err != nil {
		return res, err
	}

	start = time.Now()
	q, err = store.Open(dir, store.Options{})
	if err != nil {
		return res, err
	}
	defer q.Close()
	recs, err := q.Lease(ctx, 1)
	if err != nil {
		return res, err
	}
	res.reopen = time.Since(start)
	if st := q.Stats(); st.Depth != uint64(n) {
		return res, fmt.Errorf("reopened store holds %d records, want %d", st.Depth, n)
	}

	start = time.Now()
	drained := 0
	for {
		if err := q.Ack(recs[0].Seq); err != nil {
			return res, err
		}
		seqs := make([]uint64, 0, 256)
		drained += len(recs)
		if drained >= n {
			break
		}
		recs, err = q.Lease(ctx, 256)
		if err != nil {
			return res, err
		}
		for _, r := range recs[1:] {
			seqs = append(seqs, r.Seq)
		}
		if err := q.Ack(seqs...); err != nil {
			return res, err
		}
	}
	res.drain = time.Since(start)
	return res, nil
}

// storeFsyncLatency is the median time to append 256 bytes to a file and
// fdatasync it, on the file system of dir: the floor under one durable batch.
func storeFsyncLatency(dir string) (time.Duration, error) {
	f, err := os.CreateTemp(dir, "fsync-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 256)
	lat := make([]time.Duration, 200)
	for i := range lat {
		start := time.Now()
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		lat[i] = time.Since(start)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], nil
}

// storePeakAnon samples this process's anonymous resident memory (RssAnon:
// heap, stacks, Badger's arenas; not mapped files) every 10ms until stop and
// returns the peak in MiB.
func storePeakAnon(stop <-chan struct{}) float64 {
	var peak float64
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if v, ok := selfStatus("RssAnon:"); ok {
			peak = max(peak, v)
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}
