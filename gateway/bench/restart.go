package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// RestartOptions configure Restart.
type RestartOptions struct {
	Exe     string // the outpost binary, started as `Exe run -c CONFIG`
	Records int    // records queued in the store (≥ 0)
	Size    int    // payload bytes per record
	Runs    int    // restarts to time, ≥ 1 (the median is reported)
	Dir     string // where to create the temporary data dir
	Log     Log
}

// Restart fills a store with Records queued records (written with the store
// package, as a gateway that was offline would have left it), then starts
// `outpost run` on it Runs times as a child process. Ready is the first 200
// from /healthz, timed from the exec; the store must report every record
// still queued. The child's peak RSS (VmHWM) is read a second after it is
// ready. An empty store is timed first: the floor every start pays.
func Restart(ctx context.Context, opt RestartOptions) (*Report, error) {
	tmp, err := os.MkdirTemp(opt.Dir, "outpost-bench-restart-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	data := filepath.Join(tmp, "data")

	cfg, httpAddr, err := restartConfig(tmp, data)
	if err != nil {
		return nil, err
	}
	empty, err := timeStart(ctx, opt.Exe, cfg, httpAddr, 0)
	if err != nil {
		return nil, fmt.Errorf("empty store: %w", err)
	}

	q, err := store.Open(data, store.Options{})
	if err != nil {
		return nil, err
	}
	opt.Log.progress("filling the store with %d records of %d bytes...", opt.Records, opt.Size)
	fillStart := time.Now()
	if err := restartFill(ctx, q, opt.Records, opt.Size); err != nil {
		q.Close()
		return nil, err
	}
	depth := q.Stats().Depth
	if err := q.Close(); err != nil {
		return nil, err
	}
	opt.Log.progress("  filled in %v (%d queued, the empty store's records included)", time.Since(fillStart).Round(time.Millisecond), depth)

	var readies []time.Duration
	var peak float64
	for i := range opt.Runs {
		r, err := timeStart(ctx, opt.Exe, cfg, httpAddr, depth)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i+1, err)
		}
		opt.Log.progress("  run %d: ready in %v, peak RSS %.1f MiB", i+1, r.ready.Round(time.Millisecond), r.rss)
		readies = append(readies, r.ready)
		peak = max(peak, r.rss)
	}
	slices.Sort(readies)
	median := readies[len(readies)/2]

	metrics := map[string]float64{"ready_s_empty": round(empty.ready.Seconds(), 3)}
	key := "ready_s"
	if opt.Records == 1_000_000 {
		key = "ready_s_1m"
	}
	metrics[key] = round(median.Seconds(), 3)
	if peak > 0 {
		metrics["peak_rss_mib"] = round(peak, 1)
	}
	rep := &Report{Bench: "restart", Machine: machine(), Metrics: metrics}
	var text strings.Builder
	tw := tabwriter.NewWriter(&text, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%s\n", rep.Machine)
	fmt.Fprintf(tw, "queue\t%d records of %d bytes; median of %d starts\n", opt.Records, opt.Size, opt.Runs)
	for _, k := range []string{key, "ready_s_empty", "peak_rss_mib"} {
		if v, ok := metrics[k]; ok {
			fmt.Fprintf(tw, "%s\t%s\n", k, strconv.FormatFloat(v, 'f', -1, 64))
		}
	}
	tw.Flush()
	rep.Text = text.String()
	return rep, nil
}

// restartConfig writes a config for a gateway on data whose cloud link
// points at a loopback port nothing listens on (the queue stays queued),
// and returns its path and HTTP address.
func restartConfig(dir, data string) (path, httpAddr string, err error) {
	port := func() (int, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	hp, err := port()
	if err != nil {
		return "", "", err
	}
	mp, err := port()
	if err != nil {
		return "", "", err
	}
	cp, err := port()
	if err != nil {
		return "", "", err
	}
	httpAddr = "127.0.0.1:" + strconv.Itoa(hp)
	body := fmt.Sprintf("gateway:\n  id: bench-restart\n  data_dir: %s\nhub:\n  listen: 127.0.0.1:%d\nhttp:\n  listen: %s\n"+
		"cloud:\n  protocol: mqtt\n  url: mqtt://127.0.0.1:%d\n  client_id: bench-restart\n", data, mp, httpAddr, cp)
	path = filepath.Join(dir, "outpost.yaml")
	return path, httpAddr, os.WriteFile(path, []byte(body), 0o600)
}

type startTiming struct {
	ready time.Duration
	rss   float64 // MiB
}

// timeStart runs `exe run -c cfg`, times exec → /healthz 200, checks that
// the queue holds want records, reads the peak RSS a second later and
// stops the gateway with SIGTERM.
func timeStart(ctx context.Context, exe, cfg, httpAddr string, want uint64) (startTiming, error) {
	var res startTiming
	cmd := exec.Command(exe, "run", "-c", cfg, "--log-level", "warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			return errors.New("did not exit within 30s of SIGTERM")
		}
	}
	c := http.Client{Timeout: time.Second}
	for {
		if ctx.Err() != nil {
			_ = stop()
			return res, ctx.Err()
		}
		select {
		case err := <-exited:
			return res, fmt.Errorf("outpost run exited: %v\n%s", err, out.String())
		default:
		}
		if resp, err := c.Get("http://" + httpAddr + "/healthz"); err == nil {
			code := resp.StatusCode
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if code == http.StatusOK {
				res.ready = time.Since(start)
				break
			}
			if time.Since(start) > 5*time.Minute {
				_ = stop()
				return res, fmt.Errorf("/healthz %d %s after 5 min", code, body)
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	var st struct {
		Queue struct{ Depth uint64 } `json:"queue"`
	}
	if resp, err := c.Get("http://" + httpAddr + "/api/status"); err == nil {
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
	}
	time.Sleep(time.Second)
	res.rss = procPeakRSS(cmd.Process.Pid)
	if err := stop(); err != nil {
		return res, fmt.Errorf("stop: %v\n%s", err, out.String())
	}
	if st.Queue.Depth != want {
		return res, fmt.Errorf("the started gateway reports %d records queued, want %d", st.Queue.Depth, want)
	}
	return res, nil
}

// restartFill appends n records of size bytes over 8 devices, in batches
// small enough for one store transaction.
func restartFill(ctx context.Context, q *store.Queue, n, size int) error {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	batch := max(1, min(1000, 100_000/(size+64)))
	recs := make([]*msg.Record, 0, batch)
	for i := 0; i < n; i++ {
		recs = append(recs, &msg.Record{Device: "dev-" + strconv.Itoa(i%8), Priority: msg.Normal,
			Props: msg.Props{{Key: msg.PropContentType, Value: msg.ContentTypeJSON}}, Payload: payload})
		if len(recs) == batch || i == n-1 {
			if err := q.Append(ctx, recs...); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	return nil
}

// limitedBuffer keeps the last 16 KiB written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.b = append(l.b, p...)
	if len(l.b) > 16<<10 {
		l.b = l.b[len(l.b)-16<<10:]
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }
