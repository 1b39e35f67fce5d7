package faults

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// The upstream is unreachable for a long stretch while leaves publish; the
// gateway is restarted twice while offline (SIGTERM, then kill -9). When
// the link returns the backlog drains with nobody touching the gateway,
// and nothing acknowledged is lost.
func TestFaultOutage(t *testing.T) {
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	spec := leafSpec{paho: 2, mosq: 1, rate: pick(200.0, 500.0), window: 16, size: 64}
	g := newGateway(t, gwConfig{cloud: link.Addr, leaves: spec.ids()})
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	ls.awaitAcks(t, 20, 10*time.Second)

	// Longer than the link's largest back-off (60 s) under soak, so the
	// test also proves a reconnect loop that has backed off all the way
	// still comes back.
	stretch := pick(6*time.Second, 150*time.Second)
	link.Cut()
	t0 := time.Now()
	time.Sleep(stretch / 3)
	g.term()
	g.start()
	ls.awaitAcks(t, 20, 15*time.Second)
	time.Sleep(stretch / 3)
	g.kill9()
	g.start()
	ls.awaitAcks(t, 20, 15*time.Second)
	time.Sleep(time.Until(t0.Add(stretch)))

	st := g.status()
	if st.Link == nil || st.Link.Connected {
		t.Fatalf("link reported up while the upstream is unreachable: %+v", st.Link)
	}
	if st.Queue.Depth == 0 {
		t.Fatalf("nothing queued after %v offline: %+v", stretch, st.Queue)
	}
	backlog := st.Queue.Depth
	if m := l.Missing(); m < int(backlog)/2 {
		t.Fatalf("only %d acknowledged messages missing upstream, but %d queued: did something leak through the cut link?", m, backlog)
	}

	link.Restore()
	restored := time.Now()
	time.Sleep(2 * time.Second) // fresh messages keep flowing while the backlog drains
	ls.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The link backs off up to 60 s between attempts; nothing may stall past that.
	if err := l.WaitDelivered(ctx, 75*time.Second); err != nil {
		t.Error(err)
	}
	g.awaitDrained(30 * time.Second)
	t.Logf("offline %v with 2 restarts, %d queued; drained %v after the link returned", stretch, backlog, time.Since(restored).Round(time.Millisecond))
	t.Logf("leaves: %s", ls)
	checkLedger(t, l.Report("outpost outage"), 2)
}
