package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// evil is one kind of bad traffic, sent on a fresh connection.
type evil struct {
	name string
	send func(c net.Conn, r *rand.Rand) error
}

func writeAll(c net.Conn, bs ...[]byte) error {
	for _, b := range bs {
		if _, err := c.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// big returns n bytes of filler.
func big(n int) []byte { return bytes.Repeat([]byte{'z'}, n) }

func evils(id string) []evil {
	connect4 := mqttwire.Connect(4, 30, id, id, password(id))
	connect5 := mqttwire.Connect(5, 30, id, id, password(id))
	topic := "devices/" + id + "/messages/events/"
	return []evil{
		{"garbage", func(c net.Conn, r *rand.Rand) error {
			b := make([]byte, 64+r.IntN(4096))
			for i := range b {
				b[i] = byte(r.IntN(256))
			}
			return writeAll(c, b)
		}},
		{"connect-claims-256MB", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, []byte{0x10}, mqttwire.Varint(268_435_455), big(64<<10))
		}},
		{"connect-bad-protocol", func(c net.Conn, r *rand.Rand) error {
			b := append(mqttwire.String("MQXX"), 9, 0xC2, 0, 30)
			return writeAll(c, mqttwire.Packet(0x10, b))
		}},
		{"connect-truncated", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4[:len(connect4)/2])
		}},
		{"wrong-password", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, mqttwire.Connect(4, 30, id, id, "wrong"))
		}},
		{"publish-before-connect", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, mqttwire.Publish(4, topic, 1, []byte("x")))
		}},
		{"publish-oversized-v311", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, mqttwire.Publish(4, topic, 1, big(300<<10)))
		}},
		{"publish-oversized-v5-stream", func(c net.Conn, r *rand.Rand) error {
			// MQTT 5 refusals keep the connection: many in a row.
			var b []byte
			b = append(b, connect5...)
			for i := range 32 {
				body := append(mqttwire.String(topic), 0, byte(i+1), 0) // pid, no properties
				b = append(b, mqttwire.Packet(0x32, append(body, big(300<<10)...))...)
			}
			return writeAll(c, b)
		}},
		{"publish-claims-200MB", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, []byte{0x32}, mqttwire.Varint(200<<20), mqttwire.String(topic), []byte{0, 1}, big(128<<10))
		}},
		{"publish-topic-overruns", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, mqttwire.Packet(0x32, []byte{0xFF, 0xFF, 'd', 'e', 'v'}))
		}},
		{"publish-qos3", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, mqttwire.Packet(0x36, append(mqttwire.String(topic), 0, 1, 'x')))
		}},
		{"publish-other-device", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, mqttwire.Publish(4, "devices/paho-1/messages/events/$.mid=spoof-1", 1, []byte("spoof")))
		}},
		{"publish-not-events", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, mqttwire.Publish(4, "$SYS/evil", 1, []byte("x")), mqttwire.Publish(4, "#", 1, []byte("x")))
		}},
		{"subscribe-truncated-v5", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect5, mqttwire.Packet(0x82, []byte{0, 1, 5, 0x0B}))
		}},
		{"reserved-packet-types", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, []byte{0x00, 0x00, 0xF0, 0x00})
		}},
		{"second-connect", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, connect4)
		}},
		{"remaining-length-5-bytes", func(c net.Conn, r *rand.Rand) error {
			return writeAll(c, connect4, []byte{0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F})
		}},
	}
}

// flood runs one misbehaving client until ctx is done: workers
// connections at a time, each a random kind of bad traffic, at most rate
// new connections per second in all (0 = as fast as it can). It returns
// how many connections of each kind it made.
// floodDialer dials from 127.0.0.2: the misbehaving client is another host
// than the leaves and the probe (Linux routes all of 127/8 to lo), as on a
// shared LAN, where the hub's per-address connect buckets keep it from
// starving them.
var floodDialer = net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}

func flood(ctx context.Context, addr, id string, seed uint64, workers int, rate float64) (sent map[string]int) {
	var mu sync.Mutex
	sent = map[string]int{}
	kinds := evils(id)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(w)))
			for ctx.Err() == nil {
				if rate > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Duration(float64(workers) / rate * float64(time.Second))):
					}
				}
				k := kinds[r.IntN(len(kinds))]
				c, err := floodDialer.Dial("tcp", addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
				_ = k.send(c, r)
				_, _ = io.Copy(io.Discard, c) // until the hub closes it or the deadline
				c.Close()
				mu.Lock()
				sent[k.name]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return sent
}

// One client floods the hub with malformed and oversized packets while
// other leaves publish: the gateway does not crash, the others keep their
// connections and their pace, a new device can still connect, and nothing
// acknowledged is lost. The first half is a connection flood (most of it
// meets the hub's connection rate limits); the second stays under the
// per-address limit (10/s by default)
// so that every bad packet reaches the hub's parser.
func TestFaultFlood(t *testing.T) {
	r := rng(t)
	up := peertest.StartMosquitto(t)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	spec := leafSpec{paho: 2, mosq: 1, rate: 100, window: 8, size: 128}
	g := newGateway(t, gwConfig{cloud: up.Addr, leaves: append(spec.ids(), "evil-1", "probe-1")})
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	ls.awaitAcks(t, 50, 10*time.Second)

	ctx, stop := context.WithTimeout(context.Background(), pick(8*time.Second, 60*time.Second))
	defer stop()
	sent := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		half, cancel := context.WithTimeout(ctx, pick(4*time.Second, 30*time.Second))
		defer cancel()
		for k, n := range flood(half, g.hubAddr, "evil-1", r.Uint64(), 4, 0) {
			sent[k] += n
		}
		for k, n := range flood(ctx, g.hubAddr, "evil-1", r.Uint64(), 4, 8) {
			sent[k] += n
		}
	}()

	// Every second: the leaves made progress, and a new device can connect.
	var slow, probesFailed, probes int
	var worst int64 = 1 << 62
	var connectErr atomic.Value
	for ctx.Err() == nil {
		before := ls.acks()
		time.Sleep(time.Second)
		n := ls.acks() - before
		worst = min(worst, n)
		if n < 3*100/4 { // three leaves at 100/s: at least a quarter of it
			slow++
		}
		probes++
		if err := probeConnect(g.hubAddr, "probe-1"); err != nil {
			probesFailed++
			connectErr.Store(err)
		}
	}
	<-done
	ls.stop()
	if !g.alive() {
		t.Fatalf("gateway died under the flood:\n%s", g.proc.Output())
	}
	code, body := g.health()
	rss := g.peakRSSMiB()
	var total int
	var kinds []string
	for k, n := range sent {
		total += n
		kinds = append(kinds, k+"="+strconv.Itoa(n))
	}
	t.Logf("flood: %d bad connections (%s); leaves' worst second %d PUBACKs; gateway peak RSS %.1f MiB; /healthz %d %q",
		total, strings.Join(kinds, " "), worst, rss, code, body)
	t.Logf("hub: %v auth failures, %v ACL denials, %v refused, %v connection panics",
		g.metric("outpost_hub_auth_failures_total"),
		g.metric("outpost_hub_acl_denied_total"), g.metric("outpost_hub_refused_total"), g.metric("outpost_hub_panics_total"))
	t.Logf("leaves: %s", ls)
	if code != 200 {
		t.Errorf("/healthz %d %q after the flood", code, body)
	}
	for _, lf := range ls.all {
		if lf.conns.Load() != 1 {
			t.Errorf("leaf %s: %d connections: the flood cost it its connection", lf.id, lf.conns.Load())
		}
	}
	if slow > 0 {
		t.Errorf("in %d seconds of the flood the leaves got less than a quarter of their PUBACKs (worst %d)", slow, worst)
	}
	if probesFailed > 0 {
		t.Errorf("%d of %d new legitimate connections were refused during the flood (last: %v)", probesFailed, probes, connectErr.Load())
	}
	if rss > 256 {
		t.Errorf("peak RSS %.1f MiB under the flood", rss)
	}
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.WaitDelivered(wctx, 20*time.Second); err != nil {
		t.Error(err)
	}
	checkLedger(t, l.Report("outpost flood"), 2)
	if o := up.Output(); strings.Contains(o, "spoof") {
		t.Errorf("a spoofed message reached the upstream")
	}
}

// probeConnect connects a well-behaved device with mosquitto_pub and
// publishes one QoS 1 message, retrying for up to 2 s as a device would.
func probeConnect(hub, id string) error {
	host, port, _ := strings.Cut(hub, ":")
	var err error
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		var out []byte
		out, err = exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-i", id, "-u", id, "-P", password(id),
			"-t", "devices/"+id+"/messages/events/", "-m", "probe").CombinedOutput()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		time.Sleep(200 * time.Millisecond)
	}
	return err
}
