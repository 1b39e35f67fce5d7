package cloudlink

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Link is an upstream link the gateway runs: a Session, or a Fleet when
// each leaf has its own IoT Hub identity.
type Link interface {
	Run(ctx context.Context) error
	Status() Status
}

// Open returns the link opt asks for: a Fleet for azure identity
// "per-device", else a Session.
func Open(opt Options, q queue) (Link, error) {
	if opt.Protocol == ProtocolAzure && opt.Azure.Identity == IdentityDevice {
		return NewFleet(opt, q)
	}
	return New(opt, q)
}

// Defaults of a Fleet.
const (
	defaultConnectRate  = 10 // new IoT Hub connections per second, all devices together
	defaultConnectBurst = 10
	// devBuffer is how many records a device's session may have routed to
	// it and not yet leased; beyond it, its records are parked.
	devBuffer = 256
)

// Fleet is azure identity "per-device": every leaf with a key of its own
// (AzureOptions.DeviceKeys), or every leaf when KeyName makes the key a
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
	q    queue
	log  *slog.Logger
	gate *rate.Limiter // new connections, all identities together

	mu       sync.Mutex
	devs     map[string]*devQueue // by device id; "" is the gateway's own
	sessions map[string]*Session
	unpark   map[*devQueue]bool // asked to release their parked records
	poke     context.CancelFunc // cancels the router's current Lease wait
	runCtx   context.Context
	wg       sync.WaitGroup
	serr     error
}

// NewFleet validates opt (Identity must be per-device) and returns a Fleet
// forwarding from q.
func NewFleet(opt Options, q queue) (*Fleet, error) {
	gw := opt
	gw.Azure.Identity = IdentityGW // the gateway's own connection
	gw.Azure.DeviceKeys = nil
	o, err := gw.withDefaults()
	if err != nil {
		return nil, err
	}
	if q == nil {
		return nil, fmt.Errorf("%w: nil queue", ErrOptions)
	}
	if o.Protocol != ProtocolAzure {
		return nil, fmt.Errorf("%w: identity per-device is for protocol azure-iothub", ErrOptions)
	}
	for dev, k := range opt.Azure.DeviceKeys {
		if err := msg.ValidDeviceID(dev); err != nil {
			return nil, fmt.Errorf("%w: azure device key for %q: %v", ErrOptions, dev, err)
		}
		if _, err := decodeKey(k); err != nil {
			return nil, fmt.Errorf("%w: azure key of device %q: %v", ErrOptions, dev, err)
		}
	}
	if opt.Azure.SharedAccessKey == "" && len(opt.Azure.DeviceKeys) == 0 {
		return nil, fmt.Errorf("%w: identity per-device needs device keys or a policy key (X.509 is one identity)", ErrOptions)
	}
	o.Azure.DeviceKeys = opt.Azure.DeviceKeys
	f := &Fleet{opt: o, q: q, log: o.Logger.With("part", "cloudlink", "protocol", o.Protocol, "identity", IdentityDevice),
		gate: rate.NewLimiter(defaultConnectRate, defaultConnectBurst),
		devs: map[string]*devQueue{}, sessions: map[string]*Session{}, unpark: map[*devQueue]bool{}}
	if _, err := f.session(""); err != nil { // the gateway's, and a check of the options
		return nil, err
	}
	// Every known leaf with an identity connects from the start, so that
	// C2D reaches it before it has sent anything.
	for _, dev := range append(slices.Sorted(maps.Keys(opt.Azure.DeviceKeys)), opt.Azure.Leaves...) {
		if id := f.identity(dev); id != "" {
			if _, err := f.session(id); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// identity returns the IoT Hub identity (device id, key, policy name) that
// dev's records go up as; "" is the gateway's own.
func (f *Fleet) identity(dev string) string {
	if dev == f.opt.Azure.DeviceID {
		return ""
	}
	if _, ok := f.opt.Azure.DeviceKeys[dev]; ok {
		return dev
	}
	if f.opt.Azure.KeyName != "" && f.opt.Azure.SharedAccessKey != "" {
		return dev // the policy key signs for any device
	}
	return ""
}

// session returns (creating it) the session for identity id, and starts it
// when the fleet runs. f.mu must not be held.
func (f *Fleet) session(id string) (*devQueue, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if dq, ok := f.devs[id]; ok {
		return dq, nil
	}
	o := f.opt
	o.Azure.DeviceKeys = nil
	o.connectGate = f.gate.Wait
	if id != "" {
		o.Azure.DeviceID, o.ClientID = id, id
		if k, ok := f.opt.Azure.DeviceKeys[id]; ok {
			o.Azure.SharedAccessKey, o.Azure.KeyName = k, ""
		}
		o.CertFile, o.KeyFile = "", "" // a leaf signs in with its SAS, not the gateway's certificate
		o.Logger = f.opt.Logger.With("device", id)
	}
	dq := &devQueue{f: f, id: id, avail: make(chan struct{}, 1), out: map[uint64]*msg.Record{}}
	s, err := New(o, dq)
	if err != nil {
		return nil, err
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
	if f.poke != nil {
		f.poke()
	}
}

// Run routes records to the devices' sessions until ctx is done (nil) or
// the store fails. Records routed and not yet acknowledged are released.
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	f.mu.Lock()
	f.runCtx = ctx
	for _, s := range f.sessions {
		f.start(s)
	}
	f.mu.Unlock()
	err := f.route(ctx)
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
		f.mu.Lock()
		if f.serr != nil {
			f.mu.Unlock()
			return nil
		}
		ask := slices.Collect(maps.Keys(f.unpark))
		clear(f.unpark)
		wctx, cancel := context.WithCancel(ctx)
		f.poke = cancel
		f.mu.Unlock()
		for _, dq := range ask {
			if seqs := dq.takeParked(); len(seqs) > 0 {
				if err := f.q.Release(seqs...); err != nil {
					cancel()
					return storeErr("release", err)
				}
			}
		}
		recs, err := f.q.Lease(wctx, batch)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if wctx.Err() != nil {
				continue // poked: someone wants its records back
			}
			return storeErr("lease", err)
		}
		for _, r := range recs {
			dq, err := f.session(f.identity(r.Device))
			if err != nil { // cannot happen: the gateway's options passed
				return err
			}
			dq.push(r)
		}
	}
}

// wantUnpark asks the router to release dq's parked records.
func (f *Fleet) wantUnpark(dq *devQueue) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unpark[dq] = true
	if f.poke != nil {
		f.poke()
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
	if len(seqs) > 0 {
		slices.Sort(seqs)
		if err := f.q.Release(seqs...); err != nil {
			f.log.Error("cannot release records; they go again after a restart", "error", err)
		}
	}
}

// Status sums the sessions' figures; Connected is true only when every
// connection is up, and Devices has each identity's own state.
func (f *Fleet) Status() Status {
	f.mu.Lock()
	ss := maps.Clone(f.sessions)
	f.mu.Unlock()
	st := Status{Protocol: ProtocolAzure, Connected: true, Devices: map[string]DeviceStatus{}}
	var lastErrAt time.Time
	for id, s := range ss {
		d := s.Status()
		st.Connected = st.Connected && d.Connected
		if st.Since.IsZero() || d.Since.After(st.Since) {
			st.Since = d.Since
		}
		st.Outages += d.Outages
		st.Forwarded += d.Forwarded
		st.Rejected += d.Rejected
		st.Resent += d.Resent
		st.InFlight += d.InFlight
		st.Held += d.Held
		st.C2D += d.C2D
		st.C2DDuplicates += d.C2DDuplicates
		if d.LastError != "" && !d.Connected && d.Since.After(lastErrAt) {
			st.LastError, lastErrAt = d.LastError, d.Since
		}
		name := id
		if name == "" {
			name = f.opt.Azure.DeviceID
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
// handed it, in queue order.
type devQueue struct {
	f     *Fleet
	id    string
	avail chan struct{} // cap 1: records were pushed

	// all under f.mu
	buf    []*msg.Record          // routed, not leased by the session
	out    map[uint64]*msg.Record // leased by the session
	parked []uint64               // leased from the store, not in memory
}

// push takes r from the router: buffered, or parked when the buffer is
// full or records are parked already (their order must hold).
func (dq *devQueue) push(r *msg.Record) {
	f := dq.f
	f.mu.Lock()
	if len(dq.parked) > 0 || len(dq.buf) >= devBuffer {
		dq.parked = append(dq.parked, r.Seq)
		f.mu.Unlock()
		return
	}
	dq.buf = append(dq.buf, r)
	f.mu.Unlock()
	select {
	case dq.avail <- struct{}{}:
	default:
	}
}

func (dq *devQueue) takeParked() []uint64 {
	dq.f.mu.Lock()
	defer dq.f.mu.Unlock()
	seqs := dq.parked
	dq.parked = nil
	return seqs
}

func (dq *devQueue) takeAll() []uint64 {
	dq.f.mu.Lock()
	defer dq.f.mu.Unlock()
	seqs := dq.parked
	for _, r := range dq.buf {
		seqs = append(seqs, r.Seq)
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
		f.mu.Lock()
		if n := min(max, len(dq.buf)); n > 0 {
			recs := slices.Clone(dq.buf[:n])
			dq.buf = append(dq.buf[:0], dq.buf[n:]...)
			for _, r := range recs {
				dq.out[r.Seq] = r
			}
			refill := len(dq.parked) > 0 && len(dq.buf) <= devBuffer/2
			f.mu.Unlock()
			if refill {
				f.wantUnpark(dq)
			}
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

// Release puts records the session gave back at the front of the buffer,
// in order: they stay with this device (releasing them to the store would
// only have the router read them again).
func (dq *devQueue) Release(seqs ...uint64) error {
	f := dq.f
	f.mu.Lock()
	back := make([]*msg.Record, 0, len(seqs))
	for _, seq := range seqs {
		if r, ok := dq.out[seq]; ok {
			back = append(back, r)
			delete(dq.out, seq)
		}
	}
	sort.Slice(back, func(i, j int) bool { return back[i].Seq < back[j].Seq })
	dq.buf = append(back, dq.buf...)
	f.mu.Unlock()
	if len(back) > 0 {
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
