package cloudlink

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/tcpproxy"
	"github.com/outpost-iot/outpost/gateway/peertest"
)

// producer appends records to q every tick, round-robin over devices, until stopped.
type producer struct {
	q        *memQueue
	devices  []string
	mu       sync.Mutex
	want     map[string][]uint64
	payloads map[uint64]string
	n        int
	stop     chan struct{}
	done     chan struct{}
}

func produce(q *memQueue, tick time.Duration, devices ...string) *producer {
	p := &producer{q: q, devices: devices, want: map[string][]uint64{}, payloads: map[uint64]string{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			p.mu.Lock()
			dev := devices[p.n%len(devices)]
			body := fmt.Sprintf(`{"i":%d}`, p.n)
			seq := q.Append(dev, []byte(body))
			p.want[dev] = append(p.want[dev], seq)
			p.payloads[seq] = body
			p.n++
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *producer) finish() (map[string][]uint64, map[uint64]string, int) {
	close(p.stop)
	<-p.done
	return p.want, p.payloads, p.n
}

// waitConnected polls Status until the session is connected (10 s at most).
func waitConnected(t *testing.T, s *Session) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatalf("session not connected after 10 s: %+v", s.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitOutages waits until the session has counted at least n outages.
func waitOutages(t *testing.T, s *Session, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for uint64(s.Status().Outages) < n {
		if time.Now().After(deadline) {
			t.Fatalf("session counted %d outages after 10 s, want %d", s.Status().Outages, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func fastRetry(o Options) Options {
	o.RetryMin, o.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	o.Keepalive = time.Second
	return o
}

func newProxy(t *testing.T, target string) *tcpproxy.Proxy {
	p, err := tcpproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestOutageProxyCut cuts the link ten times while messages flow: every
// message arrives and the link resumes by itself every time. With
// StrictOrder each device's messages also arrive in order; live-first only
// promises no loss (fresh records overtake the backlog after each cut).
func TestOutageProxyCut(t *testing.T) {
	for _, mode := range []string{"strict", "live-first", "packed"} {
		t.Run(mode, func(t *testing.T) {
			strict := mode == "strict"
			m := peertest.StartMosquitto(t)
			col := collect(t, "tcp://"+m.Addr, nil, "", "")
			px := newProxy(t, m.Addr)
			q := newMemQueue()
			opt := Options{Config: Config{URL: "mqtt://" + px.Addr(), ClientID: "gw-cut", MaxInflight: 16}, StrictOrder: strict, Logger: testLogger(t)}
			if mode == "packed" {
				// Packs open when a cut comes are released with the rest.
				opt.Pack = PackConfig{MaxBytes: 1024, MaxDelay: 50 * time.Millisecond}
			}
			s, err := New(fastRetry(opt), q)
			if err != nil {
				t.Fatal(err)
			}
			runSession(t, s)
			prod := produce(q, 500*time.Microsecond, "d1", "d2", "d3", "d4")
			for i := range 10 {
				waitConnected(t, s)
				time.Sleep(100 * time.Millisecond)
				px.Set(tcpproxy.Cut)
				time.Sleep(time.Duration(100+20*i) * time.Millisecond)
				px.Set(tcpproxy.Up)
				// The next cut waits until this one is seen as an outage: on a
				// loaded machine two cuts could otherwise fall into one outage.
				waitOutages(t, s, uint64(i+1))
			}
			want, payloads, n := prod.finish()
			waitDrained(t, q, 20*time.Second)
			col.waitAll(want, payloads, 10*time.Second)
			dups := col.verify(want, payloads, strict)
			st := s.Status()
			t.Logf("%d messages, %d duplicates, %d outages, %d resent, %d connections", n, dups, st.Outages, st.Resent, px.Accepts())
			if st.Outages < 10 {
				t.Errorf("status counts %d outages, want ≥ 10", st.Outages)
			}
			if !st.Connected {
				t.Errorf("not connected at the end: %+v", st)
			}
		})
	}
}

// TestOutageMosquittoRestart kills (SIGKILL) and restarts the upstream
// broker ten times while messages flow.
//
// A broker killed with -9 and no persistence loses what it had accepted
// (PUBACKed) but not yet written to the subscriber; that loss is the
// broker's, not ours. The broker logs every PUBLISH it receives and every
// PUBACK it sends, so the test tells the two apart: a missing message is our
// fault unless the broker's own log shows it PUBACKed it.
func TestOutageMosquittoRestart(t *testing.T) {
	m := peertest.StartMosquitto(t, "log_type all")
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	// The gate keeps the gateway away from a restarted broker until the
	// test's subscriber is back on it; otherwise the broker would accept
	// (PUBACK) messages that nobody subscribes to yet and drop them.
	gate := newProxy(t, m.Addr)
	q := newMemQueue()
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + gate.Addr(), ClientID: "gw-restart", MaxInflight: 16}, StrictOrder: true, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	prod := produce(q, 500*time.Microsecond, "d1", "d2", "d3")
	var logs []string
	for range 10 {
		waitConnected(t, s)
		time.Sleep(100 * time.Millisecond)
		before := s.Status().Outages
		col.forgetSubscriptions()
		old := m.Proc
		m.Kill()
		logs = append(logs, old.Exited())
		gate.Set(tcpproxy.Cut)
		m.Start()
		col.waitSubscribed(10 * time.Second)
		gate.Set(tcpproxy.Up)
		// The session must notice this kill before the next one, or two
		// kills fall into one outage (Connected is still true from the
		// connection the kill just broke).
		for deadline := time.Now().Add(30 * time.Second); ; {
			if st := s.Status(); st.Outages > before && st.Connected {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the session did not come back after a broker restart: %+v", s.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	want, payloads, n := prod.finish()
	waitDrained(t, q, 20*time.Second)
	col.settle(n, 3*time.Second) // some may never come: see above
	lost, dups := col.check(want, payloads, true)
	m.Kill() // so that its log is complete
	brokerAcked := pubackedMids(append(logs, m.Exited()), "gw-restart")
	ours := 0
	for _, seq := range lost {
		if !brokerAcked[fmt.Sprintf("mid-%d", seq)] {
			ours++
			t.Errorf("seq %d lost and the broker never PUBACKed it: acked in our store without a PUBACK", seq)
		}
	}
	st := s.Status()
	t.Logf("%d messages, %d duplicates, %d outages, %d resent; %d lost by the killed broker after its PUBACK, %d by us",
		n, dups, st.Outages, st.Resent, len(lost)-ours, ours)
	if st.Outages < 10 {
		t.Errorf("status counts %d outages, want ≥ 10", st.Outages)
	}
}

// pubackedMids reads Mosquitto debug logs and returns the $.mid of every
// PUBLISH from client that the broker acknowledged with a PUBACK.
func pubackedMids(logs []string, client string) map[string]bool {
	recv := regexp.MustCompile(`Received PUBLISH from ` + regexp.QuoteMeta(client) + ` \(d\d, q1, r\d, m(\d+), '[^']*%24\.mid=([^&']+)`)
	ack := regexp.MustCompile(`Sending PUBACK to ` + regexp.QuoteMeta(client) + ` \(m(\d+), rc0\)`)
	out := map[string]bool{}
	for _, l := range logs {
		pending := map[string]string{} // packet id -> mid, per broker instance
		for line := range strings.SplitSeq(l, "\n") {
			if m := recv.FindStringSubmatch(line); m != nil {
				pending[m[1]] = m[2]
			} else if m := ack.FindStringSubmatch(line); m != nil {
				if mid, ok := pending[m[1]]; ok {
					out[mid] = true
				}
			}
		}
	}
	return out
}

// TestHalfOpenLink stalls the link without closing it: keep-alive must
// notice, and the session must reconnect and deliver once the path is back.
func TestHalfOpenLink(t *testing.T) {
	m := peertest.StartMosquitto(t)
	col := collect(t, "tcp://"+m.Addr, nil, "", "")
	px := newProxy(t, m.Addr)
	q := newMemQueue()
	s, err := New(fastRetry(Options{Config: Config{URL: "mqtt://" + px.Addr(), ClientID: "gw-halfopen"}, Logger: testLogger(t)}), q)
	if err != nil {
		t.Fatal(err)
	}
	runSession(t, s)
	want, payloads := fill(q, 10, "d1")
	col.waitUnique(10, 10*time.Second)
	px.Set(tcpproxy.Stalled)
	w2, p2 := fill(q, 10, "d1")
	// The stalled connection must be given up (keep-alive 1 s) ...
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatal("session still believes a stalled link is up after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ... and a fresh one made through the restored path.
	px.Set(tcpproxy.Cut) // drop the stalled connections, as a NAT reboot would
	px.Set(tcpproxy.Up)
	waitDrained(t, q, 20*time.Second)
	col.waitUnique(20, 10*time.Second)
	want["d1"] = append(want["d1"], w2["d1"]...)
	for k, v := range p2 {
		payloads[k] = v
	}
	col.verify(want, payloads, true)
}
