package faults

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// gapRig is a gateway whose upstream (Mosquitto) sits behind a cuttable
// link, with a mosquitto_sub at the upstream recording every D2C message.
type gapRig struct {
	t    *testing.T
	up   *peertest.Mosquitto
	sub  *peertest.Proc
	link *peertest.Proxy
	g    *gw
}

func newGapRig(t *testing.T, store string) *gapRig {
	t.Helper()
	peertest.Need(t, "mosquitto_pub")
	r := &gapRig{t: t, up: peertest.StartMosquitto(t)}
	r.sub = r.up.Sub(t, "devices/#")
	r.link = peertest.StartProxy(t, r.up.Addr)
	r.g = newGateway(t, gwConfig{cloud: r.link.Addr, store: store, hub: "  max_message_bytes: 4096\n", leaves: []string{"leaf-1"}})
	r.g.start()
	r.awaitLink(true)
	return r
}

// awaitLink waits until the gateway reports the link up (or down).
func (r *gapRig) awaitLink(up bool) {
	r.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st := r.g.status(); st.Link != nil && st.Link.Connected == up {
			return
		}
	}
	r.t.Fatalf("link not connected=%v after 20s: %+v", up, r.g.status().Link)
}

// publish sends payloads from leaf-1 with mosquitto_pub -l at QoS 1 and
// waits until the gateway has stored all of them (appends counts every
// record ever stored before).
func (r *gapRig) publish(from, n int) {
	r.t.Helper()
	before := r.g.status().Queue.Appends
	var lines strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&lines, "gap-%04d %0150d\n", i, 0)
	}
	host, port, _ := strings.Cut(r.g.hubAddr, ":")
	cmd := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-q", "1", "-i", "leaf-1", "-u", "leaf-1", "-P", password("leaf-1"),
		"-t", "devices/leaf-1/messages/events/", "-l")
	cmd.Stdin = strings.NewReader(lines.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if r.g.status().Queue.Appends >= before+uint64(n) {
			return
		}
	}
	r.t.Fatalf("gateway stored %d of %d published", r.g.status().Queue.Appends-before, n)
}

// awaitReported waits until the queue is empty and the store has no gap
// accumulating or outstanding (the report was acknowledged upstream).
func (r *gapRig) awaitReported() {
	r.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if q := r.g.status().Queue; q.Depth == 0 && q.Gap.Empty() && q.GapOut.Empty() {
			time.Sleep(300 * time.Millisecond) // the subscriber may trail the PUBACKs
			return
		}
	}
	r.t.Fatalf("after 60s: queue %+v", r.g.status().Queue)
}

// upstream is what the upstream subscriber saw: the leaf's payload numbers
// and the gap reports, each once (by $.mid).
type upstream struct {
	data map[int]bool
	gaps []gapReport
}

type gapReport struct {
	Mid      string `json:"-"`
	Device   string `json:"-"`
	Gen      uint64 `json:"gen"`
	Dropped  uint64 `json:"dropped"`
	Expired  uint64 `json:"expired"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

func (r *gapRig) upstream() upstream {
	r.t.Helper()
	u := upstream{data: map[int]bool{}}
	mids := map[string]bool{}
	for _, line := range strings.Split(r.sub.Output(), "\n") {
		topic, payload, ok := strings.Cut(line, " ")
		if !ok || !strings.HasPrefix(topic, "devices/") {
			continue
		}
		dev, ps, err := msg.ParseEventsTopic(topic)
		if err != nil {
			r.t.Errorf("upstream topic %q: %v", topic, err)
			continue
		}
		mid, _ := ps.Get(msg.PropMessageID)
		if mids[mid] {
			continue
		}
		mids[mid] = true
		if typ, _ := ps.Get(msg.PropType); typ == "gap" {
			g := gapReport{Mid: mid, Device: dev}
			if ct, _ := ps.Get(msg.PropContentType); ct != msg.ContentTypeJSON {
				r.t.Errorf("gap report %q without $.ct=application/json", topic)
			}
			if err := json.Unmarshal([]byte(payload), &g); err != nil {
				r.t.Errorf("gap report %q: %v", payload, err)
			}
			u.gaps = append(u.gaps, g)
			continue
		}
		var n int
		if _, err := fmt.Sscanf(payload, "gap-%d", &n); err != nil {
			r.t.Errorf("upstream payload %q", payload)
			continue
		}
		u.data[n] = true
	}
	return u
}

// check asserts that the gap reports count exactly the records missing
// upstream out of the n published (payload i has seq i+1: a fresh store
// numbers from 1), all for reason want ("dropped" or "expired"), and that
// every missing seq lies in a report's range.
func (u upstream) check(t *testing.T, n int, want string) {
	t.Helper()
	if len(u.gaps) == 0 {
		t.Fatalf("no gap report upstream; %d of %d records arrived", len(u.data), n)
	}
	var dropped, expired uint64
	inRange := func(seq uint64) bool {
		for _, g := range u.gaps {
			if seq >= g.FirstSeq && seq <= g.LastSeq {
				return true
			}
		}
		return false
	}
	for _, g := range u.gaps {
		dropped += g.Dropped
		expired += g.Expired
		if g.Device != "gw-faults" {
			t.Errorf("gap report %s from device %q, want the gateway gw-faults", g.Mid, g.Device)
		}
	}
	missing := 0
	for i := range n {
		if !u.data[i] {
			missing++
			if !inRange(uint64(i + 1)) {
				t.Errorf("payload %d (seq %d) missing upstream and in no gap report's range", i, i+1)
			}
		}
	}
	got := map[string]uint64{"dropped": dropped, "expired": expired}
	if missing == 0 || got[want] != uint64(missing) || dropped+expired != uint64(missing) {
		t.Errorf("gap reports %+v count dropped=%d expired=%d; %d of %d records are missing upstream, all %s", u.gaps, dropped, expired, missing, n, want)
	}
	t.Logf("%d of %d arrived; gap reports %+v", len(u.data), n, u.gaps)
}

// logged sums the count= of the gateway's log lines with message m.
func logged(out, m string) uint64 {
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(m) + `" count=(\d+)`)
	var n uint64
	for _, s := range re.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseUint(s[1], 10, 64)
		n += v
	}
	return n
}

const dropMsg, expireMsg = "store full: oldest records dropped", "records expired in the store"

// A 40 KiB drop-oldest store takes 600 records while the link is cut: the
// oldest are evicted, the log says so with the count, and once the link is
// back a gap report counts exactly the records that never arrive.
func TestGapDropOldest(t *testing.T) {
	r := newGapRig(t, "  max_bytes: 40KiB\n  when_full: drop-oldest\n")
	r.link.Cut()
	r.awaitLink(false)
	r.publish(0, 600)
	st := r.g.status().Queue
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", st)
	}
	waitLogged(t, r.g, dropMsg, st.Dropped)
	r.link.Restore()
	r.awaitReported()
	u := r.upstream()
	u.check(t, 600, "dropped")
	if n := r.g.metric("outpost_link_gap_reports_total"); n != float64(len(u.gaps)) {
		t.Errorf("outpost_link_gap_reports_total %v, want %d", n, len(u.gaps))
	}
	if d := r.g.status().Queue.Dropped; logged(r.g.proc.Output(), dropMsg) != d {
		t.Errorf("log counts %d dropped, the store %d", logged(r.g.proc.Output(), dropMsg), d)
	}
}

// Records older than store.ttl expire while the link is cut; the log says
// so, and the gap report counts exactly the expired ones, which are exactly
// those missing upstream.
func TestGapTTL(t *testing.T) {
	r := newGapRig(t, "  ttl: 2s\n")
	r.publish(0, 10) // these go through
	for deadline := time.Now().Add(20 * time.Second); r.g.status().Queue.Depth != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not forwarded: %+v", r.g.status().Queue)
		}
	}
	r.link.Cut()
	r.awaitLink(false)
	r.publish(10, 40)
	waitLogged(t, r.g, expireMsg, 40)
	if st := r.g.status().Queue; st.Expired != 40 || st.Depth != 0 {
		t.Fatalf("after the ttl: %+v, want 40 expired and nothing queued", st)
	}
	r.link.Restore()
	r.awaitReported()
	r.upstream().check(t, 50, "expired")
}

// Records are dropped while the link is cut, then the gateway is killed
// (kill -9) before it could send the gap report; after the restart the
// report goes up and counts exactly what is missing.
func TestGapSurvivesKill(t *testing.T) {
	r := newGapRig(t, "  max_bytes: 40KiB\n  when_full: drop-oldest\n")
	r.link.Cut()
	r.awaitLink(false)
	r.publish(0, 400)
	if st := r.g.status().Queue; st.Dropped == 0 || st.Gap.Empty() {
		t.Fatalf("nothing dropped: %+v", st)
	}
	r.g.kill9()
	r.g.start()
	if st := r.g.status().Queue; st.Gap.Empty() && st.GapOut.Empty() {
		t.Fatalf("the gap did not survive the kill: %+v", st)
	}
	r.link.Restore()
	r.awaitReported()
	r.upstream().check(t, 400, "dropped")
}

// waitLogged waits until the gateway's log lines m count want in all.
func waitLogged(t *testing.T, g *gw, m string, want uint64) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if logged(g.proc.Output(), m) == want {
			return
		}
	}
	t.Fatalf("log counts %d for %q, want %d:\n%s", logged(g.proc.Output(), m), m, want, g.proc.Output())
}
