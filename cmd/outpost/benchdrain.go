package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// benchDrain implements `outpost bench drain`: a backlog of --records
// records in a real store on disk is forwarded by cloudlink to a local
// Mosquitto (QoS 1, each record acked in the store on its PUBACK), while
// fresh records arrive at 50/s; it reports the drain rate and how late the
// fresh records were (append to arrival at a subscriber, p99).
func benchDrain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("bench drain", "[--records N] [--size BYTES] [--inflight N] [--dir DIR] [--json]\n\n"+
		"Forwards a backlog from a real store to a local Mosquitto (QoS 1) while fresh\n"+
		"messages arrive at 50/s; reports msgs/s and the fresh messages' p99 latency.", stderr)
	asJSON := fs.Bool("json", false, `print one JSON object {"bench":"drain","machine":...,"metrics":{...}}`)
	records := fs.Int("records", 1_000_000, "backlog size")
	size := fs.Int("size", 200, "payload bytes per record")
	inflight := fs.Int("inflight", 64, "cloud.max_inflight")
	dir := fs.String("dir", os.TempDir(), "where to create the temporary store")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the drain phase to this file")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "outpost bench drain: %v\n", err)
		return 1
	}
	progress := func(f string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(stderr, f+"\n", a...)
		}
	}
	tmp, err := os.MkdirTemp(*dir, "outpost-bench-drain-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)

	q, err := store.Open(filepath.Join(tmp, "data"), store.Options{})
	if err != nil {
		return fail(err)
	}
	defer q.Close()
	progress("filling the store with %d records of %d bytes...", *records, *size)
	if err := drainFill(ctx, q, *records, *size); err != nil {
		return fail(err)
	}
	mq, err := startBenchMosquitto(ctx, tmp)
	if err != nil {
		return fail(err)
	}
	defer mq.stop()

	// The subscriber sees only the fresh device's messages.
	lat := &latencies{}
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mq.addr).SetClientID("bench-fresh-sub").
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			if p := m.Payload(); len(p) >= 8 {
				lat.add(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(p)))))
			}
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fail(fmt.Errorf("subscriber: %v", tok.Error()))
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("devices/fresh/messages/events/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fail(fmt.Errorf("subscribe: %v", tok.Error()))
	}

	s, err := cloudlink.New(cloudlink.Options{URL: "mqtt://" + mq.addr, ClientID: "bench-drain", MaxInflight: *inflight}, q)
	if err != nil {
		return fail(err)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	progress("draining to Mosquitto %s...", mq.addr)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			stopRun()
			return fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			stopRun()
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	go func() { runErr <- s.Run(runCtx) }()

	// Fresh records at 50/s until the backlog is out.
	var freshSent int
	tick := time.NewTicker(20 * time.Millisecond)
	lastLog := start
	var drained time.Duration
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-runErr:
			stopRun()
			return fail(fmt.Errorf("cloud link stopped: %v", err))
		case <-tick.C:
		}
		st := s.Status()
		if st.Forwarded >= uint64(*records+freshSent) {
			drained = time.Since(start)
			break
		}
		if int(st.Forwarded) < *records {
			p := make([]byte, 8)
			binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
			if err := q.Append(ctx, &msg.Record{Device: "fresh", Priority: msg.Normal, Payload: p}); err != nil {
				stopRun()
				return fail(err)
			}
			freshSent++
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			progress("  %d forwarded, %.0f msgs/s", st.Forwarded, float64(st.Forwarded)/time.Since(start).Seconds())
		}
	}
	tick.Stop()
	stopRun()
	<-runErr
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "outpost bench drain: interrupted")
		return 1
	}
	// Let the last fresh deliveries reach the subscriber.
	deadline := time.Now().Add(5 * time.Second)
	for lat.count() < freshSent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	metrics := map[string]float64{
		"outpost_msgs_per_s": storeRound(float64(*records+freshSent)/drained.Seconds(), 1),
	}
	if p99, ok := lat.p99(); ok && lat.count() == freshSent {
		metrics["fresh_p99_ms"] = storeRound(p99.Seconds()*1000, 1)
	}
	if rss, ok := storePeakRSS(); ok {
		metrics["peak_rss_mib"] = storeRound(rss, 1)
	}
	// The peer in the same run: a Mosquitto bridge draining the same backlog (benchbridge.go).
	progress("the same backlog through a Mosquitto bridge...")
	if br, err := bridgeDrainRun(ctx, bridgeOptions{Records: *records, Size: *size, Inflight: *inflight, Upstream: mq.addr, Dir: tmp}); err != nil {
		fmt.Fprintf(stderr, "outpost bench drain: bridge comparison not measured: %v\n", err)
	} else if br.MsgsPerS > 0 {
		progress("  bridge: %d of %d arrived (duplicates included), %v from link restored to the last, its Mosquitto's peak RSS %.1f MiB",
			br.Delivered, *records, br.Elapsed.Round(time.Millisecond), br.PeakRSSMiB)
		metrics["bridge_msgs_per_s"] = storeRound(br.MsgsPerS, 1)
		metrics["ratio"] = storeRound(metrics["outpost_msgs_per_s"]/br.MsgsPerS, 2)
	}
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"bench": "drain", "machine": storeMachine(), "metrics": metrics})
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", storeMachine())
	fmt.Fprintf(tw, "backlog\t%d records of %d bytes, max_inflight %d\n", *records, *size, *inflight)
	for _, k := range []string{"outpost_msgs_per_s", "bridge_msgs_per_s", "ratio", "fresh_p99_ms", "peak_rss_mib"} {
		if v, ok := metrics[k]; ok {
			fmt.Fprintf(tw, "%s\t%s\n", k, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	fmt.Fprintf(tw, "fresh messages\t%d sent, %d arrived\n", freshSent, lat.count())
	fmt.Fprintf(tw, "took\t%v\n", drained.Round(time.Millisecond))
	tw.Flush()
	return 0
}

// drainFill appends n records of size bytes over 8 devices, 250 per call
// (one Append must fit one Badger transaction: store.ErrTooLarge).
func drainFill(ctx context.Context, q *store.Queue, n, size int) error {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	const batch = 250
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for from := range next {
				recs := make([]*msg.Record, 0, batch)
				for i := from; i < min(from+batch, n); i++ {
					recs = append(recs, &msg.Record{Device: "dev-" + strconv.Itoa(i%8), Priority: msg.Normal,
						Props: msg.Props{{Key: msg.PropContentType, Value: msg.ContentTypeJSON}}, Payload: payload})
				}
				if err := q.Append(ctx, recs...); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
			}
		})
	}
	for from := 0; from < n; from += batch {
		select {
		case next <- from:
		case err := <-errc:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) { l.mu.Lock(); l.d = append(l.d, d); l.mu.Unlock() }
func (l *latencies) count() int          { l.mu.Lock(); defer l.mu.Unlock(); return len(l.d) }
func (l *latencies) p99() (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, false
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[min(len(s)*99/100, len(s)-1)], true
}

// benchMosquitto is a Mosquitto started for a benchmark.
type benchMosquitto struct {
	cmd  *exec.Cmd
	addr string
}

// startBenchMosquitto runs a plain mosquitto on a free loopback port.
func startBenchMosquitto(ctx context.Context, dir string) (*benchMosquitto, error) {
	return runBenchMosquitto(ctx, dir, "mosquitto.conf", func(port int) string {
		return fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n%smax_queued_messages 0\n", port, benchMosquittoLog)
	})
}

// benchMosquittoLog is the logging a benchmark's mosquitto needs: its
// "running" line on stderr.
const benchMosquittoLog = "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"

// runBenchMosquitto writes the config conf(port) for a free loopback port
// to dir/name, starts mosquitto in its own process group and waits for its
// "running" line.
func runBenchMosquitto(ctx context.Context, dir, name string, conf func(port int) string) (*benchMosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is needed for this benchmark: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(conf(port)), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &benchMosquitto{cmd: cmd, addr: "127.0.0.1:" + strconv.Itoa(port)}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		var out []string
		for sc.Scan() {
			out = append(out, sc.Text())
			if strings.Contains(sc.Text(), " running") {
				ready <- nil
				_, _ = io.Copy(io.Discard, errPipe)
				return
			}
		}
		ready <- errors.New("mosquitto exited: " + strings.Join(out, "; "))
	}()
	select {
	case err := <-ready:
		if err != nil {
			m.stop()
			return nil, err
		}
	case <-time.After(10 * time.Second):
		m.stop()
		return nil, errors.New("mosquitto did not start within 10s")
	}
	return m, nil
}

func (m *benchMosquitto) stop() {
	if m.cmd.Process != nil {
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		_ = m.cmd.Wait()
	}
}
