package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest/lazyfs"
)

// A disk that fails under the running gateway: EIO on every write, EIO on
// every fsync (the page cache drops the data, as Linux does), EIO on the
// value log's fsyncs only, ENOSPC part-way through a batch, and a
// read-only remount. The rule since PostgreSQL's fsyncgate: after a failed
// write or sync the store acknowledges nothing (no PUBACK for 3.1.1
// leaves, a failure reason code for MQTT 5) and does not believe a later
// success. Either it stays failed after the disk heals, reporting it
// (/healthz, outpost_store_failed, one log line) until the gateway exits,
// or, when the value log failed to sync, it stops the process at once.
// Then a restart (systemd's Restart=always, played here by the test)
// reopens what is really on disk. Nothing acknowledged is lost.
func TestFaultFailingDisk(t *testing.T) {
	for _, c := range lazyfs.Failures() {
		t.Run(c.Name, func(t *testing.T) { failingDisk(t, c.Faults) })
	}
}

func failingDisk(t *testing.T, faults lazyfs.Faults) {
	fsys := lazyfs.ForTest(t, lazyfs.Options{})
	up := peertest.StartMosquitto(t)
	l := NewLedger()
	subscribe(t, up.Addr, l)
	spec := leafSpec{paho: 2, mosq: 1, mosqV5: 1, rate: 100, window: 8, size: 256}
	g := newGateway(t, gwConfig{cloud: up.Addr, dataDir: filepath.Join(fsys.Dir(), "data"), leaves: spec.ids()})
	g.start()
	ls := startLeaves(t, spec, g.hubAddr, l)
	ls.awaitAcks(t, 100, 15*time.Second)

	fsys.SetFaults(faults)
	// Two ways to stop acknowledging, both tested: a failed value-log sync
	// stops the process at once (store.ErrValueLogSync: Badger would write
	// past it); any other failed write or sync puts the store in the
	// failed state, which the gateway reports for a few seconds before it
	// exits.
	deadline := time.Now().Add(20 * time.Second)
	reported := false
	for !reported {
		select {
		case <-g.proc.Done():
		default:
			if code, body := g.tryHealth(); code == 503 && strings.Contains(body, "store: a write or sync failed") {
				t.Logf("/healthz 503: %s", body)
				reported = true
				if v := g.metric("outpost_store_failed"); v != 1 {
					t.Errorf("outpost_store_failed = %v on a failed store, want 1", v)
				}
			}
			if time.Now().After(deadline) {
				code, body := g.tryHealth()
				t.Fatalf("the disk fails but /healthz says %d %q\n%s", code, body, g.proc.Output())
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	if reported {
		// Nothing is acknowledged from now on: not while the disk
		// fails, and not after it heals (a retried sync may "succeed"
		// for pages the kernel already dropped).
		time.Sleep(300 * time.Millisecond) // PUBACKs of batches committed before the failure
		acked, refused := ls.acks(), l.Report("").Refused
		time.Sleep(time.Second)
		fsys.SetFaults(lazyfs.Faults{})
		time.Sleep(time.Second)
		if n := ls.acks() - acked; n != 0 {
			t.Errorf("%d PUBACKs from a store whose write or sync failed", n)
		}
		if r := l.Report("").Refused; r <= refused {
			t.Errorf("no publish was refused while the store was failed (refused %d before, %d after)", refused, r)
		}
		if code, body := g.health(); code != 503 {
			t.Errorf("/healthz %d %q after the disk healed: the store must not believe it until it is reopened", code, body)
		}
		if n := strings.Count(g.proc.Output(), "store: commit failed; the store stops acknowledging"); n != 1 {
			t.Errorf("the failure was logged %d times, want once", n)
		}
	}
	// The gateway exits by itself; its service manager (the test here,
	// Restart=always under systemd) starts it again, which reopens the
	// store from what reached the disk.
	select {
	case <-g.proc.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("the gateway with a failed store did not exit:\n%s", g.proc.Output())
	}
	fsys.SetFaults(lazyfs.Faults{})
	out := g.proc.Output()
	switch {
	case reported && !strings.Contains(out, "gateway: store failed (a restart reopens it from what is on disk)"):
		t.Errorf("the gateway exited without saying the store failed:\n%s", out)
	case !reported && !strings.Contains(out, store.ErrValueLogSync.Error()):
		t.Errorf("the gateway exited without reporting the failure:\n%s", out)
	case !reported:
		t.Logf("the store stopped the process: the value log failed to sync")
	}
	g.launch()
	if code, body := g.awaitHTTP(30 * time.Second); code != 200 {
		t.Fatalf("after the restart /healthz %d %q\n%s", code, body, g.proc.Output())
	}
	ls.awaitAcks(t, 100, 20*time.Second)
	ls.stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.WaitDelivered(ctx, 20*time.Second); err != nil {
		t.Error(err)
		t.Logf("lost runs: %s", l.LostRanges())
	}
	st := fsys.Stats()
	t.Logf("leaves: %s; lazyfs: %d operations failed", ls, st.Faults)
	if st.Faults == 0 {
		t.Error("lazyfs failed no operation: the run proves nothing")
	}
	checkLedger(t, l.Report(fmt.Sprintf("outpost failing disk %+v", faults)), 3)
}

// tryHealth is health for a gateway that may exit meanwhile: 0 and the
// error when /healthz does not answer.
func (g *gw) tryHealth() (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + g.httpAddr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}
