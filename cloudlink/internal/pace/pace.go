// Package pace is the token bucket that paces the cloud link's backlog
// replay (cloud.replay_rate): taken from without waiting, and able to give
// back what a take did not use.
package pace

import (
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Pacer paces a backlog replay: a token bucket of rate tokens/s holding at
// most burst, taken from without waiting. A zero rate means unlimited.
type Pacer struct {
	lim *rate.Limiter    // nil: unlimited
	now func() time.Time // the clock (a fake one in tests)

	// The last take, for giveBack.
	res   *rate.Reservation
	at    time.Time
	taken int
}

// New returns a Pacer whose bucket starts with a second's worth of
// tokens (at least one), not a full burst.
func New(r float64, burst int) *Pacer {
	return NewAt(r, burst, time.Now)
}

// NewAt is New on the clock now.
func NewAt(r float64, burst int, now func() time.Time) *Pacer {
	p := &Pacer{now: now}
	if r <= 0 {
		return p
	}
	p.lim = rate.NewLimiter(rate.Limit(r), burst)
	// A Limiter starts full: empty it as of the moment from which it
	// refills to the starting tokens by now.
	start := min(float64(burst), max(r, 1))
	t := now()
	p.lim.AllowN(t.Add(-time.Duration(math.Ceil(start/r*float64(time.Second)))), burst)
	return p
}

// Take takes up to want tokens without waiting. It returns how many it took
// and, when that is 0, how long until one is available.
func (p *Pacer) Take(want int) (int, time.Duration) {
	if p.lim == nil {
		return want, 0
	}
	now := p.now()
	tokens := p.lim.TokensAt(now)
	if tokens < 1 {
		return 0, time.Duration((1 - tokens) / float64(p.lim.Limit()) * float64(time.Second))
	}
	n := min(want, int(tokens))
	p.res, p.at, p.taken = p.lim.ReserveN(now, n), now, n
	return n, 0
}

// GiveBack returns n of the tokens the last Take took (at most all of
// them), as if they had never been taken.
func (p *Pacer) GiveBack(n int) {
	if p.lim == nil || p.res == nil || n <= 0 {
		return
	}
	// A reservation is cancelled whole: cancel it as of when it was made,
	// then reserve again, as of then, what is kept.
	p.res.CancelAt(p.at)
	p.taken -= min(n, p.taken)
	p.res = p.lim.ReserveN(p.at, p.taken)
}
