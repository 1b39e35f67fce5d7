package cloudlink

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// delivery is one message seen by the upstream subscriber.
type delivery struct {
	device, mid, payload, topic string
	seq                         uint64
	props                       msg.Props
	at                          time.Time
}

// collector is a paho subscriber at the upstream broker that records every
// D2C message: it stands in for the cloud application.
type collector struct {
	t    testing.TB
	c    paho.Client
	mu   sync.Mutex
	got  []delivery
	seen map[string]bool // $.mid
	dups int
	wake chan struct{}
	bad  []string
	subs chan struct{} // a token per (re)subscription completed
}

func collect(t testing.TB, url string, tc *tls.Config, user, pass string) *collector {
	t.Helper()
	return collectFilter(t, url, tc, user, pass, "devices/+/messages/events/#")
}

// collectFilter is collect for the D2C topics matching filter only.
func collectFilter(t testing.TB, url string, tc *tls.Config, user, pass, filter string) *collector {
	t.Helper()
	col := &collector{t: t, seen: map[string]bool{}, wake: make(chan struct{}), subs: make(chan struct{}, 100)}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("cloud-app-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).SetOrderMatters(true).SetUsername(user).SetPassword(pass).
		SetResumeSubs(true)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetOnConnectHandler(func(c paho.Client) {
		// Re-subscribe after a broker restart (its sessions are not persisted).
		go func() {
			if tok := c.Subscribe(filter, 1, nil); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
				col.subs <- struct{}{}
			}
		}()
	})
	o.SetDefaultPublishHandler(col.handle)
	col.c = paho.NewClient(o)
	if tok := col.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("collector connect %s: %v", url, tok.Error())
	}
	select {
	case <-col.subs:
	case <-time.After(10 * time.Second):
		t.Fatalf("collector did not subscribe")
	}
	t.Cleanup(func() { col.c.Disconnect(0) })
	return col
}

func (col *collector) handle(_ paho.Client, m paho.Message) {
	d := delivery{topic: m.Topic(), payload: string(m.Payload()), at: time.Now()}
	dev, ps, err := msg.ParseEventsTopic(m.Topic())
	col.mu.Lock()
	defer col.mu.Unlock()
	defer func() { close(col.wake); col.wake = make(chan struct{}) }()
	if err != nil {
		col.bad = append(col.bad, fmt.Sprintf("topic %q: %v", m.Topic(), err))
		return
	}
	d.device, d.props = dev, ps
	d.mid, _ = ps.Get(msg.PropMessageID)
	if s, ok := ps.Get(msg.PropSeq); ok {
		d.seq, _ = strconv.ParseUint(s, 10, 64)
	}
	if d.mid == "" || d.seq == 0 {
		col.bad = append(col.bad, fmt.Sprintf("topic %q: no $.mid or outpost-seq", m.Topic()))
	}
	col.got = append(col.got, d)
	if n, ok := ps.Get(PropPack); ok {
		// A pack counts as its readings; unpack counts their duplicates.
		k, _ := strconv.Atoi(n)
		for i := range k {
			col.seen[fmt.Sprintf("%s/%d", d.mid, i)] = true
		}
		return
	}
	if col.seen[d.mid] {
		col.dups++
	}
	col.seen[d.mid] = true
}

// forgetSubscriptions drops (re)subscription events seen so far.
func (col *collector) forgetSubscriptions() {
	for {
		select {
		case <-col.subs:
		default:
			return
		}
	}
}

// waitSubscribed waits for the next (re)subscription, after a broker restart.
func (col *collector) waitSubscribed(timeout time.Duration) {
	col.t.Helper()
	select {
	case <-col.subs:
	case <-time.After(timeout):
		col.t.Fatalf("collector did not resubscribe within %v", timeout)
	}
}

// waitUnique waits until n distinct $.mid values have arrived (a pack
// counts as its readings, which may be fewer than distinct when a pack was
// sent again with other companions).
func (col *collector) waitUnique(n int, timeout time.Duration) {
	col.t.Helper()
	if !col.settle(n, timeout) {
		col.t.Errorf("collector: %d of %d distinct messages after %v", len(col.seenCount()), n, timeout)
	}
}

func (col *collector) seenCount() map[string]bool {
	col.mu.Lock()
	defer col.mu.Unlock()
	return maps.Clone(col.seen)
}

// waitAll waits until every seq in want has arrived, packs unpacked by
// payload (a pack sent again with other companions has another $.mid, so
// counting $.mid values would overcount), or timeout passed. The loss, if
// any, is verify's to report.
func (col *collector) waitAll(want map[string][]uint64, payloads map[uint64]string, timeout time.Duration) {
	seqOf := make(map[string]uint64, len(payloads))
	for seq, p := range payloads {
		seqOf[p] = seq
	}
	deadline := time.After(timeout)
	for {
		col.mu.Lock()
		got, w := append([]delivery(nil), col.got...), col.wake
		col.mu.Unlock()
		have := map[uint64]bool{}
		for _, d := range got {
			if _, ok := d.props.Get(PropPack); !ok {
				have[d.seq] = true
				continue
			}
			var elems []json.RawMessage
			if json.Unmarshal([]byte(d.payload), &elems) == nil {
				for _, e := range elems {
					if seq, ok := seqOf[string(e)]; ok {
						have[seq] = true
					}
				}
			}
		}
		missing := 0
		for _, seqs := range want {
			for _, s := range seqs {
				if !have[s] {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		select {
		case <-w:
		case <-deadline:
			return
		}
	}
}

// settle waits until n distinct $.mid values have arrived or timeout passed,
// and reports whether they did.
func (col *collector) settle(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		col.mu.Lock()
		have, w := len(col.seen), col.wake
		col.mu.Unlock()
		if have >= n {
			return true
		}
		select {
		case <-w:
		case <-deadline:
			return false
		}
	}
}

func (col *collector) snapshot() ([]delivery, int) {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]delivery(nil), col.got...), col.dups
}

// verify checks that every appended seq (want: device -> seqs in append
// order) arrived, that each device's first deliveries came in seq order
// (strict is false for live-first runs, where only no-loss is checked), and
// that payloads are the ones appended. It returns the duplicate count.
func (col *collector) verify(want map[string][]uint64, payloads map[uint64]string, strict bool) int {
	col.t.Helper()
	lost, dups := col.check(want, payloads, strict)
	for i, s := range lost {
		if i == 10 {
			break
		}
		col.t.Logf("lost: seq %d", s)
	}
	if len(lost) > 0 {
		col.t.Errorf("%d messages lost", len(lost))
	}
	return dups
}

// check is verify without failing on loss: it returns the lost seqs.
func (col *collector) check(want map[string][]uint64, payloads map[uint64]string, strict bool) (lost []uint64, dups int) {
	col.t.Helper()
	got, dups := col.snapshot()
	col.mu.Lock()
	for _, b := range col.bad {
		col.t.Error(b)
	}
	col.mu.Unlock()
	got, dups = unpack(col.t, got, payloads, dups)
	first := map[uint64]delivery{}
	lastSeq := map[string]uint64{}
	for _, d := range got {
		if _, ok := first[d.seq]; ok {
			continue
		}
		first[d.seq] = d
		if strict && d.seq < lastSeq[d.device] {
			col.t.Errorf("device %s: seq %d arrived after %d (order broken)", d.device, d.seq, lastSeq[d.device])
		}
		lastSeq[d.device] = max(lastSeq[d.device], d.seq)
		if p, ok := payloads[d.seq]; ok && p != d.payload {
			col.t.Errorf("seq %d: payload %q, want %q", d.seq, d.payload, p)
		}
	}
	for dev, seqs := range want {
		for _, s := range seqs {
			d, ok := first[s]
			if !ok {
				lost = append(lost, s)
				continue
			}
			if d.device != dev {
				col.t.Errorf("seq %d: device %q, want %q", s, d.device, dev)
			}
		}
	}
	slices.Sort(lost)
	return lost, dups
}

// unpack replaces each packed delivery (property outpost-pack) by one
// delivery per reading in its JSON array, found by payload in payloads
// (which must be unique), and counts readings seen twice as duplicates.
func unpack(t testing.TB, got []delivery, payloads map[uint64]string, dups int) ([]delivery, int) {
	t.Helper()
	var seqOf map[string]uint64
	var out []delivery
	seen := map[uint64]bool{}
	for _, d := range got {
		if _, ok := d.props.Get(PropPack); !ok {
			seen[d.seq] = true
		}
	}
	for _, d := range got {
		n, ok := d.props.Get(PropPack)
		if !ok {
			out = append(out, d)
			continue
		}
		if seqOf == nil {
			seqOf = make(map[string]uint64, len(payloads))
			for seq, p := range payloads {
				seqOf[p] = seq
			}
		}
		var elems []json.RawMessage
		if err := json.Unmarshal([]byte(d.payload), &elems); err != nil || strconv.Itoa(len(elems)) != n {
			t.Errorf("pack %s: %d readings (%v), outpost-pack says %s", d.mid, len(elems), err, n)
			continue
		}
		for i, e := range elems {
			seq, ok := seqOf[string(e)]
			if !ok {
				t.Errorf("pack %s: reading %d %s was never appended", d.mid, i, e)
				continue
			}
			if seen[seq] {
				dups++
			}
			seen[seq] = true
			out = append(out, delivery{device: d.device, mid: fmt.Sprintf("%s/%d", d.mid, i), payload: string(e),
				topic: d.topic, seq: seq, props: d.props, at: d.at})
		}
	}
	return out, dups
}
