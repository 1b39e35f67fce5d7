package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// IngestOptions configure Ingest.
type IngestOptions struct {
	Clients     int           // concurrent publishing clients
	Inflight    int           // QoS 1 publishes in flight per client (1..65535)
	Size        int           // payload bytes
	Duration    time.Duration // measuring time per run
	VsMosquitto bool          // also measure a Mosquitto started by the benchmark
	Dir         string        // where the store goes ("": a temporary directory, removed after)
	CPUProfile  string        // write a CPU profile of the outpost runs to this file ("": none)
}

// Ingest measures durable QoS 1 messages per second through the local hub
// on a real store (every PUBACK is a durable message): Clients MQTT 3.1.1
// clients over loopback each keep Inflight publishes in flight, then a
// single client does. With VsMosquitto the same load generator drives a
// Mosquitto started here (which acknowledges from memory), and the ratios
// are reported.
func Ingest(ctx context.Context, opt IngestOptions) (*Report, error) {
	load := opt
	metrics := map[string]float64{}
	var rows [][2]string
	add := func(key, label string, v float64) {
		metrics[key] = v
		rows = append(rows, [2]string{label, strconv.FormatFloat(v, 'f', -1, 64)})
	}

	if opt.CPUProfile != "" {
		f, err := os.Create(opt.CPUProfile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
	}
	ours, err := ingestOutpost(ctx, opt.Dir, load)
	if opt.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return nil, err
	}
	add("outpost_msgs_per_s", fmt.Sprintf("outpost, %d clients x %d in flight (msgs/s)", load.Clients, load.Inflight), ingestRound1(ours.multi))
	add("single_client_msgs_per_s", fmt.Sprintf("outpost, 1 client x %d in flight (msgs/s)", load.Inflight), ingestRound1(ours.single))
	if opt.VsMosquitto {
		m, err := ingestMosquitto(ctx, load)
		if err != nil {
			return nil, fmt.Errorf("mosquitto: %w", err)
		}
		add("mosquitto_msgs_per_s", fmt.Sprintf("mosquitto, %d clients x %d in flight (msgs/s)", load.Clients, load.Inflight), ingestRound1(m.multi))
		add("mosquitto_single_client_msgs_per_s", fmt.Sprintf("mosquitto, 1 client x %d in flight (msgs/s)", load.Inflight), ingestRound1(m.single))
		if m.multi > 0 {
			add("ratio", "ratio outpost/mosquitto", ingestRound3(ours.multi/m.multi))
		}
		if m.single > 0 {
			add("single_client_ratio", "ratio outpost/mosquitto, 1 client", ingestRound3(ours.single/m.single))
		}
	}
	if rss, ok := peakRSS(); ok {
		add("peak_rss_mib", "peak RSS of this process, load generator included (MiB)", ingestRound1(rss))
	}
	rep := &Report{Bench: "ingest", Machine: machine(), Metrics: metrics}
	var text strings.Builder
	fmt.Fprintf(&text, "bench ingest on %s: QoS 1, %d-byte payloads, %v per run\n", rep.Machine, load.Size, load.Duration)
	for _, r := range rows {
		fmt.Fprintf(&text, "  %-62s %s\n", r[0], r[1])
	}
	rep.Text = text.String()
	return rep, nil
}

type ingestResult struct{ multi, single float64 }

func ingestRound1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
func ingestRound3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// ingestOutpost measures the hub on a real store in dir (or a temp dir).
func ingestOutpost(ctx context.Context, dir string, load IngestOptions) (ingestResult, error) {
	var res ingestResult
	if dir == "" {
		d, err := os.MkdirTemp("", "outpost-bench-ingest-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	const password = "bench"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return res, err
	}
	run := func(n int, sub string) (float64, error) {
		q, err := store.Open(filepath.Join(dir, sub), store.Options{})
		if err != nil {
			return 0, err
		}
		defer q.Close()
		var cs []hub.Client
		for i := range n {
			cs = append(cs, hub.Client{ID: fmt.Sprintf("bench-%d", i), PasswordHash: string(hash), Priority: msg.Normal})
		}
		h, err := hub.New(hub.Options{Config: hub.Config{Listen: "127.0.0.1:0", Clients: cs, MaxInflight: load.Inflight, ConnectBurst: 2 * n}}, q)
		if err != nil {
			return 0, err
		}
		if err := h.Start(); err != nil {
			return 0, err
		}
		defer h.Close()
		rate, err := ingestDrive(ctx, h.Addr(), n, load, password)
		if err == nil {
			if st := q.Stats(); st.Appends == 0 {
				err = errors.New("nothing reached the store")
			}
		}
		return rate, err
	}
	if res.multi, err = run(load.Clients, "multi"); err != nil {
		return res, err
	}
	if res.single, err = run(1, "single"); err != nil {
		return res, err
	}
	return res, nil
}

// ingestMosquitto measures a Mosquitto started here on a free loopback port.
func ingestMosquitto(ctx context.Context, load IngestOptions) (ingestResult, error) {
	var res ingestResult
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return res, fmt.Errorf("mosquitto not installed: %w", err)
	}
	d, err := os.MkdirTemp("", "outpost-bench-mosq-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(d)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(d, "mosquitto.conf")
	text := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nmax_inflight_messages 0\nmax_queued_messages 0\n", port)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, bin, "-c", conf)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		running := regexp.MustCompile(`mosquitto version \S+ running`)
		var out strings.Builder
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if running.MatchString(sc.Text()) {
				ready <- nil
				for sc.Scan() {
				}
				return
			}
		}
		ready <- fmt.Errorf("exited before running:\n%s", out.String())
	}()
	select {
	case err := <-ready:
		if err != nil {
			return res, err
		}
	case <-time.After(10 * time.Second):
		return res, errors.New("did not start within 10s")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if res.multi, err = ingestDrive(ctx, addr, load.Clients, load, ""); err != nil {
		return res, err
	}
	if res.single, err = ingestDrive(ctx, addr, 1, load, ""); err != nil {
		return res, err
	}
	return res, nil
}

// ingestDrive connects n clients (bench-0...) to addr and keeps
// load.Inflight QoS 1 publishes in flight on each for load.Duration after a short
// warm-up; it returns PUBACKs per second over the measured window.
func ingestDrive(ctx context.Context, addr string, n int, load IngestOptions, password string) (float64, error) {
	var counting atomic.Bool
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	conns := make([]net.Conn, n)
	for i := range n {
		c, err := ingestConnect(addr, fmt.Sprintf("bench-%d", i), password)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return 0, err
		}
		conns[i] = c
	}
	payload := make([]byte, load.Size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for i, c := range conns {
		topic := fmt.Sprintf("devices/bench-%d/messages/events/", i)
		wg.Go(func() {
			if err := ingestPublisher(c, topic, payload, load.Inflight, stop, func() {
				if counting.Load() {
					acked.Add(1)
				}
			}); err != nil {
				errs <- err
			}
		})
	}
	warm := min(load.Duration/5, time.Second)
	var err error
	select {
	case <-time.After(warm):
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-errs:
	}
	var elapsed time.Duration
	if err == nil {
		start := time.Now()
		counting.Store(true)
		select {
		case <-time.After(load.Duration):
		case <-ctx.Done():
			err = ctx.Err()
		case err = <-errs:
		}
		counting.Store(false)
		elapsed = time.Since(start)
	}
	close(stop)
	for _, c := range conns {
		_ = c.SetDeadline(time.Now())
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	if err != nil {
		return 0, err
	}
	return float64(acked.Load()) / elapsed.Seconds(), nil
}

// ingestConnect opens an MQTT 3.1.1 session and waits for a good CONNACK.
func ingestConnect(addr, id, password string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	user := ""
	if password != "" {
		user = id
	}
	pkt := mqttwire.Connect(4, 60, id, user, password)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		c.Close()
		return nil, err
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s: %w", id, err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("connect %s: CONNACK %x", id, ack)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// ingestPublisher keeps inflight QoS 1 publishes outstanding on c until stop,
// calling ack for every PUBACK.
func ingestPublisher(c net.Conn, topic string, payload []byte, inflight int, stop <-chan struct{}, ack func()) error {
	tokens := make(chan struct{}, inflight)
	for range inflight {
		tokens <- struct{}{}
	}
	readErr := make(chan error, 1)
	go func() {
		r := bufio.NewReaderSize(c, 64<<10)
		var hdr [4]byte
		for {
			if _, err := io.ReadFull(r, hdr[:2]); err != nil {
				readErr <- err
				return
			}
			if hdr[0] != 0x40 || hdr[1] != 2 {
				readErr <- fmt.Errorf("unexpected packet %x", hdr[:2])
				return
			}
			if _, err := io.ReadFull(r, hdr[2:4]); err != nil {
				readErr <- err
				return
			}
			ack()
			tokens <- struct{}{}
		}
	}()
	pkt := mqttwire.Publish(4, topic, 0, payload)
	pidAt := len(pkt) - len(payload) - 2 // the packet id, just before the payload
	w := bufio.NewWriterSize(c, 64<<10)
	pid := uint16(0)
	for {
		select {
		case <-stop:
			return nil
		case err := <-readErr:
			select {
			case <-stop:
				return nil
			default:
				return fmt.Errorf("read: %w", err)
			}
		case <-tokens:
		}
		for {
			pid++
			if pid == 0 {
				pid = 1
			}
			binary.BigEndian.PutUint16(pkt[pidAt:], pid)
			if _, err := w.Write(pkt); err != nil {
				return ingestStopped(stop, err)
			}
			select {
			case <-tokens:
				continue
			default:
			}
			break
		}
		if err := w.Flush(); err != nil {
			return ingestStopped(stop, err)
		}
	}
}

func ingestStopped(stop <-chan struct{}, err error) error {
	select {
	case <-stop:
		return nil
	default:
		return fmt.Errorf("write: %w", err)
	}
}
