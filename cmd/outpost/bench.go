package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/outpost-iot/outpost/gateway/bench"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	benches := []struct {
		name, summary string
		run           func(context.Context, []string, io.Writer, io.Writer) int
	}{
		{"store", "durable appends/s (1, 16, 64 producers) vs one fsync per append; reopen with 1M records", benchStore},
		{"ingest", "durable QoS 1 msgs/s through the hub, optionally vs Mosquitto", benchIngest},
		{"drain", "a large backlog forwarded to a local Mosquitto", benchDrain},
		{"restart", "time from start to ready with 1,000,000 records queued", benchRestart},
	}
	if len(args) > 0 {
		for _, b := range benches {
			if b.name == args[0] {
				return b.run(ctx, args[1:], stdout, stderr)
			}
		}
	}
	w := stdout
	code := 0
	if len(args) == 0 || (args[0] != "-h" && args[0] != "--help") {
		w, code = stderr, 2
	}
	fmt.Fprintln(w, "Usage: outpost bench NAME [--json] [flags]\n\nBenchmarks:")
	for _, b := range benches {
		fmt.Fprintf(w, "  %-7s %s\n", b.name, b.summary)
	}
	return code
}

// benchLog sends a benchmark's progress (unless asJSON) and its notes to
// stderr, the notes prefixed with prefix.
func benchLog(stderr io.Writer, prefix string, asJSON bool) bench.Log {
	l := bench.Log{Note: func(f string, a ...any) { fmt.Fprintf(stderr, prefix+f+"\n", a...) }}
	if !asJSON {
		l.Progress = func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }
	}
	return l
}

// benchReport prints rep (as JSON with asJSON) or the error, prefixed.
func benchReport(rep *bench.Report, err error, asJSON bool, prefix string, stdout, stderr io.Writer) int {
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		return 1
	}
	if asJSON {
		fmt.Fprintln(stdout, string(rep.JSON()))
	} else {
		fmt.Fprint(stdout, rep.Text)
	}
	return 0
}

func jsonFlagHelp(name string) string {
	return `print one JSON object {"bench":"` + name + `","machine":...,"metrics":{...}}`
}

func benchStore(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench store", "[--json] [--dir DIR] [--duration D] [--records N] [--size BYTES]\n\n"+
		"Durable appends/s with 1, 16 and 64 producers vs one sync per append, reopen time and peak RSS\n"+
		"with a large backlog. Runs in a temporary directory on the file system of --dir.", stderr)
	asJSON := fs.Bool("json", false, jsonFlagHelp("store"))
	dir := fs.String("dir", os.TempDir(), "where to create the temporary stores (use the data_dir's file system)")
	dur := fs.Duration("duration", 3*time.Second, "length of each throughput run")
	records := fs.Int("records", 1_000_000, "backlog for the reopen and RSS runs (0 skips them)")
	size := fs.Int("size", 200, "payload bytes per record")
	only := fs.String("only", "", "run only these parts, comma-separated: backlog, throughput")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	const prefix = "outpost bench store: "
	rep, err := bench.Store(ctx, bench.StoreOptions{Dir: *dir, Duration: *dur, Records: *records, Size: *size, Only: *only,
		Log: benchLog(stderr, prefix, *asJSON)})
	return benchReport(rep, err, *asJSON, prefix, stdout, stderr)
}

func benchIngest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench ingest", "[--clients N] [--inflight M] [--size BYTES] [--duration D] [--vs-mosquitto] [--json]\n\n"+
		"Durable QoS 1 messages per second through the local hub (PUBACK after fsync), with N clients\n"+
		"keeping M publishes in flight each, plus a single client with M in flight; --vs-mosquitto\n"+
		"runs the same load against a Mosquitto started by the benchmark and reports the ratio.", stderr)
	clients := fs.Int("clients", 16, "concurrent publishing clients")
	inflight := fs.Int("inflight", 64, "QoS 1 publishes in flight per client")
	size := fs.Int("size", 200, "payload bytes")
	dur := fs.Duration("duration", 5*time.Second, "measuring time per run")
	vsMosq := fs.Bool("vs-mosquitto", false, "also measure a Mosquitto started by the benchmark")
	asJSON := fs.Bool("json", false, jsonFlagHelp("ingest"))
	dir := fs.String("dir", "", "where the store goes (default: a temporary directory, removed after)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the outpost runs to this file")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *clients < 1 || *inflight < 1 || *inflight > 65535 || *size < 0 || *dur <= 0 {
		fmt.Fprintln(stderr, "bench ingest: --clients, --inflight (1..65535), --size and --duration must be positive")
		return 2
	}
	rep, err := bench.Ingest(ctx, bench.IngestOptions{Clients: *clients, Inflight: *inflight, Size: *size, Duration: *dur,
		VsMosquitto: *vsMosq, Dir: *dir, CPUProfile: *cpuprofile})
	return benchReport(rep, err, *asJSON, "bench ingest: ", stdout, stderr)
}

func benchDrain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench drain", "[--records N] [--size BYTES] [--inflight N] [--dir DIR] [--json]\n\n"+
		"Forwards a backlog from a real store to a local Mosquitto (QoS 1) while fresh\n"+
		"messages arrive at 50/s; reports msgs/s and the fresh messages' p99 latency.", stderr)
	asJSON := fs.Bool("json", false, jsonFlagHelp("drain"))
	records := fs.Int("records", 1_000_000, "backlog size")
	size := fs.Int("size", 200, "payload bytes per record")
	inflight := fs.Int("inflight", 64, "cloud.max_inflight")
	dir := fs.String("dir", os.TempDir(), "where to create the temporary store")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the drain phase to this file")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	const prefix = "outpost bench drain: "
	rep, err := bench.Drain(ctx, bench.DrainOptions{Records: *records, Size: *size, Inflight: *inflight, Dir: *dir,
		CPUProfile: *cpuprofile, Log: benchLog(stderr, prefix, *asJSON)})
	return benchReport(rep, err, *asJSON, prefix, stdout, stderr)
}

func benchRestart(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench restart", "[--records N] [--size BYTES] [--runs N] [--dir DIR] [--json]\n\n"+
		"Times `outpost run` from exec to a healthy /healthz with a large queue on disk.", stderr)
	asJSON := fs.Bool("json", false, jsonFlagHelp("restart"))
	records := fs.Int("records", 1_000_000, "records queued in the store")
	size := fs.Int("size", 200, "payload bytes per record")
	runs := fs.Int("runs", 3, "restarts to time (the median is reported)")
	dir := fs.String("dir", os.TempDir(), "where to create the temporary data dir")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	const prefix = "outpost bench restart: "
	if *records < 0 || *runs < 1 {
		return benchReport(nil, errors.New("--records must be ≥ 0 and --runs ≥ 1"), *asJSON, prefix, stdout, stderr)
	}
	exe, err := os.Executable()
	if err != nil {
		return benchReport(nil, err, *asJSON, prefix, stdout, stderr)
	}
	rep, err := bench.Restart(ctx, bench.RestartOptions{Exe: exe, Records: *records, Size: *size, Runs: *runs, Dir: *dir,
		Log: benchLog(stderr, prefix, *asJSON)})
	return benchReport(rep, err, *asJSON, prefix, stdout, stderr)
}
