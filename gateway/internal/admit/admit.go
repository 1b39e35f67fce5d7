// Package admit is the hub's admission bookkeeping that is not MQTT: a
// token bucket per source address, bounded in number, and a log of
// refusals that writes one line per kind and interval with the count.
package admit

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Buckets is a token bucket per source address: the IPv4 address, or the
// IPv6 /64 (one host's usual share). At most Max are kept; beyond that,
// idle (full) buckets are dropped, and if that is not enough, all of them.
type Buckets struct {
	rate  rate.Limit
	burst int
	max   int

	mu    sync.Mutex
	addrs map[netip.Prefix]*rate.Limiter
}

// NewBuckets returns buckets of r tokens/s holding burst (at least 1),
// keeping at most keep addresses.
func NewBuckets(r float64, burst, keep int) *Buckets {
	return &Buckets{rate: rate.Limit(r), burst: max(1, burst), max: keep, addrs: make(map[netip.Prefix]*rate.Limiter)}
}

// Allow takes a token from a's bucket at now. It returns the bucket's key
// (for logs) and whether a token was there; an address that is not TCP
// (a pipe, a unix socket) is always allowed.
func (b *Buckets) Allow(a net.Addr, now time.Time) (key string, ok bool) {
	p, known := SourceKey(a)
	if !known {
		return "", true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	lim := b.addrs[p]
	if lim == nil {
		if len(b.addrs) >= b.max {
			for k, l := range b.addrs {
				if l.TokensAt(now) >= float64(b.burst) {
					delete(b.addrs, k)
				}
			}
			if len(b.addrs) >= b.max {
				clear(b.addrs)
			}
		}
		lim = rate.NewLimiter(b.rate, b.burst)
		b.addrs[p] = lim
	}
	return p.String(), lim.AllowN(now, 1)
}

// Len is the number of addresses with a bucket.
func (b *Buckets) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.addrs)
}

// SourceKey is the bucket key of a remote address: the IPv4 address, or
// the IPv6 /64.
func SourceKey(a net.Addr) (netip.Prefix, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// Refusals logs refusals at most once per Every and kind, each line with
// the count since the last one.
type Refusals struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	logged map[string]*refusal
}

type refusal struct {
	last time.Time
	n    int
}

// NewRefusals logs to log (nil: nowhere) at most once per every and kind.
func NewRefusals(log *slog.Logger, every time.Duration) *Refusals {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Refusals{log: log, every: every, logged: make(map[string]*refusal)}
}

// Refused counts one refusal of kind and logs msg with the count and attrs
// when the kind's last line is older than Every.
func (r *Refusals) Refused(kind, msg string, attrs ...any) {
	r.mu.Lock()
	x := r.logged[kind]
	if x == nil {
		x = &refusal{}
		r.logged[kind] = x
	}
	x.n++
	now := time.Now()
	if !x.last.IsZero() && now.Sub(x.last) < r.every {
		r.mu.Unlock()
		return
	}
	n := x.n
	x.last, x.n = now, 0
	r.mu.Unlock()
	r.log.Warn(msg, append([]any{"refusal", kind, "count", n}, attrs...)...)
}
