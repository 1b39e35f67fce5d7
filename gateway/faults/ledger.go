// Package faults proves Outpost's one promise on the built binary: an
// acknowledged message is never lost — not through a kill -9, a long
// upstream outage with a restart in the middle, a full disk, corrupt store
// files, or a flood of bad packets — and the gateway never needs a human to
// start sending again.
//
// The proof is an acknowledgement ledger (Ledger). Leaf clients (paho and
// mosquitto_pub) publish sequence-numbered QoS 1 messages through the
// gateway's hub; every PUBACK a leaf receives is written into the ledger; a
// subscriber on the upstream Mosquitto writes every delivery. After the run
// the ledger says how many acknowledged messages were lost (must be 0), how
// many were delivered more than once (allowed: at-least-once), whether a
// message's $.mid stayed the same across redeliveries, and whether each
// device's messages kept their order.
//
// The tests in this package build `outpost` (or use OUTPOST_BIN) and run it
// as a child process. The short versions run in `go test`; OUTPOST_SOAK=1
// (`make soak`) runs hundreds of rounds and a million messages. The same
// ledger run against a Mosquitto bridge gives the peer's loss under kill -9.
package faults

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// ID returns the ledger id of a leaf's seq-th message: "device-seq". It is
// the first word of the payload and, where the leaf sets one, the $.mid.
func ID(device string, seq int) string { return device + "-" + strconv.Itoa(seq) }

// ParseID splits a ledger id into device and seq.
func ParseID(id string) (device string, seq int, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i <= 0 || i == len(id)-1 || strings.TrimLeft(id[i+1:], "0123456789") != "" {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i+1:])
	if err != nil {
		return "", 0, false
	}
	return id[:i], n, true
}

// Payload returns a payload for id padded with filler to at least size bytes.
func Payload(id string, size int) []byte {
	b := make([]byte, 0, max(size, len(id)))
	b = append(b, id...)
	if len(b) < size {
		b = append(b, ' ')
		for len(b) < size {
			b = append(b, 'x')
		}
	}
	return b
}

// delivery is what the ledger knows about one id seen upstream.
type delivery struct {
	n    int               // deliveries
	mids map[uint64]string // outpost-seq -> $.mid of each stored copy
	gseq uint64            // lowest outpost-seq seen (0: none)
	bad  bool              // a copy's $.mid was unstable or not the leaf's own
}

// Ledger records acknowledgements and deliveries. All methods are safe for
// concurrent use; Deliver may be called from an MQTT client's callback.
type Ledger struct {
	mu         sync.Mutex
	sent       int
	acked      map[string]bool // ids whose leaf got a successful PUBACK
	refused    int             // publishes answered with a failure or never answered
	seen       map[string]*delivery
	arrivals   map[string][]uint64 // device -> order key of each copy's first delivery, in arrival order
	reorders   map[string]bool     // devices whose client may reorder its own messages
	missing    int                 // acked and not yet delivered
	deliveries int
	foreign    int // deliveries whose payload is not a ledger id (gap reports, ...)
	changed    chan struct{}
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	return &Ledger{acked: map[string]bool{}, seen: map[string]*delivery{}, arrivals: map[string][]uint64{}, reorders: map[string]bool{},
		changed: make(chan struct{})}
}

func (l *Ledger) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// ClientReorders marks a device whose client may put its own messages on
// the wire out of sequence order (mosquitto_pub sends a line read while
// reconnecting ahead of the lines it queued): the hub cannot be blamed for
// storing them in that order, so the device is left out of the ingest-order
// check.
func (l *Ledger) ClientReorders(device string) {
	l.mu.Lock()
	l.reorders[device] = true
	l.mu.Unlock()
}

// Sent counts n publishes attempted.
func (l *Ledger) Sent(n int) {
	l.mu.Lock()
	l.sent += n
	l.mu.Unlock()
}

// Refused counts n publishes that were not acknowledged (a failure reason
// code, a disconnect before the PUBACK, a timeout).
func (l *Ledger) Refused(n int) {
	l.mu.Lock()
	l.refused += n
	l.mu.Unlock()
}

// Acked records that id's leaf received a successful PUBACK: from now on
// the gateway owes its delivery.
func (l *Ledger) Acked(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acked[id] {
		return
	}
	l.acked[id] = true
	if l.seen[id] == nil {
		l.missing++
	}
}

// AckedCount is the number of distinct ids acknowledged so far.
func (l *Ledger) AckedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// Deliver records one message received upstream. The id is the first word
// of the payload; topic supplies $.mid and outpost-seq when present.
func (l *Ledger) Deliver(topic string, payload []byte) {
	id, _, _ := strings.Cut(string(payload), " ")
	dev, seq, ok := ParseID(id)
	var mid string
	var gseq uint64
	if _, ps, err := msg.ParseEventsTopic(topic); err == nil {
		mid, _ = ps.Get(msg.PropMessageID)
		if s, ok := ps.Get(msg.PropSeq); ok {
			gseq, _ = strconv.ParseUint(s, 10, 64)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deliveries++
	if !ok {
		l.foreign++
		return
	}
	d := l.seen[id]
	if d == nil {
		d = &delivery{mids: map[uint64]string{}, gseq: gseq}
		l.seen[id] = d
		if l.acked[id] {
			l.missing--
			if l.missing == 0 {
				l.notifyLocked()
			}
		}
	}
	d.n++
	if gseq != 0 && (d.gseq == 0 || gseq < d.gseq) {
		d.gseq = gseq
	}
	// A leaf's own $.mid (a ledger id) must arrive unchanged; a stored copy
	// (one outpost-seq) must keep its $.mid across redeliveries. A leaf that
	// sets no $.mid and publishes again after a lost PUBACK makes a second
	// copy with another seq and another assigned $.mid: that is allowed.
	if mdev, _, ok := ParseID(mid); ok && mdev == dev && mid != id {
		d.bad = true
	}
	if m, ok := d.mids[gseq]; ok {
		if m != mid {
			d.bad = true
		}
	} else {
		// The first delivery of this stored copy. Order is judged on the
		// gateway's sequence (the order it stored them), or on the leaf's
		// when there is none (a peer that is not outpost).
		key := gseq
		if key == 0 {
			key = uint64(seq)
		}
		l.arrivals[dev] = append(l.arrivals[dev], key)
	}
	d.mids[gseq] = mid
}

// LostIDs returns every acknowledged id not delivered (yet), sorted by
// device and seq.
func (l *Ledger) LostIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.acked {
		if l.seen[id] == nil {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, compareIDs)
	return ids
}

// LostRanges summarises LostIDs as runs of seqs per device:
// "paho-1 140-199 420-460; mpub-1 ...".
func (l *Ledger) LostRanges() string {
	var b strings.Builder
	dev, from, to := "", -1, -1
	flush := func() {
		if from < 0 {
			return
		}
		if from == to {
			fmt.Fprintf(&b, " %d", from)
		} else {
			fmt.Fprintf(&b, " %d-%d", from, to)
		}
	}
	for _, id := range l.LostIDs() {
		d, seq, _ := ParseID(id)
		switch {
		case d != dev:
			flush()
			if b.Len() > 0 {
				b.WriteString(";")
			}
			if dev != "" || b.Len() > 0 {
				b.WriteString(" ")
			}
			b.WriteString(d)
			dev, from, to = d, seq, seq
		case seq == to+1:
			to = seq
		default:
			flush()
			from, to = seq, seq
		}
	}
	flush()
	return strings.TrimSpace(b.String())
}

// DeliveredSeqs returns, per device, the seqs delivered so far, sorted.
func (l *Ledger) DeliveredSeqs() map[string][]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]int{}
	for id := range l.seen {
		if dev, seq, ok := ParseID(id); ok {
			out[dev] = append(out[dev], seq)
		}
	}
	for _, s := range out {
		slices.Sort(s)
	}
	return out
}

// Missing is the number of acknowledged ids not delivered yet.
func (l *Ledger) Missing() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.missing
}

// WaitDelivered blocks until every acknowledged id has been delivered
// (returns nil) or ctx is done (returns ctx's error). Progress is what keeps
// it waiting: it also gives up when nothing new arrived for stall.
func (l *Ledger) WaitDelivered(ctx context.Context, stall time.Duration) error {
	t := time.NewTimer(stall)
	defer t.Stop()
	last := -1
	for {
		l.mu.Lock()
		missing, n, ch := l.missing, l.deliveries, l.changed
		l.mu.Unlock()
		if missing == 0 {
			return nil
		}
		if n != last {
			last = n
			t.Reset(stall)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("faults: %d acknowledged messages not delivered: %w", missing, ctx.Err())
		case <-t.C:
			return fmt.Errorf("faults: %d acknowledged messages not delivered; nothing arrived for %v", missing, stall)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Report is the ledger's verdict.
type Report struct {
	Name       string
	Sent       int      // publishes attempted
	Acked      int      // distinct ids PUBACKed to their leaf
	Refused    int      // publishes not acknowledged
	Delivered  int      // distinct ids seen upstream
	Deliveries int      // messages seen upstream, duplicates included
	Lost       int      // acked, never delivered: must be 0
	LostIDs    []string // up to 20 of them, sorted
	Duplicates int      // deliveries beyond the first
	Unacked    int      // delivered although the leaf got no PUBACK (allowed)
	MidChanged int      // ids whose $.mid was not stable across redeliveries: must be 0
	Foreign    int      // deliveries that are not ledger messages
	Devices    int
	// OrderStreams is, over all devices, the largest number of in-order
	// streams a device's deliveries split into, judged by outpost-seq (the
	// order the gateway stored them; the leaf's seq for a peer without
	// one): the longest run of decreasing keys among the first delivery of
	// each stored copy. 1 is strict order; live-first replay, where fresh
	// messages overtake a backlog, makes it 2; more means a stream itself
	// was reordered.
	OrderStreams int
	// IngestInversions counts pairs where a device's later message got a
	// lower outpost-seq than its earlier one: the hub stored them out of
	// the order the leaf sent them. Must be 0. Devices marked with
	// ClientReorders are left out.
	IngestInversions int
	Inversions       []string // up to 10, as "id@seq<earlier-id@seq"
}

// Report computes the verdict now.
func (l *Ledger) Report(name string) Report {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := Report{Name: name, Sent: l.sent, Acked: len(l.acked), Refused: l.refused,
		Delivered: len(l.seen), Deliveries: l.deliveries, Foreign: l.foreign, Devices: len(l.arrivals)}
	for id := range l.acked {
		if l.seen[id] == nil {
			r.Lost++
			r.LostIDs = append(r.LostIDs, id)
		}
	}
	slices.SortFunc(r.LostIDs, compareIDs)
	if len(r.LostIDs) > 20 {
		r.LostIDs = r.LostIDs[:20]
	}
	type pair struct {
		seq  int
		gseq uint64
	}
	byDev := map[string][]pair{}
	for id, d := range l.seen {
		r.Duplicates += d.n - 1
		if d.bad {
			r.MidChanged++
		}
		if !l.acked[id] {
			r.Unacked++
		}
		if dev, seq, _ := ParseID(id); d.gseq != 0 && !l.reorders[dev] {
			byDev[dev] = append(byDev[dev], pair{seq, d.gseq})
		}
	}
	for dev, ps := range byDev {
		sort.Slice(ps, func(i, j int) bool { return ps[i].seq < ps[j].seq })
		for i := 1; i < len(ps); i++ {
			if ps[i].gseq < ps[i-1].gseq {
				r.IngestInversions++
				if len(r.Inversions) < 10 {
					r.Inversions = append(r.Inversions, fmt.Sprintf("%s@%d<%s@%d",
						ID(dev, ps[i].seq), ps[i].gseq, ID(dev, ps[i-1].seq), ps[i-1].gseq))
				}
			}
		}
	}
	for _, seqs := range l.arrivals {
		r.OrderStreams = max(r.OrderStreams, streams(seqs))
	}
	return r
}

// streams returns the least number of increasing subsequences that cover
// seqs, which is the length of its longest strictly decreasing subsequence.
func streams(seqs []uint64) int {
	// tails[k] is the largest last element of a decreasing run of length
	// k+1 (patience sorting on the reversed order).
	var tails []uint64
	for _, s := range seqs {
		i := sort.Search(len(tails), func(i int) bool { return tails[i] <= s })
		if i == len(tails) {
			tails = append(tails, s)
		} else {
			tails[i] = s
		}
	}
	return len(tails)
}

func compareIDs(a, b string) int {
	da, sa, _ := ParseID(a)
	db, sb, _ := ParseID(b)
	if c := strings.Compare(da, db); c != 0 {
		return c
	}
	return sa - sb
}

// String prints the report as a block of lines.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ledger %s: %d devices, sent %d, acked %d, refused %d\n", r.Name, r.Devices, r.Sent, r.Acked, r.Refused)
	fmt.Fprintf(&b, "  delivered %d distinct in %d messages: lost %d, duplicates %d, delivered-unacked %d, foreign %d\n",
		r.Delivered, r.Deliveries, r.Lost, r.Duplicates, r.Unacked, r.Foreign)
	fmt.Fprintf(&b, "  $.mid changed on redelivery %d, order streams per device ≤ %d, ingest inversions %d",
		r.MidChanged, r.OrderStreams, r.IngestInversions)
	if len(r.Inversions) > 0 {
		fmt.Fprintf(&b, "\n  inversions (id@outpost-seq): %s", strings.Join(r.Inversions, " "))
	}
	if len(r.LostIDs) > 0 {
		fmt.Fprintf(&b, "\n  lost (first %d): %s", len(r.LostIDs), strings.Join(r.LostIDs, " "))
	}
	return b.String()
}
