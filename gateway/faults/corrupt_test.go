package faults

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

// corruption damages the store files of a stopped gateway (dir is
// DATA_DIR/queue) and says what it did.
type corruption struct {
	name string
	do   func(t *testing.T, r *rand.Rand, dir string) string
}

// overwrite fills n bytes of path at off (clamped) with random bytes.
func overwrite(t *testing.T, r *rand.Rand, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	off = min(off, max(st.Size()-1, 0))
	n = min(n, max(st.Size()-off, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// files returns the store files whose names end in suffix.
func files(t *testing.T, dir, suffix string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), suffix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

func each(t *testing.T, paths []string, what string, fn func(p string, size int64)) string {
	t.Helper()
	if len(paths) == 0 {
		t.Fatalf("no %s files to corrupt", what)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		fn(p, st.Size())
	}
	return what
}

var corruptions = []corruption{
	{"manifest-garbage", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, "MANIFEST"), "MANIFEST overwritten from byte 8", func(p string, size int64) {
			overwrite(t, r, p, 8, size)
		})
	}},
	{"manifest-empty", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, "MANIFEST"), "MANIFEST truncated to 0 bytes", func(p string, _ int64) {
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
		})
	}},
	{"sst-garbage", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, ".sst"), "4 KiB in the middle of every .sst overwritten", func(p string, size int64) {
			overwrite(t, r, p, size/2, 4096)
		})
	}},
	{"sst-truncated", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, ".sst"), "every .sst truncated to half", func(p string, size int64) {
			if err := os.Truncate(p, size/2); err != nil {
				t.Fatal(err)
			}
		})
	}},
	{"vlog-garbage", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, ".vlog"), "every .vlog overwritten after its 20-byte header", func(p string, size int64) {
			overwrite(t, r, p, 20, min(size, 1<<20))
		})
	}},
	{"keyregistry-garbage", func(t *testing.T, r *rand.Rand, dir string) string {
		return each(t, files(t, dir, "KEYREGISTRY"), "KEYREGISTRY overwritten", func(p string, size int64) {
			overwrite(t, r, p, 0, size)
		})
	}},
	{"everything-zeroed", func(t *testing.T, r *rand.Rand, dir string) string {
		ents, _ := os.ReadDir(dir)
		var all []string
		for _, e := range ents {
			all = append(all, filepath.Join(dir, e.Name()))
		}
		return each(t, all, "every file truncated to 0 bytes (a power cut before the data reached the disk)", func(p string, _ int64) {
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
		})
	}},
}

// Corrupt store files while the gateway is stopped. On start the gateway
// either opens the store with every acknowledged message intact, or moves
// it aside (quarantine), runs on a fresh store and says so on /healthz
// (503 with the reason). Either way it carries new messages end to end.
// Opening a damaged store as if nothing happened and silently losing
// acknowledged messages fails.
func TestFaultCorruptStore(t *testing.T) {
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			r := rng(t)
			up := peertest.StartMosquitto(t)
			link := peertest.StartProxy(t, up.Addr)
			l := NewLedger()
			subscribe(t, up.Addr, l)
			spec := leafSpec{paho: 2, rate: 0, window: 32, size: 256}
			after := leafSpec{prefix: "after-", paho: 1, rate: 200, window: 8, size: 64}
			g := newGateway(t, gwConfig{cloud: link.Addr, leaves: append(spec.ids(), after.ids()...)})

			// Queue a backlog (the link is down) big enough to reach the
			// value log and, once closed, a table.
			link.Cut()
			g.start()
			ls := startLeaves(t, spec, g.hubAddr, l)
			ls.awaitAcks(t, 3000, 30*time.Second)
			ls.stop()
			before := l.AckedCount()
			g.term()

			what := c.do(t, r, filepath.Join(g.dataDir, "queue"))
			g.launch()
			code, body := g.awaitHTTP(30 * time.Second)
			st := g.status()
			quarantined := st.Queue.Quarantined
			t.Logf("%s: /healthz %d %q; queue depth %d (had %d acknowledged)", what, code, body, st.Queue.Depth, before)

			if quarantined != "" {
				if code != 503 || !strings.Contains(body, "quarantine") {
					t.Errorf("store quarantined to %s, but /healthz answered %d %q", quarantined, code, body)
				}
				if st.Healthy {
					t.Errorf("/api/status says healthy with a quarantined store")
				}
				if _, err := os.Stat(quarantined); err != nil {
					t.Errorf("quarantine dir: %v", err)
				}
			} else if code != 200 {
				t.Errorf("store not quarantined, but /healthz answered %d %q", code, body)
			}

			// The gateway works: new messages go end to end.
			link.Restore()
			fresh := NewLedger()
			subscribe(t, up.Addr, fresh)
			ls = startLeaves(t, after, g.hubAddr, fresh)
			ls.awaitAcks(t, 100, 20*time.Second)
			ls.stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := fresh.WaitDelivered(ctx, 20*time.Second); err != nil {
				t.Errorf("after %s: new messages: %v", c.name, err)
			}
			if !g.alive() {
				t.Fatalf("gateway died:\n%s", g.proc.Output())
			}

			// Without a quarantine, every message acknowledged before the
			// damage must still arrive.
			if quarantined != "" {
				rep := l.Report("outpost " + c.name)
				t.Logf("quarantined: %d of %d acknowledged messages are in %s, not delivered", rep.Lost, rep.Acked, filepath.Base(quarantined))
				return
			}
			err := l.WaitDelivered(ctx, 10*time.Second)
			rep := l.Report("outpost " + c.name)
			switch {
			case err != nil || rep.Lost > 0:
				code, body := g.health()
				st := g.status()
				t.Errorf("%s: store opened as healthy, but %d acknowledged messages were never delivered (%v); now /healthz %d %q, queue depth %d, link up %v\n%s",
					what, rep.Lost, err, code, body, st.Queue.Depth, st.Link != nil && st.Link.Connected, rep)
			default:
				t.Logf("store survived %s with all %d acknowledged messages", what, rep.Acked)
			}
		})
	}
}
