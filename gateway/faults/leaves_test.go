package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// subscribe records every message on devices/# at the upstream broker addr
// into l, with a persistent QoS 1 session so a reconnect loses nothing. It
// returns once the subscription is in place.
func subscribe(t *testing.T, addr string, l *Ledger) {
	t.Helper()
	id := fmt.Sprintf("ledger-%d", time.Now().UnixNano())
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetCleanSession(false).SetAutoReconnect(true).SetMaxReconnectInterval(time.Second).
		SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetKeepAlive(30 * time.Second).SetResumeSubs(true)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { l.Deliver(m.Topic(), m.Payload()) })
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ledger subscriber: connect %s: %v", addr, tok.Error())
	}
	tok := c.Subscribe("devices/#", 1, nil)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("ledger subscriber: subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
}

var debugLeaves = os.Getenv("OUTPOST_DEBUG_LEAVES") == "1"

// leafKind says which client a leaf runs.
type leafKind int

const (
	pahoLeaf   leafKind = iota // paho, MQTT 3.1.1, $.mid = ledger id, pipelined
	mosqLeaf                   // mosquitto_pub -l, MQTT 3.1.1, no $.mid (the gateway assigns one)
	mosqLeafV5                 // mosquitto_pub -l -V mqttv5: failure reason codes are not acks
)

func (k leafKind) String() string {
	return [...]string{"paho", "mosquitto_pub", "mosquitto_pub-v5"}[k]
}

// leaf publishes sequence-numbered QoS 1 messages to a hub until stopped,
// reconnecting on its own whenever its connection ends, and writes every
// PUBACK into the ledger.
type leaf struct {
	id     string
	kind   leafKind
	hub    string // host:port
	l      *Ledger
	rate   float64 // messages/s; 0 = as fast as the window allows
	window int     // publishes in flight
	size   int     // payload bytes
	seq    int     // next sequence number
	mosq   string  // mosquitto_pub path
	stdbuf string  // stdbuf path

	conns    atomic.Int64 // connections made (CONNACK 0)
	connLost atomic.Int64 // paho connections that ended while publishing
	acks     atomic.Int64
	mapErrs  atomic.Int64 // mosquitto_pub output that did not match the lines written
	stalls   atomic.Int64 // mosquitto_pub processes restarted because they stopped working

	start time.Time
	sent  int // for pacing
}

// leaves is a running set of leaves.
type leaves struct {
	t      *testing.T
	all    []*leaf
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// leafSpec describes the leaves of a test.
type leafSpec struct {
	prefix             string // device id prefix, to tell leaf sets apart
	paho, mosq, mosqV5 int
	rate               float64 // per leaf
	window, size       int
}

// ids returns the device ids of s, as the gateway config needs them.
func (s leafSpec) ids() []string {
	var ids []string
	for i := range s.paho {
		ids = append(ids, fmt.Sprintf("%spaho-%d", s.prefix, i+1))
	}
	for i := range s.mosq {
		ids = append(ids, fmt.Sprintf("%smpub-%d", s.prefix, i+1))
	}
	for i := range s.mosqV5 {
		ids = append(ids, fmt.Sprintf("%smpub5-%d", s.prefix, i+1))
	}
	return ids
}

// startLeaves runs the leaves of s against hub until stop.
func startLeaves(t *testing.T, s leafSpec, hub string, l *Ledger) *leaves {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ls := &leaves{t: t, cancel: cancel}
	window, size := max(s.window, 1), max(s.size, 16)
	var mosq, stdbuf string
	if s.mosq+s.mosqV5 > 0 {
		mosq = peertest.Need(t, "mosquitto_pub")
		stdbuf = peertest.Need(t, "stdbuf")
	}
	for _, id := range s.ids() {
		k := pahoLeaf
		switch {
		case strings.HasPrefix(id, s.prefix+"mpub5-"):
			k = mosqLeafV5
		case strings.HasPrefix(id, s.prefix+"mpub-"):
			k = mosqLeaf
		}
		if k != pahoLeaf {
			l.ClientReorders(id)
		}
		lf := &leaf{id: id, kind: k, hub: hub, l: l, rate: s.rate, window: window, size: size, seq: 1, mosq: mosq, stdbuf: stdbuf}
		ls.all = append(ls.all, lf)
		ls.wg.Go(func() { lf.run(ctx) })
	}
	t.Cleanup(ls.stop)
	return ls
}

// stop ends publishing and waits until every leaf has its answers (or has
// given up on them).
// A leaf whose answers could not be matched to its messages fails the test:
// the ledger would be wrong.
func (ls *leaves) stop() {
	ls.cancel()
	ls.wg.Wait()
	for _, lf := range ls.all {
		if n := lf.mapErrs.Swap(0); n > 0 {
			ls.t.Errorf("leaf %s: %d mosquitto_pub PUBLISH lines did not match the lines written: the ledger cannot be trusted", lf.id, n)
		}
	}
}

// acks is the number of PUBACKs all leaves received so far.
func (ls *leaves) acks() int64 {
	var n int64
	for _, lf := range ls.all {
		n += lf.acks.Load()
	}
	return n
}

// String summarises each leaf: kind, connections, PUBACKs.
func (ls *leaves) String() string {
	var b strings.Builder
	for i, lf := range ls.all {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s) %d conns %d acks", lf.id, lf.kind, lf.conns.Load(), lf.acks.Load())
		if n := lf.stalls.Load(); n > 0 {
			fmt.Fprintf(&b, " %d stalls", n)
		}
	}
	return b.String()
}

// conns is the number of connections the leaves made.
func (ls *leaves) conns() int64 {
	var n int64
	for _, lf := range ls.all {
		n += lf.conns.Load()
	}
	return n
}

// awaitAcks waits until the leaves have n more PUBACKs than now.
func (ls *leaves) awaitAcks(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	want := ls.acks() + n
	deadline := time.Now().Add(d)
	for ls.acks() < want {
		if time.Now().After(deadline) {
			t.Fatalf("leaves got %d of %d more PUBACKs within %v", ls.acks()-(want-n), n, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (lf *leaf) run(ctx context.Context) {
	lf.start = time.Now()
	for ctx.Err() == nil {
		switch lf.kind {
		case pahoLeaf:
			lf.runPaho(ctx)
		default:
			lf.runMosq(ctx)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond): // the gateway is down: try again soon
		}
	}
}

// pace blocks until the leaf may send its next message; false when ctx is done.
func (lf *leaf) pace(ctx context.Context) bool {
	if lf.rate <= 0 {
		return ctx.Err() == nil
	}
	lf.sent++
	due := lf.start.Add(time.Duration(float64(lf.sent) / lf.rate * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
		}
	} else if d < -time.Second { // fell behind (the gateway was down): do not burst
		lf.start = time.Now()
		lf.sent = 0
	}
	return ctx.Err() == nil
}

func (lf *leaf) topic(id string) string {
	return msg.EventsTopic(lf.id, msg.Props{{Key: msg.PropMessageID, Value: id}})
}

// runPaho is one paho connection: publish with a window until ctx is done
// or the connection ends, then wait for the answers in flight.
func (lf *leaf) runPaho(ctx context.Context) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + lf.hub).SetClientID(lf.id).
		SetUsername(lf.id).SetPassword(password(lf.id)).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second).
		SetKeepAlive(10 * time.Second).SetOrderMatters(false).SetWriteTimeout(5 * time.Second)
	var lost atomic.Bool
	opts.SetConnectionLostHandler(func(mqtt.Client, error) { lost.Store(true) })
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
		c.Disconnect(0)
		return
	}
	lf.conns.Add(1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, lf.window)
	for !lost.Load() && lf.pace(ctx) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		id := ID(lf.id, lf.seq)
		lf.seq++
		lf.l.Sent(1)
		tok := c.Publish(lf.topic(id), 1, false, Payload(id, lf.size))
		wg.Go(func() {
			defer func() { <-sem }()
			if tok.WaitTimeout(15*time.Second) && tok.Error() == nil {
				lf.acks.Add(1)
				lf.l.Acked(id)
				return
			}
			lf.l.Refused(1)
		})
	}
	wg.Wait()
	if lost.Load() {
		lf.connLost.Add(1)
	}
	c.Disconnect(100)
}

var (
	reSending = regexp.MustCompile(`sending PUBLISH \(d[01], q1, r0, m(\d+), '[^']*', \.\.\. \((\d+) bytes\)\)`)
	rePuback  = regexp.MustCompile(`received PUBACK \(Mid: (\d+), RC:(\d+)\)`)
	reConnack = regexp.MustCompile(`received CONNACK \((\d+)\)`)
)

// mosqSize is the payload size of a mosquitto_pub leaf's seq-th line: it
// varies with seq so that each "sending PUBLISH ... (N bytes)" line can be
// checked against the line it is mapped to.
func (lf *leaf) mosqSize(seq int) int { return lf.size + seq%97 }

// runMosq is one mosquitto_pub -l process: lines written to its stdin are
// messages (the gateway assigns the $.mid). libmosquitto numbers the k-th
// message of a process with packet id (k-1)%65535+1, whether it is sent at
// once or queued while disconnected; its -d output says "sending PUBLISH
// (dX, ..., mN, ... (S bytes))" for each send (S is checked against the
// line) and "received PUBACK (Mid: N, RC:x)" for each answer. mosquitto_pub
// queues lines while disconnected and reconnects and resends by itself
// (not always in line order: a line read while the CONNACK is pending may
// overtake the queued ones); it is restarted when it exits.
func (lf *leaf) runMosq(ctx context.Context) {
	host, port, _ := strings.Cut(lf.hub, ":")
	args := []string{"-h", host, "-p", port, "-q", "1", "-i", lf.id, "-u", lf.id, "-P", password(lf.id),
		"-t", msg.EventsTopic(lf.id, nil), "-l", "-d", "-M", strconv.Itoa(lf.window), "-k", "10"}
	if lf.kind == mosqLeafV5 {
		args = append(args, "-V", "mqttv5")
	}
	// mosquitto_pub's -d lines go to stdout, block-buffered into a pipe:
	// stdbuf makes them line-buffered so answers are seen as they come.
	cmd := exec.Command(lf.stdbuf, append([]string{"-oL", lf.mosq}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, stdin, err := os.Pipe() // our own pipe: writes can have a deadline
	if err != nil {
		return
	}
	defer pr.Close()
	cmd.Stdin = pr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return
	}

	type line struct {
		id   string
		size int
	}
	var mu sync.Mutex
	pending := map[int]line{} // packet id -> line written, not yet answered
	lastOut := time.Now()     // when mosquitto_pub last printed anything
	connected := make(chan struct{})
	var once sync.Once
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			text := sc.Text()
			if debugLeaves {
				fmt.Println(lf.id, text)
			}
			mu.Lock()
			lastOut = time.Now()
			mu.Unlock()
			if m := reSending.FindStringSubmatch(text); m != nil {
				n, _ := strconv.Atoi(m[1])
				size, _ := strconv.Atoi(m[2])
				mu.Lock()
				if ln, ok := pending[n]; !ok || ln.size != size {
					lf.mapErrs.Add(1)
				}
				mu.Unlock()
			} else if m := rePuback.FindStringSubmatch(text); m != nil {
				n, _ := strconv.Atoi(m[1])
				rc, _ := strconv.Atoi(m[2])
				mu.Lock()
				ln, ok := pending[n]
				delete(pending, n)
				mu.Unlock()
				if !ok {
					lf.mapErrs.Add(1)
					continue
				}
				if rc < 0x80 {
					lf.acks.Add(1)
					lf.l.Acked(ln.id)
				} else {
					lf.l.Refused(1)
				}
			} else if m := reConnack.FindStringSubmatch(text); m != nil && m[1] == "0" {
				lf.conns.Add(1)
				once.Do(func() { close(connected) })
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	exited := make(chan struct{})
	go func() {
		<-readDone
		_ = cmd.Wait()
		close(exited)
	}()

	// Write only once connected, so a refused connection costs no lines.
	select {
	case <-connected:
	case <-exited:
		return
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	w := bufio.NewWriter(stdin)
	// Lines keep coming at the leaf's rate, connected or not: mosquitto_pub
	// queues them and only reconnects while it is reading lines.
	k := 0 // lines written by this process
loop:
	for ctx.Err() == nil {
		select {
		case <-exited:
			break loop
		default:
		}
		mu.Lock()
		backlog, quiet := len(pending), time.Since(lastOut)
		mu.Unlock()
		if backlog > 5000 { // down for long: start afresh
			break
		}
		// mosquitto_pub 2.0.11 -l stops reading and never reconnects after
		// a broker sends an MQTT 3.1.1 client a DISCONNECT (see
		// TestFaultShutdownSendsNoDisconnectToV311): should that come back,
		// restart it like a device's supervisor would, and count it (the
		// leaves' summary shows "stalls").
		if backlog > 0 && quiet > 3*time.Second {
			lf.stalls.Add(1)
			break
		}
		if lf.rate <= 0 && backlog >= lf.window {
			time.Sleep(time.Millisecond)
			continue
		}
		if !lf.pace(ctx) {
			break
		}
		id := ID(lf.id, lf.seq)
		size := lf.mosqSize(lf.seq)
		lf.seq++
		k++
		mu.Lock()
		pending[(k-1)%65535+1] = line{id, size}
		mu.Unlock()
		lf.l.Sent(1)
		w.Write(Payload(id, size))
		w.WriteByte('\n')
		_ = stdin.SetWriteDeadline(time.Now().Add(time.Second))
		if err := w.Flush(); err != nil {
			lf.stalls.Add(1)
			break
		}
	}
	// EOF: mosquitto_pub sends what it has, waits for the answers, and exits.
	stdin.Close()
	wait := 15 * time.Second
	if ctx.Err() == nil { // stalled or backed up: no point waiting
		wait = 0
	}
	select {
	case <-exited:
	case <-time.After(wait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	mu.Lock()
	lf.l.Refused(len(pending))
	mu.Unlock()
}
