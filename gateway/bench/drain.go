package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// DrainOptions configure Drain.
type DrainOptions struct {
	Records    int    // backlog size
	Size       int    // payload bytes per record
	Inflight   int    // cloud.max_inflight
	Dir        string // where to create the temporary store
	CPUProfile string // write a CPU profile of the drain phase to this file ("": none)
	Log        Log
}

// Drain forwards a backlog of Records records in a real store on disk with
// cloudlink to a local Mosquitto (QoS 1, each record acked in the store on
// its PUBACK), while fresh records arrive at 50/s; it reports the drain rate
// and how late the fresh records were (append to arrival at a subscriber,
// p99). Then the same backlog goes through a Mosquitto bridge (bridge.go),
// the peer in the same run.
func Drain(ctx context.Context, opt DrainOptions) (*Report, error) {
	tmp, err := os.MkdirTemp(opt.Dir, "outpost-bench-drain-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	q, err := store.Open(filepath.Join(tmp, "data"), store.Options{})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	opt.Log.progress("filling the store with %d records of %d bytes...", opt.Records, opt.Size)
	if err := drainFill(ctx, q, opt.Records, opt.Size); err != nil {
		return nil, err
	}
	mq, err := startMosquitto(ctx, tmp)
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("devices/fresh/messages/events/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("subscribe: %v", tok.Error())
	}

	s, err := cloudlink.New(cloudlink.Options{Config: cloudlink.Config{URL: "mqtt://" + mq.addr, ClientID: "bench-drain", MaxInflight: opt.Inflight}}, q)
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	opt.Log.progress("draining to Mosquitto %s...", mq.addr)
	if opt.CPUProfile != "" {
		f, err := os.Create(opt.CPUProfile)
		if err != nil {
			stopRun()
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			stopRun()
			return nil, err
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
			return nil, fmt.Errorf("cloud link stopped: %v", err)
		case <-tick.C:
		}
		st := s.Status()
		if st.Forwarded >= uint64(opt.Records+freshSent) {
			drained = time.Since(start)
			break
		}
		if int(st.Forwarded) < opt.Records {
			p := make([]byte, 8)
			binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
			if err := q.Append(ctx, &msg.Record{Device: "fresh", Priority: msg.Normal, Payload: p}); err != nil {
				stopRun()
				return nil, err
			}
			freshSent++
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			opt.Log.progress("  %d forwarded, %.0f msgs/s", st.Forwarded, float64(st.Forwarded)/time.Since(start).Seconds())
		}
	}
	tick.Stop()
	stopRun()
	<-runErr
	if ctx.Err() != nil {
		return nil, errInterrupted
	}
	// Let the last fresh deliveries reach the subscriber.
	deadline := time.Now().Add(5 * time.Second)
	for lat.count() < freshSent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	metrics := map[string]float64{
		"outpost_msgs_per_s": round(float64(opt.Records+freshSent)/drained.Seconds(), 1),
	}
	if p99, ok := lat.p99(); ok && lat.count() == freshSent {
		metrics["fresh_p99_ms"] = round(p99.Seconds()*1000, 1)
	}
	if rss, ok := peakRSS(); ok {
		metrics["peak_rss_mib"] = round(rss, 1)
	}
	opt.Log.progress("the same backlog through a Mosquitto bridge...")
	if br, err := bridgeDrain(ctx, bridgeOptions{Records: opt.Records, Size: opt.Size, Inflight: opt.Inflight, Upstream: mq.addr, Dir: tmp}); err != nil {
		opt.Log.note("bridge comparison not measured: %v", err)
	} else if br.MsgsPerS > 0 {
		opt.Log.progress("  bridge: %d of %d arrived (duplicates included), %v from link restored to the last, its Mosquitto's peak RSS %.1f MiB",
			br.Delivered, opt.Records, br.Elapsed.Round(time.Millisecond), br.PeakRSSMiB)
		metrics["bridge_msgs_per_s"] = round(br.MsgsPerS, 1)
		metrics["ratio"] = round(metrics["outpost_msgs_per_s"]/br.MsgsPerS, 2)
	}
	rep := &Report{Bench: "drain", Machine: machine(), Metrics: metrics}
	var text strings.Builder
	tw := tabwriter.NewWriter(&text, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", rep.Machine)
	fmt.Fprintf(tw, "backlog\t%d records of %d bytes, max_inflight %d\n", opt.Records, opt.Size, opt.Inflight)
	for _, k := range []string{"outpost_msgs_per_s", "bridge_msgs_per_s", "ratio", "fresh_p99_ms", "peak_rss_mib"} {
		if v, ok := metrics[k]; ok {
			fmt.Fprintf(tw, "%s\t%s\n", k, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	fmt.Fprintf(tw, "fresh messages\t%d sent, %d arrived\n", freshSent, lat.count())
	fmt.Fprintf(tw, "took\t%v\n", drained.Round(time.Millisecond))
	tw.Flush()
	rep.Text = text.String()
	return rep, nil
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
