package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
	"github.com/outpost-iot/outpost/store/storetest/lazyfs"
)

// powerCut loses power under the running gateway: the file system drops
// everything not synced (keeping a torn prefix of the last write when torn
// > 0) and the gateway is killed, then the file system comes back with
// what was synced. The cut comes first: from that instant no write or sync
// of the gateway reaches the disk, and it is gone a moment later.
func powerCut(t *testing.T, fsys *lazyfs.FS, g *gw, torn int) {
	t.Helper()
	if err := fsys.Cut(lazyfs.CutOptions{TornBytes: torn}); err != nil {
		t.Fatal(err)
	}
	g.kill9()
	if u := fsys.Undone(); len(u) > 0 {
		t.Logf("the cut undid %d directory changes: %s", len(u), strings.Join(u[:min(len(u), 10)], "; "))
	}
	if err := fsys.Remount(); err != nil {
		t.Fatal(err)
	}
}

// restartAfterCut starts the gateway on what the cut left and says whether
// its store opened as it was (false: it did not come up healthy; the
// reason is logged and counted by the caller).
func restartAfterCut(t *testing.T, g *gw, round int) bool {
	t.Helper()
	g.launch()
	code, body := g.awaitHTTP(30 * time.Second)
	if code == 200 {
		return true
	}
	st := g.status()
	t.Errorf("cut %d: the gateway came back with /healthz %d %q (store quarantined to %q)\n%s",
		round, code, body, st.Queue.Quarantined, g.proc.Output())
	return false
}

// Power cuts under the gateway at random moments: its data dir is on
// lazyfs, so a cut loses everything the store wrote but did not sync,
// sometimes with a torn last write. The upstream is up for some rounds (a
// backlog drains) and down for others (ingest builds one). After every cut
// the store must open with everything it acknowledged, and at the end every
// acknowledged message must have arrived upstream. It runs under POSIX's
// rules (a directory change is durable once its directory is fsynced) and
// under ext4's (any fsync commits every directory change before it).
func TestCrashPowerCut(t *testing.T) {
	for _, rules := range []struct {
		name string
		o    lazyfs.Options
	}{{"posix", lazyfs.Options{}}, {"ext4-ordered", lazyfs.Options{Ordered: true}}} {
		t.Run(rules.name, func(t *testing.T) { powerCutRounds(t, rules.o, rules.name) })
	}
}

func powerCutRounds(t *testing.T, o lazyfs.Options, rules string) {
	r := rng(t)
	fsys := lazyfs.ForTest(t, o)
	up := peertest.StartMosquitto(t)
	link := peertest.StartProxy(t, up.Addr)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	g := newGateway(t, gwConfig{cloud: link.Addr, dataDir: filepath.Join(fsys.Dir(), "data"), leaves: crashLeaves.ids()})
	g.start()
	ls := startLeaves(t, crashLeaves, g.hubAddr, l)
	ls.awaitAcks(t, 10, 10*time.Second)

	n := rounds(15, 50)
	var ingest, drain, tornCuts, failedOpens int
	for round := 1; round <= n; round++ {
		if r.IntN(2) == 0 { // upstream down: a backlog builds; the cut lands while it drains or before
			drain++
			link.Cut()
			time.Sleep(time.Duration(200+r.IntN(1300)) * time.Millisecond)
			if r.IntN(3) != 0 {
				link.Restore()
				time.Sleep(time.Duration(r.IntN(400)) * time.Millisecond)
			}
		} else {
			ingest++
			link.Restore()
			time.Sleep(time.Duration(100+r.IntN(900)) * time.Millisecond)
		}
		torn := 0
		if r.IntN(2) == 0 {
			torn = 1 + r.IntN(8192)
			tornCuts++
		}
		t.Logf("cut %d: acked %d, torn %d", round, l.AckedCount(), torn)
		powerCut(t, fsys, g, torn)
		if !restartAfterCut(t, g, round) {
			failedOpens++
			continue
		}
		ls.awaitAcks(t, 10, 15*time.Second)
	}
	ls.stop()
	link.Restore()
	ctx, cancel := context.WithTimeout(context.Background(), pick(2*time.Minute, 10*time.Minute))
	defer cancel()
	if err := l.WaitDelivered(ctx, 30*time.Second); err != nil {
		t.Error(err)
		t.Logf("lost runs: %s", l.LostRanges())
	}
	g.awaitDrained(30 * time.Second)
	st := fsys.Stats()
	t.Logf("%d power cuts (%d during ingest, %d with a backlog, %d torn); %d restarts not healthy; lazyfs: %d writes, %d MiB, %d fsyncs, %d dir fsyncs, %d KiB unsynced dropped, %d directory changes undone, %d torn bytes kept",
		n, ingest, drain, tornCuts, failedOpens, st.Writes, st.WriteBytes>>20, st.Fsyncs, st.DirFsyncs, st.DroppedBytes>>10, st.UndoneOps, st.TornBytes)
	t.Logf("leaves: %s", ls)
	if st.DroppedBytes == 0 {
		t.Errorf("no cut dropped any unsynced data: the run proves nothing")
	}
	checkLedger(t, l.Report(fmt.Sprintf("outpost power cut ×%d (%s)", n, rules)), 2)
}
