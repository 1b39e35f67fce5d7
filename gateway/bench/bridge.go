package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// The peer for Drain: what a user would otherwise deploy,
// a local Mosquitto bridging to the upstream one. The bridge is cut while a
// backlog is published into the local broker, then restored; the drain is
// timed at the upstream.

// bridgeOptions configures one bridge drain run.
type bridgeOptions struct {
	Records  int    // backlog size
	Size     int    // payload bytes
	Inflight int    // the local broker's max_inflight_messages (the bridge's window)
	Upstream string // host:port of the upstream Mosquitto
	Dir      string // where the local broker's config goes
}

// bridgeResult is what a bridge drain measured.
type bridgeResult struct {
	MsgsPerS   float64       // Records / (last arrival − first arrival) at the upstream
	Elapsed    time.Duration // link restored → last arrival (includes the bridge's reconnect)
	Delivered  int           // messages that arrived, duplicates included
	PeakRSSMiB float64       // VmHWM of the bridging Mosquitto
}

// bridgeDrain starts a local Mosquitto bridging to the Mosquitto at
// opt.Upstream (max_queued_messages raised to hold the whole backlog), fills
// it with opt.Records messages while the bridge link is down, restores the
// link and measures the drain at the upstream. The messages look like
// outpost's upstream traffic: 8 devices, a distinct topic per message with
// $.mid, $.ct and outpost-seq in the property bag, QoS 1 end to end. The
// upstream subscriber that counts them uses QoS 0, so it adds as little
// work to the upstream broker as possible.
func bridgeDrain(ctx context.Context, opt bridgeOptions) (res bridgeResult, err error) {
	if opt.Records <= 0 || opt.Inflight <= 0 {
		return res, errors.New("bridge drain: records and inflight must be positive")
	}
	dir, err := os.MkdirTemp(opt.Dir, "outpost-bench-bridge-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)

	link, err := newLinkProxy(opt.Upstream)
	if err != nil {
		return res, err
	}
	defer link.close()

	// Count arrivals at the upstream.
	var got atomic.Int64
	var tmu sync.Mutex
	var first, last time.Time
	all := make(chan struct{})
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + opt.Upstream).
		SetClientID(fmt.Sprintf("bench-bridge-sub-%d", time.Now().UnixNano())).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) {
			now := time.Now()
			n := got.Add(1)
			tmu.Lock()
			if first.IsZero() {
				first = now
			}
			last = now
			tmu.Unlock()
			if n == int64(opt.Records) {
				close(all)
			}
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return res, fmt.Errorf("bridge drain: upstream subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("devices/+/messages/events/#", 0, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return res, fmt.Errorf("bridge drain: subscribe: %v", tok.Error())
	}

	local, err := startBridgeMosquitto(ctx, dir, link.addr(), opt.Records+1000, opt.Inflight, false)
	if err != nil {
		return res, err
	}
	defer local.stop()

	if err := bridgeFill(ctx, local.addr, opt.Records, opt.Size); err != nil {
		return res, err
	}
	if n := got.Load(); n != 0 {
		return res, fmt.Errorf("bridge drain: %d messages crossed a bridge that was down", n)
	}

	link.setUp(true)
	restored := time.Now()
	stall := time.NewTimer(30 * time.Second)
	defer stall.Stop()
	for seen := int64(-1); ; {
		select {
		case <-all:
		case <-ctx.Done():
			return res, ctx.Err()
		case <-stall.C:
			return res, fmt.Errorf("bridge drain: %d of %d messages arrived, then nothing for 30s", got.Load(), opt.Records)
		case <-time.After(100 * time.Millisecond):
			if n := got.Load(); n != seen {
				seen = n
				stall.Reset(30 * time.Second)
			}
			continue
		}
		break
	}
	tmu.Lock()
	res.Elapsed = last.Sub(restored)
	if d := last.Sub(first); d > 0 {
		res.MsgsPerS = float64(opt.Records-1) / d.Seconds()
	}
	tmu.Unlock()
	res.PeakRSSMiB = procPeakRSS(local.cmd.Process.Pid)
	time.Sleep(200 * time.Millisecond) // duplicates still on their way
	res.Delivered = int(got.Load())
	return res, nil
}

// bridgeTopic is the i-th message's topic, shaped like outpost's upstream
// topics.
func bridgeTopic(i int) string {
	return fmt.Sprintf("devices/dev-%d/messages/events/%%24.mid=0123456789ab-%d&%%24.ct=application%%2Fjson&outpost-seq=%d", i%8, i+1, i+1)
}

// bridgeFill publishes n QoS 1 messages of size bytes to the broker at addr
// and returns once every one has its PUBACK.
func bridgeFill(ctx context.Context, addr string, n, size int) error {
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).
		SetClientID(fmt.Sprintf("bench-bridge-fill-%d", time.Now().UnixNano())).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("bridge drain: fill: connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	const window = 1000
	toks := make([]paho.Token, window)
	wait := func(t paho.Token) error {
		if t == nil {
			return nil
		}
		if !t.WaitTimeout(30*time.Second) || t.Error() != nil {
			return fmt.Errorf("bridge drain: fill: publish: %v", t.Error())
		}
		return nil
	}
	for i := range n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := wait(toks[i%window]); err != nil {
			return err
		}
		toks[i%window] = c.Publish(bridgeTopic(i), 1, false, payload)
	}
	for _, t := range toks {
		if err := wait(t); err != nil {
			return err
		}
	}
	return nil
}

// startBridgeMosquitto starts a Mosquitto on a free loopback port whose
// bridge "bench" forwards devices/# (QoS 1, persistent bridge session) to
// remote. With persist, it keeps its queue on disk under dir (saved every
// second, the shortest interval Mosquitto offers).
func startBridgeMosquitto(ctx context.Context, dir, remote string, maxQueued, inflight int, persist bool) (*mosquitto, error) {
	p := "persistence false\n"
	if persist {
		p = fmt.Sprintf("persistence true\npersistence_location %s/\nautosave_interval 1\n", dir)
		if os.Geteuid() == 0 { // it would drop to user mosquitto, who cannot write into dir
			p += "user root\n"
		}
	}
	return runMosquitto(ctx, dir, "bridge.conf", func(port int) string {
		return fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
%s%smax_queued_messages %d
max_inflight_messages %d
connection bench
address %s
topic devices/# out 1
cleansession false
try_private false
notifications false
restart_timeout 1
bridge_protocol_version mqttv311
`, port, p, mosquittoLog, maxQueued, inflight, remote)
	})
}

// linkProxy is a loopback TCP proxy that stands in for the bridge's
// network link: while down it accepts and at once closes connections.
type linkProxy struct {
	l      net.Listener
	target string
	up     atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newLinkProxy(target string) (*linkProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &linkProxy{l: l, target: target}
	go p.serve()
	return p, nil
}

func (p *linkProxy) addr() string { return p.l.Addr().String() }

func (p *linkProxy) setUp(up bool) { p.up.Store(up) }

func (p *linkProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		if !p.up.Load() {
			c.Close()
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	}
}

func (p *linkProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
