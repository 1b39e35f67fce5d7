package gateway

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
	"github.com/outpost-iot/outpost/store"
)

// clock is a settable time source for the progress rule.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func testProgress(d time.Duration) (*progress, *clock) {
	c := &clock{t: time.Unix(1_000_000, 0)}
	p := newProgress(d)
	p.now = c.now
	return p, c
}

// Forwarding stalls only with records queued and the link up, counted from
// the last acknowledgement or from when it had work, whichever is later.
func TestProgressForwardRule(t *testing.T) {
	p, c := testProgress(10 * time.Second)
	// Idle for an hour, then work arrives: not stalled at once.
	p.observe(true, 0, 5)
	c.advance(time.Hour)
	p.observe(true, 3, 5)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled as soon as work arrived after an idle hour: %s", s)
	}
	c.advance(9 * time.Second)
	p.observe(true, 3, 5)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled before the timeout: %s", s)
	}
	c.advance(time.Second)
	p.observe(true, 3, 5)
	s := p.forwardStall()
	if !strings.Contains(s, "3 records queued, link up, no upstream acknowledgement for 10s") {
		t.Fatalf("after 10 s without an ack: %q", s)
	}
	if st := p.stalls(); len(st) != 1 || st[0] != s {
		t.Errorf("stalls() = %q", st)
	}
	// An acknowledgement is progress.
	p.observe(true, 2, 6)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled right after an ack: %s", s)
	}
	// A link that is down is not a stall, however long.
	c.advance(time.Hour)
	p.observe(false, 2, 6)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled with the link down: %s", s)
	}
	// Back up: the clock starts again.
	p.observe(true, 2, 6)
	c.advance(5 * time.Second)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled 5 s after the link came back: %s", s)
	}
	// A monitor that stops looking does not hide the stall.
	c.advance(5 * time.Second)
	if s := p.forwardStall(); s == "" {
		t.Fatal("no stall 10 s after the last look")
	}
	// An empty queue is not a stall.
	p.observe(true, 0, 6)
	c.advance(time.Hour)
	if s := p.forwardStall(); s != "" {
		t.Fatalf("stalled with nothing queued: %s", s)
	}
}

// The fleet's link is up for forwarding only when every identity is.
func TestProgressLinkUp(t *testing.T) {
	for _, tc := range []struct {
		st   cloudlink.Status
		want bool
	}{
		{cloudlink.Status{Connected: false}, false},
		{cloudlink.Status{Connected: true}, true},
		{cloudlink.Status{Connected: true, Devices: map[string]cloudlink.DeviceStatus{"a": {Connected: true}, "b": {Connected: true}}}, true},
		{cloudlink.Status{Connected: true, Devices: map[string]cloudlink.DeviceStatus{"a": {Connected: true}, "b": {}}}, false},
	} {
		if got := linkUp(tc.st); got != tc.want {
			t.Errorf("linkUp(%+v) = %v, want %v", tc.st, got, tc.want)
		}
	}
}

// Ingest stalls when writes wait and none finishes for the timeout; the
// metered queue counts a real store's writes pending until it answers.
func TestProgressIngestRule(t *testing.T) {
	p, c := testProgress(10 * time.Second)
	c.advance(time.Hour) // idle is not a stall
	if s := p.ingestStall(); s != "" {
		t.Fatalf("idle store stalled: %s", s)
	}
	p.submitted()
	p.submitted()
	c.advance(9 * time.Second)
	if s := p.ingestStall(); s != "" {
		t.Fatalf("stalled before the timeout: %s", s)
	}
	c.advance(time.Second)
	if s := p.ingestStall(); !strings.Contains(s, "store: 2 writes waiting and none synced for 10s") {
		t.Fatalf("after 10 s: %q", s)
	}
	p.done() // the store answered one: it moves
	if s := p.ingestStall(); s != "" {
		t.Fatalf("stalled right after a sync: %s", s)
	}
	c.advance(10 * time.Second)
	if s := p.ingestStall(); s == "" {
		t.Fatal("the second write waits 10 s more with no sync: want a stall")
	}
	p.done()
	c.advance(time.Hour)
	if s := p.ingestStall(); s != "" {
		t.Fatalf("nothing pending, still stalled: %s", s)
	}

	// The same accounting around a real store.
	q, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	p, c = testProgress(10 * time.Second)
	mq := meteredQueue{q, p}
	done := make(chan error, 100)
	for i := range 100 {
		mq.Submit([]*msg.Record{{ID: fmt.Sprint(i), Device: "d1", Payload: []byte("x")}}, func(err error) { done <- err })
	}
	for range 100 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := p.pending.Load(); n != 0 {
		t.Errorf("%d writes still pending after every done", n)
	}
	c.advance(time.Hour)
	if s := p.ingestStall(); s != "" {
		t.Errorf("stalled after the store answered everything: %s", s)
	}
	mq.Submit(nil, nil) // an empty Submit is answered at once
	if n := p.pending.Load(); n != 0 {
		t.Errorf("empty Submit left %d pending", n)
	}
}

// With a real upstream that stops reading (Mosquitto under SIGSTOP) and
// records queued, the gateway turns unhealthy after gateway.stall_timeout
// — /healthz names the stall and Alive fails, so the watchdog stops being
// fed — and healthy again once the upstream acknowledges.
func TestForwardStallUnhealthy(t *testing.T) {
	up := peertest.StartMosquitto(t)
	sub := up.Sub(t, "#")
	cfg := config.Default()
	cfg.Gateway.ID = "gw-stall"
	cfg.Gateway.DataDir = t.TempDir()
	cfg.Gateway.StallTimeout = time.Second
	cfg.Hub.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = ""
	cfg.Cloud.Protocol = cloudlink.ProtocolMQTT
	cfg.Cloud.URL = "mqtt://" + up.Addr
	cfg.Cloud.Keepalive = time.Minute // the link's own PUBACK timeout (3 min) stays out of the way
	g := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-g.Ready():
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; status %+v", what, timeout, g.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	send := func(payload string) {
		t.Helper()
		rec := &msg.Record{ID: payload, Device: "leaf-1", Priority: msg.Normal, Payload: []byte(payload)}
		if err := g.ingest(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	arrives := func(payload string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l := <-sub.Lines:
				if strings.HasSuffix(l, " "+payload) {
					return
				}
			case <-deadline:
				t.Fatalf("%q did not arrive upstream", payload)
			}
		}
	}
	waitFor("link up", 10*time.Second, func() bool { s := g.link.Status(); return s.Connected })
	send("before")
	arrives("before")
	// Longer than the stall timeout with nothing queued: still healthy.
	time.Sleep(1500 * time.Millisecond)
	if err := g.Alive(); err != nil {
		t.Fatalf("idle gateway not alive: %v", err)
	}

	up.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	send("during")
	waitFor("unhealthy with the upstream stopped", 15*time.Second, func() bool { return !g.Status().Healthy })
	t.Logf("unhealthy %.1f s after the upstream stopped (stall_timeout 1s)", time.Since(stopped).Seconds())
	if ps := strings.Join(g.problems(), "\n"); !strings.Contains(ps, "cloudlink: 1 records queued, link up, no upstream acknowledgement") {
		t.Errorf("problems = %q", ps)
	}
	if err := g.Alive(); err == nil || !strings.Contains(err.Error(), "no upstream acknowledgement") {
		t.Errorf("Alive with forwarding stalled = %v, want the stall", err)
	}
	if !g.link.Status().Connected {
		t.Error("the link went down: the rule was not what made the gateway unhealthy")
	}

	up.Signal(syscall.SIGCONT)
	arrives("during")
	waitFor("healthy once the upstream acknowledges", 15*time.Second, func() bool { return g.Alive() == nil && g.Status().Healthy })
}
