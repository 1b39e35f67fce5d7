package cloudlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"log/slog"
	"sync"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/dialect"
	"github.com/outpost-iot/outpost/cloudlink/internal/wire"
)

// Session is one upstream link: it forwards the outbox and takes C2D in.
// Run it once; Status may be called at any time from any goroutine.
type Session struct {
	opt  Options
	q    queue
	gaps gapQueue // nil: the queue reports no gaps (see reportGaps)
	log  *slog.Logger
	tls  *tls.Config // nil for plain TCP
	addr string      // host:port
	d    dialect.Dialect

	mu sync.Mutex
	st Status

	drainMu sync.Mutex
	drain   drain // guarded by drainMu
	dedupe  *recentIDs
	wg      sync.WaitGroup // leasers that may outlive their connection briefly
	rng     func() float64 // [0,1); replaced in tests
	// serveFn is s.serve: one connection, start to end; replaced in tests.
	serveFn func(ctx context.Context, downSince time.Time) result
	// twinWake has a value when the leaf's twin has reported patches to
	// sync (twin.go).
	twinWake chan struct{}
}

// Status is a snapshot of a session's state.
type Status struct {
	Protocol  Protocol
	Connected bool
	// Since is when the current state (connected or not) began.
	Since time.Time
	// Outages counts connections lost (or attempts failed) after the link had
	// been up; the first connect attempt is not an outage.
	Outages int
	// LastError is why the link last went down or last failed to come up.
	LastError string
	// Forwarded counts records acknowledged upstream (PUBACK, then store Ack).
	Forwarded uint64
	// Rejected counts records sent to dead letters (e.g. over the size cap).
	Rejected uint64
	// Gaps counts gap reports (type=gap) acknowledged upstream.
	Gaps uint64
	// Resent counts records released after a lost connection, to be sent again.
	Resent uint64
	// InFlight is the number of publishes awaiting their PUBACK.
	InFlight int
	// Held is the number of records that were waiting in the outbox when the
	// link last came back after an outage (0 if unknown).
	Held int
	// C2D counts C2D messages taken in (Inbox returned nil); C2DDuplicates
	// those recognised by $.mid and acknowledged without calling Inbox again.
	C2D, C2DDuplicates uint64
	// Drain is the progress of the backlog after the last outage.
	Drain Drain
	// Devices is each identity's connection, for azure identity
	// per-device (a Fleet); nil for a single Session.
	Devices map[string]DeviceStatus `json:",omitempty"`
}

// Drain is backlog-replay progress.
type Drain struct {
	Active    bool          // a backlog from before the last reconnect is still being sent
	Remaining int           // records of that backlog still queued (estimate)
	Rate      float64       // records/s of the backlog over the last seconds
	ETA       time.Duration // Remaining / Rate, 0 when unknown
}

// New validates opt and returns a Session forwarding from q. Every problem
// with opt is reported at once (the password and keys are never included).
func New(opt Options, q queue) (*Session, error) {
	o, err := opt.withDefaults()
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, fmt.Errorf("%w: nil queue", ErrOptions)
	}
	s := &Session{opt: o, q: q, log: o.Logger.With("part", "cloudlink", "protocol", o.Protocol), dedupe: newRecentIDs(4096)}
	s.gaps, _ = q.(gapQueue)
	s.rng = randFloat
	s.serveFn = s.serve
	s.twinWake = make(chan struct{}, 1)
	s.st.Protocol = o.Protocol
	s.st.Since = time.Now()
	if o.Protocol == ProtocolNone {
		return s, nil
	}
	var useTLS bool
	s.addr, useTLS, _ = wire.BrokerAddr(o.URL)
	if useTLS {
		if s.tls, err = wire.TLSConfig(wire.TLSFiles(o.TLS), s.addr); err != nil {
			return nil, err
		}
	}
	switch o.Protocol {
	case ProtocolAzure:
		s.d = dialect.Azure{Host: o.Host, Device: o.DeviceID, Key: o.SharedAccessKey, KeyName: o.SharedAccessKeyName, TTL: o.SASTTL}
	default:
		s.d = dialect.MQTT{ID: o.ClientID, User: o.Username, Pass: o.password, Filter: o.C2DTopic}
	}
	return s, nil
}

// Status returns a snapshot of the session's state.
func (s *Session) Status() Status {
	s.drainMu.Lock()
	d := s.drainStatus()
	s.drainMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Drain = d
	return st
}

func (s *Session) update(f func(*Status)) {
	s.mu.Lock()
	f(&s.st)
	s.mu.Unlock()
}

// Run forwards until ctx is done, then returns nil. It never gives up on an
// unreachable or misbehaving broker: every failure is retried with
// exponential back-off and full jitter. It returns an error only when the
// queue fails (a store error is not an outage and cannot be waited out).
// Records leased and not yet acknowledged when Run returns are released.
func (s *Session) Run(ctx context.Context) error {
	defer s.wg.Wait()
	if s.opt.Protocol == ProtocolNone {
		s.log.Info("cloud link disabled; buffering only")
		<-ctx.Done()
		return nil
	}
	bo := backoff{min: s.opt.RetryMin, max: s.opt.RetryMax, rng: s.rng}
	var (
		failures  int       // consecutive failed attempts since the link was last up
		downSince time.Time // zero while up or before the first connection
		everUp    bool
	)
	for {
		res := s.serveFn(ctx, downSince)
		if ctx.Err() != nil {
			return nil
		}
		var se *storeError
		if errors.As(res.err, &se) {
			return se.err
		}
		if res.renew {
			// A planned reconnect is not an outage: go again at once.
			s.log.Info("renewing credentials by reconnecting")
			downSince = time.Time{}
			continue
		}
		if res.connected {
			everUp = true
			failures = 0
			downSince = time.Now()
			if res.lasted >= s.opt.StableAfter {
				bo.reset()
			}
			if res.throttled {
				bo.throttle()
			}
			s.log.Warn("upstream link lost; will retry", "after", res.lasted.Round(time.Millisecond), "err", res.err)
			s.update(func(st *Status) { st.Outages++ })
		} else {
			failures++
			if failures == 1 {
				if everUp {
					// The outage was already logged when the link went down.
					s.log.Debug("reconnect failed; will retry", "err", res.err)
				} else {
					s.log.Warn("cannot reach upstream; will retry", "url", s.opt.URL, "err", res.err)
					downSince = time.Now()
				}
			}
		}
		s.update(func(st *Status) { st.LastError = res.err.Error() })
		// Probe while backing off only when the path, not the broker, was
		// the problem: a broker that refused or throttled us gets the
		// whole back-off.
		if !s.sleep(ctx, bo.next(), !bo.throttled && !refused(res.err)) {
			return nil
		}
	}
}

// Probing during back-off (see sleep).
const (
	probeAfter = 2 * time.Second        // waits shorter than this are not probed
	probeHold  = 300 * time.Millisecond // how long a broker must keep a probe open
)

// sleep waits out one back-off wait, and returns false if ctx ended first.
// When probe is set and the wait is long (the back-off grows to RetryMax,
// 60 s by default), it checks the broker's address every 0.5–1.5 s
// (jittered, so a fleet does not probe in step) with wire.Reachable, a
// TCP connect and nothing more, and ends the wait as soon as the broker is
// reachable: after a long outage the link is back within about 2 s of the
// path, not up to a minute later, while full attempts (TLS, CONNECT) keep
// their back-off.
func (s *Session) sleep(ctx context.Context, wait time.Duration, probe bool) bool {
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		probing := probe && s.addr != "" && left > probeAfter
		step := left
		if probing {
			step = min(left, time.Duration((0.5+s.rng())*float64(time.Second)))
		}
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		if probing && wire.Reachable(ctx, s.addr, probeHold) {
			s.log.Info("upstream reachable again; reconnecting before the back-off ends",
				"backoff_left", time.Until(deadline).Round(time.Millisecond))
			return true
		}
	}
}

// refused reports whether err is the broker's answer (a CONNACK refusal),
// not a failure to reach it.
func refused(err error) bool {
	for _, e := range []error{packets.ErrorRefusedBadProtocolVersion, packets.ErrorRefusedIDRejected,
		packets.ErrorRefusedServerUnavailable, packets.ErrorRefusedBadUsernameOrPassword,
		packets.ErrorRefusedNotAuthorised, packets.ErrorProtocolViolation} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// storeError marks a queue failure, which ends Run.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func storeErr(op string, err error) error {
	return &storeError{fmt.Errorf("cloudlink: store %s: %w", op, err)}
}
