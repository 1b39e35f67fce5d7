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
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// benchIngest is `outpost bench ingest`: N MQTT 3.1.1 clients over loopback
// each keep M QoS 1 publishes in flight against the local hub on a real
// store (every PUBACK is a durable message) and, with --vs-mosquitto, the
// same load against a Mosquitto started here (which acknowledges from
// memory). The same load generator drives both.
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
	asJSON := fs.Bool("json", false, `print one JSON object {"bench":"ingest","machine":...,"metrics":{...}}`)
	dir := fs.String("dir", "", "where the store goes (default: a temporary directory, removed after)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the outpost runs to this file")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if *clients < 1 || *inflight < 1 || *inflight > 65535 || *size < 0 || *dur <= 0 {
		fmt.Fprintln(stderr, "bench ingest: --clients, --inflight (1..65535), --size and --duration must be positive")
		return 2
	}
	load := ingestLoad{clients: *clients, inflight: *inflight, size: *size, dur: *dur}
	metrics := map[string]float64{}
	var rows [][2]string
	add := func(key, label string, v float64) {
		metrics[key] = v
		rows = append(rows, [2]string{label, strconv.FormatFloat(v, 'f', -1, 64)})
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "bench ingest: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "bench ingest: %v\n", err)
			return 1
		}
	}
	ours, err := ingestOutpost(ctx, *dir, load)
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench ingest: %v\n", err)
		return 1
	}
	add("outpost_msgs_per_s", fmt.Sprintf("outpost, %d clients x %d in flight (msgs/s)", load.clients, load.inflight), ingestRound1(ours.multi))
	add("single_client_msgs_per_s", fmt.Sprintf("outpost, 1 client x %d in flight (msgs/s)", load.inflight), ingestRound1(ours.single))
	if *vsMosq {
		m, err := ingestMosquitto(ctx, load)
		if err != nil {
			fmt.Fprintf(stderr, "bench ingest: mosquitto: %v\n", err)
			return 1
		}
		add("mosquitto_msgs_per_s", fmt.Sprintf("mosquitto, %d clients x %d in flight (msgs/s)", load.clients, load.inflight), ingestRound1(m.multi))
		add("mosquitto_single_client_msgs_per_s", fmt.Sprintf("mosquitto, 1 client x %d in flight (msgs/s)", load.inflight), ingestRound1(m.single))
		if m.multi > 0 {
			add("ratio", "ratio outpost/mosquitto", ingestRound3(ours.multi/m.multi))
		}
		if m.single > 0 {
			add("single_client_ratio", "ratio outpost/mosquitto, 1 client", ingestRound3(ours.single/m.single))
		}
	}
	if rss, ok := storePeakRSS(); ok {
		add("peak_rss_mib", "peak RSS of this process, load generator included (MiB)", ingestRound1(rss))
	}
	if *asJSON {
		b, _ := json.Marshal(map[string]any{"bench": "ingest", "machine": storeMachine(), "metrics": metrics})
		fmt.Fprintln(stdout, string(b))
		return 0
	}
	fmt.Fprintf(stdout, "bench ingest on %s: QoS 1, %d-byte payloads, %v per run\n", storeMachine(), load.size, load.dur)
	for _, r := range rows {
		fmt.Fprintf(stdout, "  %-62s %s\n", r[0], r[1])
	}
	return 0
}

type ingestLoad struct {
	clients, inflight, size int
	dur                     time.Duration
}

type ingestResult struct{ multi, single float64 }

func ingestRound1(v float64) float64 { return float64(int64(v*10+0.5)) / 10 }
func ingestRound3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// ingestOutpost measures the hub on a real store in dir (or a temp dir).
func ingestOutpost(ctx context.Context, dir string, load ingestLoad) (ingestResult, error) {
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
		h, err := hub.New(hub.Options{Config: hub.Config{Listen: "127.0.0.1:0", Clients: cs, MaxInflight: load.inflight, ConnectBurst: 2 * n}}, q)
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
	if res.multi, err = run(load.clients, "multi"); err != nil {
		return res, err
	}
	if res.single, err = run(1, "single"); err != nil {
		return res, err
	}
	return res, nil
}

// ingestMosquitto measures a Mosquitto started here on a free loopback port.
func ingestMosquitto(ctx context.Context, load ingestLoad) (ingestResult, error) {
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
	if res.multi, err = ingestDrive(ctx, addr, load.clients, load, ""); err != nil {
		return res, err
	}
	if res.single, err = ingestDrive(ctx, addr, 1, load, ""); err != nil {
		return res, err
	}
	return res, nil
}

// ingestDrive connects n clients (bench-0...) to addr and keeps
// load.inflight QoS 1 publishes in flight on each for load.dur after a short
// warm-up; it returns PUBACKs per second over the measured window.
func ingestDrive(ctx context.Context, addr string, n int, load ingestLoad, password string) (float64, error) {
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
	payload := make([]byte, load.size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	for i, c := range conns {
		topic := fmt.Sprintf("devices/bench-%d/messages/events/", i)
		wg.Go(func() {
			if err := ingestPublisher(c, topic, payload, load.inflight, stop, func() {
				if counting.Load() {
					acked.Add(1)
				}
			}); err != nil {
				errs <- err
			}
		})
	}
	warm := min(load.dur/5, time.Second)
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
		case <-time.After(load.dur):
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
	str := func(b []byte, s string) []byte { return append(binary.BigEndian.AppendUint16(b, uint16(len(s))), s...) }
	flags := byte(0x02)
	body := str(nil, "MQTT")
	if password != "" {
		flags |= 0xC0
	}
	body = append(body, 4, flags, 0, 60)
	body = str(body, id)
	if password != "" {
		body = str(body, id)
		body = str(body, password)
	}
	pkt := append([]byte{0x10}, ingestVarint(len(body))...)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(append(pkt, body...)); err != nil {
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

func ingestVarint(n int) []byte {
	var b []byte
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
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
	body := binary.BigEndian.AppendUint16(nil, uint16(len(topic)))
	body = append(body, topic...)
	pidAt := len(body)
	body = append(body, 0, 0)
	body = append(body, payload...)
	pkt := append([]byte{0x32}, ingestVarint(len(body))...)
	pidAt += len(pkt)
	pkt = append(pkt, body...)
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
