package cloudlink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Defaults of a Fleet.
const (
	defaultConnectRate  = 10 // new IoT Hub connections per second, all devices together
	defaultConnectBurst = 10
	// devBuffer is how many records a device's session may have routed to
	// it and not yet leased; beyond it, its records are parked.
	devBuffer = 256
)

// Fleet is azure identity "per-device": every leaf with a key of its own
// (Options.DeviceKeys), or every leaf when KeyName makes the key a
// shared access policy key, gets its own connection as its own IoT Hub
// device; the gateway's own records, and leaves without a key, go over the
// gateway's connection with outpost-device as in identity "gateway".
//
// One router leases from the store in queue order and hands each record to
// its device's session, through a small per-device buffer. A device whose
// connection is down (a disabled device, a wrong key) must not hold up the
// others: once its buffer is full its records are parked — they stay leased
// in the store, so the router reads past them, and only their sequence
// numbers are kept in memory — and are released back to the store, to be
// read again in order, when its buffer has room. Each device's records keep
// their queue order on its connection (no live-first inside a Fleet).
//
// New connections are rate limited over the whole fleet (IoT Hub limits
// connects per second per unit), so a gateway with hundreds of leaves does
// not reconnect them all at once after an outage.
type Fleet struct {
	opt  Options
	q    parkingQueue
	log  *slog.Logger
	gate *rate.Limiter // new connections, all identities together

	mu       sync.Mutex
	devs     map[string]*devQueue // by device id; "" is the gateway's own
	sessions map[string]*Session
	stop     context.CancelFunc // ends the router (a session's store failure)
	runCtx   context.Context
	wg       sync.WaitGroup
	serr     error
}

// parkingQueue is the queue a Fleet needs: one that can park records
// (*store.Queue can).
type parkingQueue interface {
	queue
	// Park takes leased records out of the lease order: not handed out
	// again, still evictable and expirable.
	Park(seqs ...uint64) error
	// LeaseParked leases parked records back, in the order given, and
	// returns those still there.
	LeaseParked(seqs ...uint64) ([]*msg.Record, error)
}

// NewFleet validates opt (Identity must be per-device) and returns a Fleet
// forwarding from q.
func NewFleet(opt Options, q queue) (*Fleet, error) {
	gw := opt
	gw.Identity = IdentityGateway // the gateway's own connection (withDefaults also checks the device keys)
	o, err := gw.withDefaults()
	if err != nil {
		return nil, err
	}
	pq, ok := q.(parkingQueue)
	if !ok {
		return nil, fmt.Errorf("%w: identity per-device needs a queue that can park records (the store), got %T", ErrOptions, q)
	}
	if o.Protocol != ProtocolAzure {
		return nil, fmt.Errorf("%w: identity per-device is for protocol azure-iothub", ErrOptions)
	}
	for dev := range opt.DeviceKeys {
		if err := msg.ValidDeviceID(dev); err != nil {
			return nil, fmt.Errorf("%w: azure device key for %q: %v", ErrOptions, dev, err)
		}
	}
	if o.SharedAccessKey == "" && len(o.DeviceKeys) == 0 {
		return nil, fmt.Errorf("%w: identity per-device needs device keys or a policy key (X.509 is one identity)", ErrOptions)
	}
	f := &Fleet{opt: o, q: pq, log: o.Logger.With("part", "cloudlink", "protocol", o.Protocol, "identity", IdentityPerDevice),
		gate: rate.NewLimiter(defaultConnectRate, defaultConnectBurst),
		devs: map[string]*devQueue{}, sessions: map[string]*Session{}}
	if _, err := f.queueFor(""); err != nil { // the gateway's, and a check of the options
		return nil, err
	}
	// Every known leaf with an identity connects from the start, so that
	// C2D reaches it before it has sent anything.
	for _, dev := range append(slices.Sorted(maps.Keys(opt.DeviceKeys)), opt.Leaves...) {
		if id := f.identity(dev); id != "" {
			if _, err := f.queueFor(id); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// identity returns the IoT Hub identity (device id, key, policy name) that
// dev's records go up as; "" is the gateway's own.
func (f *Fleet) identity(dev string) string {
	if dev == f.opt.DeviceID {
		return ""
	}
	if _, ok := f.opt.DeviceKeys[dev]; ok {
		return dev
	}
	if f.opt.SharedAccessKeyName != "" && f.opt.SharedAccessKey != "" && !slices.Contains(f.opt.NotDevices, dev) {
		return dev // the policy key signs for any device
	}
	return ""
}

// queueFor returns the device queue of identity id, creating it and its
// Session (started when the fleet runs). f.mu must not be held.
func (f *Fleet) queueFor(id string) (*devQueue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if dq, ok := f.devs[id]; ok {
		return dq, nil
	}
	o := f.opt
	o.DeviceKeys = nil
	o.connectGate = f.gate.Wait
	if id != "" {
		o.DeviceID, o.ClientID = id, id
		if k, ok := f.opt.DeviceKeys[id]; ok {
			o.SharedAccessKey, o.SharedAccessKeyName = k, ""
		}
		o.TLS.CertFile, o.TLS.KeyFile = "", "" // a leaf signs in with its SAS, not the gateway's certificate
		o.Logger = f.opt.Logger.With("device", id)
		o.twins = f.opt.Twins
	}
	dq := &devQueue{f: f, avail: make(chan struct{}, 1), out: map[uint64]ent{}}
	s, err := New(o, dq)
	if err != nil {
		return nil, err
	}
	if id == "" {
		// The gateway's connection reports the store's gaps.
		s.gaps, _ = f.q.(gapQueue)
	}
	f.devs[id], f.sessions[id] = dq, s
	if f.runCtx != nil {
		f.start(s)
	}
	return dq, nil
}

// start runs s until the fleet stops; f.mu is held.
func (f *Fleet) start(s *Session) {
	ctx := f.runCtx
	f.wg.Go(func() {
		if err := s.Run(ctx); err != nil {
			f.fail(err)
		}
	})
}

func (f *Fleet) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.serr == nil {
		f.serr = err
	}
	if f.stop != nil {
		f.stop()
	}
}

// Run routes records to the devices' sessions until ctx is done (nil) or
// the store fails. Records routed and not yet acknowledged are released.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	f.mu.Lock()
	f.runCtx, f.stop = ctx, stop
	for _, s := range f.sessions {
		f.start(s)
	}
	f.mu.Unlock()
	err := f.route(rctx)
	cancel()
	f.wg.Wait()
	f.releaseAll()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.serr != nil {
		err = f.serr
	}
	return err
}

// route is the router: it leases in queue order and hands records out.
func (f *Fleet) route(ctx context.Context) error {
	const batch = 256
	for {
		recs, err := f.q.Lease(ctx, batch)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return storeErr("lease", err)
		}
		for i, r := range recs {
			dq, err := f.queueFor(f.identity(r.Device))
			if err == nil {
				err = dq.push(r)
			}
			if err != nil {
				seqs := make([]uint64, 0, len(recs)-i)
				for _, r := range recs[i:] {
					seqs = append(seqs, r.Seq)
				}
				_ = f.q.Release(seqs...)
				return storeErr("park", err)
			}
		}
	}
}

// releaseAll gives every record the fleet holds back to the store.
func (f *Fleet) releaseAll() {
	f.mu.Lock()
	dqs := slices.Collect(maps.Values(f.devs))
	f.mu.Unlock()
	var seqs []uint64
	for _, dq := range dqs {
		seqs = append(seqs, dq.takeAll()...)
	}
	// Release takes parked records as well as leased ones.
	if len(seqs) > 0 {
		slices.Sort(seqs)
		// Parked records evicted or expired meanwhile are not there to
		// release (ErrNotLeased); the others are released all the same.
		if err := f.q.Release(seqs...); err != nil && !errors.Is(err, store.ErrNotLeased) {
			f.log.Error("cannot release records; they go again after a restart", "error", err)
		}
	}
}

// Status sums the sessions' counters. Connected, Since and LastError are
// the gateway's own connection (a leaf refused by IoT Hub is not the link
// being down: adapters' link-loss failsafes must not trip for it); Devices
// has each identity's own state.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	ss := maps.Clone(f.sessions)
	f.mu.Unlock()
	st := Status{Protocol: ProtocolAzure, Devices: map[string]DeviceStatus{}}
	for id, s := range ss {
		d := s.Status()
		if id == "" { // the link's own state is the gateway's connection
			st.Connected, st.Since, st.LastError = d.Connected, d.Since, d.LastError
		}
		st.Outages += d.Outages
		st.Forwarded += d.Forwarded
		st.Rejected += d.Rejected
		st.Gaps += d.Gaps
		st.Resent += d.Resent
		st.InFlight += d.InFlight
		st.Held += d.Held
		st.C2D += d.C2D
		st.C2DDuplicates += d.C2DDuplicates
		name := id
		if name == "" {
			name = f.opt.DeviceID
		}
		f.mu.Lock()
		parked := len(f.devs[id].parked)
		f.mu.Unlock()
		st.Devices[name] = DeviceStatus{Connected: d.Connected, Since: d.Since, Outages: d.Outages,
			Forwarded: d.Forwarded, LastError: d.LastError, Parked: parked}
	}
	return st
}

// DeviceStatus is one identity's connection in a Fleet.
type DeviceStatus struct {
	Connected bool
	Since     time.Time
	Outages   int
	Forwarded uint64
	LastError string
	// Parked counts records waiting in the store for this device's
	// connection, beyond what its session holds.
	Parked int
}

// devQueue is the queue one device's session sees: the records the router
// handed it, in routing order.
type devQueue struct {
	f     *Fleet
	avail chan struct{} // cap 1: records were pushed
	// pmu serialises parking and refilling, so that a record parked while
	// the buffer is refilled from the parked ones lands behind them. It is
	// taken before f.mu.
	pmu sync.Mutex

	// all under f.mu
	buf    []ent          // routed, not leased by the session, in routing order
	out    map[uint64]ent // leased by the session
	parked []uint64       // parked in the store, in routing order
	next   uint64         // routing order of the next record into buf
}

// ent is a record with its place in the device's routing order.
type ent struct {
	r   *msg.Record
	idx uint64
}

// push takes r from the router: buffered, or parked in the store when the
// buffer is full or records are parked already (their order must hold).
func (dq *devQueue) push(r *msg.Record) error {
	f := dq.f
	dq.pmu.Lock()
	defer dq.pmu.Unlock()
	f.mu.Lock()
	if len(dq.parked) == 0 && len(dq.buf) < devBuffer {
		dq.buf = append(dq.buf, ent{r, dq.next})
		dq.next++
		f.mu.Unlock()
		select {
		case dq.avail <- struct{}{}:
		default:
		}
		return nil
	}
	f.mu.Unlock()
	if err := f.q.Park(r.Seq); err != nil {
		return err
	}
	f.mu.Lock()
	dq.parked = append(dq.parked, r.Seq)
	f.mu.Unlock()
	select { // a waiting Lease refills
	case dq.avail <- struct{}{}:
	default:
	}
	return nil
}

// refill moves parked records back into the buffer once it is half empty:
// leased back from the store by seq, so nothing else is read again. Parked
// records evicted or expired meanwhile are gone; it goes on through the
// parked list until the buffer has some or the list is empty, so a run of
// gone records can never strand the rest.
func (dq *devQueue) refill() error {
	f := dq.f
	f.mu.Lock()
	need := len(dq.parked) > 0 && len(dq.buf) <= devBuffer/2
	f.mu.Unlock()
	if !need {
		return nil
	}
	dq.pmu.Lock()
	defer dq.pmu.Unlock()
	for {
		f.mu.Lock()
		if len(dq.parked) == 0 || len(dq.buf) > devBuffer/2 {
			f.mu.Unlock()
			return nil
		}
		n := min(len(dq.parked), devBuffer-len(dq.buf))
		seqs := slices.Clone(dq.parked[:n])
		f.mu.Unlock()
		recs, err := f.q.LeaseParked(seqs...)
		if err != nil {
			return err
		}
		f.mu.Lock()
		dq.parked = dq.parked[n:]
		if len(dq.parked) == 0 {
			dq.parked = nil
		}
		for _, r := range recs {
			dq.buf = append(dq.buf, ent{r, dq.next})
			dq.next++
		}
		f.mu.Unlock()
	}
}

func (dq *devQueue) takeAll() []uint64 {
	dq.f.mu.Lock()
	defer dq.f.mu.Unlock()
	seqs := dq.parked
	for _, e := range dq.buf {
		seqs = append(seqs, e.r.Seq)
	}
	for seq := range dq.out {
		seqs = append(seqs, seq)
	}
	dq.parked, dq.buf = nil, nil
	clear(dq.out)
	return seqs
}

// Lease hands the session up to max buffered records, waiting for some.
func (dq *devQueue) Lease(ctx context.Context, max int) ([]*msg.Record, error) {
	f := dq.f
	for {
		if err := dq.refill(); err != nil {
			return nil, err
		}
		f.mu.Lock()
		if n := min(max, len(dq.buf)); n > 0 {
			recs := make([]*msg.Record, n)
			for i, e := range dq.buf[:n] {
				recs[i] = e.r
				dq.out[e.r.Seq] = e
			}
			dq.buf = append(dq.buf[:0], dq.buf[n:]...)
			f.mu.Unlock()
			return recs, nil
		}
		f.mu.Unlock()
		select {
		case <-dq.avail:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Ack removes delivered records from the store.
func (dq *devQueue) Ack(seqs ...uint64) error {
	if err := dq.f.q.Ack(seqs...); err != nil {
		return err
	}
	dq.f.mu.Lock()
	for _, seq := range seqs {
		delete(dq.out, seq)
	}
	dq.f.mu.Unlock()
	return nil
}

// Release puts records the session gave back into the buffer at their
// place in the routing order: they stay with this device (releasing them
// to the store would only have the router read them again).
func (dq *devQueue) Release(seqs ...uint64) error {
	f := dq.f
	f.mu.Lock()
	n := 0
	for _, seq := range seqs {
		if e, ok := dq.out[seq]; ok {
			dq.buf = append(dq.buf, e)
			delete(dq.out, seq)
			n++
		}
	}
	if n > 0 {
		slices.SortFunc(dq.buf, func(a, b ent) int { return cmp.Compare(a.idx, b.idx) })
	}
	f.mu.Unlock()
	if n > 0 {
		select {
		case dq.avail <- struct{}{}:
		default:
		}
	}
	return nil
}

// Reject moves a record to the store's dead letters.
func (dq *devQueue) Reject(seq uint64, reason string) error {
	if err := dq.f.q.Reject(seq, reason); err != nil {
		return err
	}
	dq.f.mu.Lock()
	delete(dq.out, seq)
	dq.f.mu.Unlock()
	return nil
}
