package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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

// crashLeaves is the leaf mix of the kill -9 runs, the same for outpost and
// for the Mosquitto bridge.
var crashLeaves = leafSpec{paho: 3, mosq: 1, mosqV5: 1, rate: pick(200.0, 1000.0), window: 16, size: 64}

// crashRounds kills the process under test (kill -9) at random moments
// while the leaves publish: half the rounds during plain ingest, half
// while a backlog built by cutting link drains. Under OUTPOST_SOAK it runs
// 200 rounds and on until a million messages were acknowledged.
func crashRounds(t *testing.T, r *rand.Rand, link *peertest.Proxy, ls *leaves, l *Ledger, kill, start func()) (ingest, forward int) {
	t.Helper()
	n, target := rounds(4, 200), pick(0, 1_000_000)
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
		t.Logf("round %d: kill -9 after acked %d", round, l.AckedCount())
		kill()
		if r.IntN(3) == 0 { // down for a moment: leaves fail to connect and retry
			time.Sleep(time.Duration(r.IntN(500)) * time.Millisecond)
		}
		start()
		ls.awaitAcks(t, 10, 15*time.Second) // the leaves resume by themselves
		if round%20 == 0 {
			t.Logf("round %d: acked %d, missing upstream now %d", round, l.AckedCount(), l.Missing())
		}
	}
	ls.stop()
	return ingest, forward
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
	g := newGateway(t, gwConfig{cloud: link.Addr, leaves: crashLeaves.ids()})
	g.start()
	ls := startLeaves(t, crashLeaves, g.hubAddr, l)
	ls.awaitAcks(t, 10, 10*time.Second)

	ingest, forward := crashRounds(t, r, link, ls, l, g.kill9, g.start)
	ctx, cancel := context.WithTimeout(context.Background(), pick(2*time.Minute, 20*time.Minute))
	defer cancel()
	if err := l.WaitDelivered(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	g.awaitDrained(30 * time.Second)
	t.Logf("%d kills (%d during ingest, %d while draining a backlog); gateway peak RSS of the last run %.1f MiB",
		ingest+forward, ingest, forward, g.peakRSSMiB())
	t.Logf("leaves: %s", ls)
	checkLedger(t, l.Report("outpost kill -9"), 2)
}

// bridge is a local Mosquitto bridging devices/# to an upstream, with its
// queue persisted (autosave every second, the tightest Mosquitto offers),
// restartable on the same port: the setup users deploy instead of outpost.
type bridge struct {
	t    *testing.T
	conf string
	addr string
	proc *peertest.Proc
}

func newBridge(t *testing.T, remote string) *bridge {
	t.Helper()
	peertest.Need(t, "mosquitto")
	dir := t.TempDir()
	port := peertest.FreePort(t)
	b := &bridge{t: t, conf: filepath.Join(dir, "bridge.conf"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
persistence true
persistence_location %s/
autosave_interval 1
%s
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
max_queued_messages 1000000
max_inflight_messages 64
connection ledger
address %s
topic devices/# out 1
cleansession false
try_private false
notifications false
restart_timeout 1
bridge_protocol_version mqttv311
`, port, dir, runAs(), remote)
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// runAs keeps mosquitto as root when it is started as root: it would drop
// to user mosquitto, which cannot write into a test's temp dir.
func runAs() string {
	if os.Geteuid() == 0 {
		return "user root"
	}
	return ""
}

// start starts the broker, retrying while the port lingers after a kill.
func (b *bridge) start() {
	b.t.Helper()
	re := regexp.MustCompile(`mosquitto version \S+ running|Address already in use`)
	for range 50 {
		p := peertest.Start(b.t, exec.Command("mosquitto", "-c", b.conf), nil)
		if got := p.WaitFor(b.t, re, 10*time.Second); !strings.Contains(got, "in use") {
			b.proc = p
			return
		}
		p.Kill()
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("bridge: port %s stayed in use", b.addr)
}

func (b *bridge) kill9() { b.proc.Kill() }

// The same kill -9 rounds against a Mosquitto bridge with persistence on:
// its loss is the figure outpost's 0 is compared with. The test fails only
// if the harness could not run; the loss is reported, not judged.
func TestCrashKill9Bridge(t *testing.T) {
	r := rng(t)
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	b := newBridge(t, link.Addr)
	b.start()
	ls := startLeaves(t, crashLeaves, b.addr, l)
	ls.awaitAcks(t, 10, 10*time.Second)

	ingest, forward := crashRounds(t, r, link, ls, l, b.kill9, b.start)
	ctx, cancel := context.WithTimeout(context.Background(), pick(time.Minute, 10*time.Minute))
	defer cancel()
	err := l.WaitDelivered(ctx, pick(5*time.Second, 15*time.Second))
	rep := l.Report("mosquitto-bridge kill -9")
	t.Logf("%d kills (%d during ingest, %d while draining a backlog); after the last: %v", ingest+forward, ingest, forward, err)
	t.Logf("leaves: %s", ls)
	t.Log("\n" + rep.String())
	t.Logf("lost runs: %s", l.LostRanges())
	if os.Getenv("OUTPOST_DEBUG_BRIDGE") == "1" {
		t.Logf("bridge output:\n%s\nupstream output:\n%s", b.proc.Output(), up.Output())
	}
	t.Logf("BRIDGE LOSS: %d of %d acknowledged messages (%.2f%%)", rep.Lost, rep.Acked, 100*float64(rep.Lost)/float64(max(rep.Acked, 1)))
	if rep.Acked == 0 || rep.Delivered == 0 {
		t.Fatalf("the bridge run acknowledged %d and delivered %d: the comparison proves nothing", rep.Acked, rep.Delivered)
	}
}

// kill -9 while the store is busy compacting: large messages arrive as fast
// as the leaves can send them and stay queued (the upstream is cut), so
// Badger flushes and compacts tables all the time. A kill between a
// compaction's MANIFEST change and the removal of its input tables leaves
// tables on disk the MANIFEST no longer lists; Badger removes them itself
// on open. Every restart must come up healthy with the queue intact, and
// every acknowledged message must arrive once the link is back.
func TestCrashKill9Compaction(t *testing.T) {
	r := rng(t)
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	spec := leafSpec{paho: 3, rate: 0, window: 32, size: 8 << 10}
	g := newGateway(t, gwConfig{cloud: link.Addr, leaves: spec.ids(), store: "  max_bytes: 2GiB\n"})
	link.Cut()
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	for round := 1; round <= rounds(15, 150); round++ {
		ls.awaitAcks(t, 100, 15*time.Second)
		time.Sleep(time.Duration(r.IntN(500)) * time.Millisecond)
		g.kill9()
		g.start() // fails the test if the store was quarantined
	}
	ls.stop()
	st := g.status()
	t.Logf("%d kills; %d records queued (%d MiB)", g.starts-1, st.Queue.Depth, st.Queue.Bytes>>20)
	link.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := l.WaitDelivered(ctx, 30*time.Second); err != nil {
		t.Error(err)
	}
	checkLedger(t, l.Report("outpost kill -9 while compacting"), 2)
}
