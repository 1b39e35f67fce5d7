package faults

import (
	"context"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// checkLedger fails t unless the report shows the promise kept: nothing
// acknowledged lost, stable $.mid, ingest in the order sent, and each
// device's deliveries in at most maxStreams in-order streams.
func checkLedger(t *testing.T, r Report, maxStreams int) {
	t.Helper()
	t.Log("\n" + r.String())
	if r.Acked == 0 {
		t.Errorf("no message was acknowledged: the run proves nothing")
	}
	if r.Lost != 0 {
		t.Errorf("%d acknowledged messages lost", r.Lost)
	}
	if r.MidChanged != 0 {
		t.Errorf("%d messages changed their $.mid between deliveries", r.MidChanged)
	}
	if r.IngestInversions != 0 {
		t.Errorf("%d messages were stored out of the order their leaf sent them", r.IngestInversions)
	}
	if r.OrderStreams > maxStreams {
		t.Errorf("a device's deliveries split into %d in-order streams; at most %d allowed", r.OrderStreams, maxStreams)
	}
}

// kill -9 of the gateway at random moments, while leaves publish (ingest)
// and while a backlog drains after an outage (forwarding). Every
// acknowledged message must arrive upstream; the leaves and the link must
// resume on their own after every restart.
func TestCrashKill9(t *testing.T) {
	r := rng(t)
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	spec := leafSpec{paho: 3, mosq: 1, mosqV5: 1, rate: pick(200.0, 1000.0), window: 16, size: 64}
	g := newGateway(t, gwConfig{cloud: link.Addr, leaves: spec.ids()})
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	ls.awaitAcks(t, 10, 10*time.Second)

	n, target := rounds(4, 200), pick(0, 1_000_000)
	var ingest, forward int
	for round := 1; round <= n || l.AckedCount() < target; round++ {
		if r.IntN(2) == 0 { // a backlog builds, then the kill lands while it drains
			forward++
			link.Cut()
			time.Sleep(time.Duration(200+r.IntN(1300)) * time.Millisecond)
			link.Restore()
			time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
		} else {
			ingest++
			time.Sleep(time.Duration(100+r.IntN(900)) * time.Millisecond)
		}
		g.kill9()
		if r.IntN(3) == 0 { // down for a moment: leaves fail to connect and retry
			time.Sleep(time.Duration(r.IntN(500)) * time.Millisecond)
		}
		g.start()
		ls.awaitAcks(t, 10, 15*time.Second) // the leaves resume by themselves
		if round%20 == 0 {
			t.Logf("round %d: acked %d, missing upstream now %d", round, l.AckedCount(), l.Missing())
		}
	}
	ls.stop()
	ctx, cancel := context.WithTimeout(context.Background(), pick(2*time.Minute, 20*time.Minute))
	defer cancel()
	if err := l.WaitDelivered(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	g.awaitDrained(30 * time.Second)
	t.Logf("%d kills (%d during ingest, %d while draining a backlog); gateway peak RSS of the last run %.1f MiB",
		ingest+forward, ingest, forward, g.peakRSSMiB())
	checkLedger(t, l.Report("outpost kill -9"), 2)
}
