package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
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

// benchStore implements `outpost bench store`: durable appends/s of 200-byte
// records with 1, 16 and 64 concurrent producers (each Append returns after
// its batch is synced), the same with one sync per append as the baseline,
// the time to reopen a store holding 1,000,000 records until the first
// record is leased, and this process's peak RSS while appending and draining
// those records (measured before the throughput runs).
func benchStore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench store", "[--json] [--dir DIR] [--duration D] [--records N] [--size BYTES]\n\n"+
		"Durable appends/s with 1, 16 and 64 producers vs one sync per append, reopen time and peak RSS\n"+
		"with a large backlog. Runs in a temporary directory on the file system of --dir.", stderr)
	asJSON := fs.Bool("json", false, `print one JSON object {"bench":"store","machine":...,"metrics":{...}}`)
	dir := fs.String("dir", os.TempDir(), "where to create the temporary stores (use the data_dir's file system)")
	dur := fs.Duration("duration", 3*time.Second, "length of each throughput run")
	records := fs.Int("records", 1_000_000, "backlog for the reopen and RSS runs (0 skips them)")
	size := fs.Int("size", 200, "payload bytes per record")
	only := fs.String("only", "", "run only these parts, comma-separated: backlog, throughput")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	tmp, err := os.MkdirTemp(*dir, "outpost-bench-store-")
	if err != nil {
		fmt.Fprintf(stderr, "outpost bench store: %v\n", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	var fs0 syscall.Statfs_t
	if syscall.Statfs(tmp, &fs0) == nil && fs0.Type == 0x01021994 { // TMPFS_MAGIC
		fmt.Fprintf(stderr, "outpost bench store: note: %s is a tmpfs (RAM); use --dir on the data_dir's file system\n", *dir)
	}
	want := func(part string) bool { return *only == "" || strings.Contains(","+*only+",", ","+part+",") }

	metrics := map[string]float64{}
	var notes []string
	payload := make([]byte, *size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	progress := func(f string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(stderr, f+"\n", a...)
		}
	}

	if *records > 0 && want("backlog") {
		progress("backlog: appending and draining %d records...", *records)
		stopPeak := make(chan struct{})
		peakAnon := make(chan float64, 1)
		go func() { peakAnon <- storePeakAnon(stopPeak) }()
		r, err := storeBacklog(ctx, tmp+"/backlog", *records, payload)
		close(stopPeak)
		anon := <-peakAnon
		if err != nil {
			fmt.Fprintf(stderr, "outpost bench store: backlog: %v\n", err)
			return 1
		}
		if *records == 1_000_000 {
			metrics["reopen_1m_s"] = storeRound(r.reopen.Seconds(), 3)
		} else {
			notes = append(notes, fmt.Sprintf("reopen with %d records: %.3fs", *records, r.reopen.Seconds()))
		}
		if rss, ok := storePeakRSS(); ok {
			metrics["peak_rss_mib"] = storeRound(rss, 1)
		}
		if anon > 0 {
			// The rest of the RSS is Badger's memory-mapped table files:
			// page cache the kernel reclaims under pressure.
			metrics["peak_rss_anon_mib"] = storeRound(anon, 1)
		}
		notes = append(notes, fmt.Sprintf("backlog fill %.0f records/s, drain %.0f records/s",
			float64(*records)/r.fill.Seconds(), float64(*records)/r.drain.Seconds()))
	}
	if want("throughput") {
		if lat, err := storeFsyncLatency(tmp); err == nil {
			metrics["fsync_latency_ms"] = storeRound(lat.Seconds()*1000, 3)
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
			progress("%s...", run.key)
			rate, err := storeThroughput(ctx, fmt.Sprintf("%s/%s", tmp, run.key), run.producers, run.each, *dur, payload)
			if err != nil {
				fmt.Fprintf(stderr, "outpost bench store: %s: %v\n", run.key, err)
				return 1
			}
			metrics[run.key] = storeRound(rate, 1)
		}
	}
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "outpost bench store: interrupted")
		return 1
	}

	if *asJSON {
		b, _ := json.Marshal(map[string]any{"bench": "store", "machine": storeMachine(), "metrics": metrics})
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", storeMachine())
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
	return 0
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

// storeMachine describes this machine for the JSON report.
func storeMachine() string {
	host, _ := os.Hostname()
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (strings.TrimSpace(k) == "model name" || strings.TrimSpace(k) == "Model") {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	s := fmt.Sprintf("%s %s/%s %d CPU", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if model != "" {
		s += " (" + model + ")"
	}
	return s
}

// storePeakAnon samples this process's anonymous resident memory (RssAnon:
// heap, stacks, Badger's arenas; not mapped files) every 10ms until stop and
// returns the peak in MiB.
func storePeakAnon(stop <-chan struct{}) float64 {
	var peak float64
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if v, ok := storeStatus("RssAnon:"); ok {
			peak = max(peak, v)
		}
		select {
		case <-stop:
			return peak
		case <-t.C:
		}
	}
}

// storePeakRSS is this process's peak resident set in MiB (VmHWM).
func storePeakRSS() (float64, bool) { return storeStatus("VmHWM:") }

// storeStatus reads a kB field of /proc/self/status, in MiB.
func storeStatus(field string) (float64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, false
			}
			return kb / 1024, true
		}
	}
	return 0, false
}

func storeRound(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
