package cloudlink

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential back-off with full jitter: the n-th wait is uniform
// in [0, min(max, min·2ⁿ)), so a fleet that lost its uplink at the same
// moment does not reconnect in lock-step. throttle raises the floor until the
// next reset, for a broker that drops connections to shed load.
type backoff struct {
	min, max  time.Duration
	n         int
	throttled bool
	rng       func() float64
}

// throttledMin is the floor after a suspected throttling disconnect
// (IoT Hub SDKs use 10-60 s for their throttled profile).
const throttledMin = 10 * time.Second

func (b *backoff) next() time.Duration {
	ceil := b.min << min(b.n, 30)
	if ceil <= 0 || ceil > b.max {
		ceil = b.max
	}
	b.n++
	d := time.Duration(b.rng() * float64(ceil))
	if b.throttled {
		d = max(d, min(throttledMin, b.max))
	}
	return d
}

func (b *backoff) reset() { b.n, b.throttled = 0, false }

func (b *backoff) throttle() { b.throttled = true }

func randFloat() float64 { return rand.Float64() }
