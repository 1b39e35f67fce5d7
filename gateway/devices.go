package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// device is one running adapter device.
type device struct {
	cfg config.Device
	src adapters.Source // also an adapters.Sink if it takes commands
	log *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}

	started  time.Time
	readings atomic.Uint64
	mu       sync.Mutex
	last     msg.Reading
	lastErr  string // why the last Emit or Run failed
}

// DeviceStatus is one device as /api/status shows it.
type DeviceStatus struct {
	ID       string            `json:"id"`
	Kind     string            `json:"kind"`
	Priority string            `json:"priority"`
	Health   adapters.Health   `json:"health"`
	Detail   string            `json:"detail,omitempty"`
	Started  time.Time         `json:"started"`
	Readings uint64            `json:"readings"`
	LastSeen *time.Time        `json:"last_seen,omitempty"`
	Values   map[string]any    `json:"values,omitempty"`
	Errors   map[string]string `json:"errors,omitempty"`
}

func (d *device) status() DeviceStatus {
	s := DeviceStatus{ID: d.cfg.ID, Kind: d.cfg.Kind, Priority: d.cfg.Priority.String(), Health: adapters.Up, Started: d.started, Readings: d.readings.Load()}
	if h, ok := d.src.(adapters.HealthReporter); ok {
		s.Health, s.Detail = h.Health()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.last.Time.IsZero() {
		t := d.last.Time
		s.LastSeen, s.Values, s.Errors = &t, d.last.Values, d.last.Errors
	}
	if s.Detail == "" {
		s.Detail = d.lastErr
	}
	return s
}

// startDevice builds one adapter device and runs it until ctx is done or the
// device is stopped. An adapter whose Run fails is restarted with back-off:
// a field device must never need a human.
func (g *Gateway) startDevice(ctx context.Context, dc config.Device) (*device, error) {
	kind, ok := adapters.Lookup(dc.Kind)
	if !ok {
		return nil, fmt.Errorf("gateway: device %s: unknown adapter kind %q", dc.ID, dc.Kind)
	}
	log := g.log.With("device", dc.ID, "kind", dc.Kind)
	src, err := kind.New(dc.ID, dc.Adapter, log)
	if err != nil {
		return nil, fmt.Errorf("gateway: device %s: %w", dc.ID, err)
	}
	d := &device{cfg: dc, src: src, log: log, done: make(chan struct{}), started: time.Now()}
	ctx, d.cancel = context.WithCancel(ctx)
	em := &emitter{g: g, dev: d}
	go func() {
		defer close(d.done)
		if c, ok := src.(io.Closer); ok {
			defer c.Close()
		}
		backoff := time.Second
		for {
			err := src.Run(ctx, em)
			if ctx.Err() != nil {
				return
			}
			d.mu.Lock()
			d.lastErr = fmt.Sprintf("adapter stopped: %v", err)
			d.mu.Unlock()
			log.Error("adapter stopped; restarting", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Minute)
		}
	}()
	return d, nil
}

// stop cancels the device and waits for its adapter to return.
func (d *device) stop() {
	d.cancel()
	<-d.done
}

// devices returns the running devices sorted by id.
func (g *Gateway) deviceList() []*device {
	g.mu.Lock()
	defer g.mu.Unlock()
	ds := make([]*device, 0, len(g.devices))
	for _, d := range g.devices {
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].cfg.ID < ds[j].cfg.ID })
	return ds
}

func (g *Gateway) device(id string) *device {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.devices[id]
}

// emitter is the adapters' way into the outbox: a reading is acknowledged
// (Emit returns nil) only once it is durable; then local observers see it.
type emitter struct {
	g   *Gateway
	dev *device
}

func (e *emitter) Emit(ctx context.Context, rs ...msg.Reading) error {
	recs := make([]*msg.Record, len(rs))
	for i, r := range rs {
		recs[i] = r.Record(e.dev.cfg.Priority)
	}
	e.g.produced.Add(uint64(len(recs)))
	if err := e.g.ingest(ctx, recs...); err != nil {
		e.dev.mu.Lock()
		e.dev.lastErr = err.Error()
		e.dev.mu.Unlock()
		return fmt.Errorf("gateway: ingest %s: %w", e.dev.cfg.ID, err)
	}
	e.g.stored.Add(uint64(len(recs)))
	e.dev.readings.Add(uint64(len(rs)))
	e.dev.mu.Lock()
	e.dev.last, e.dev.lastErr = rs[len(rs)-1], ""
	e.dev.mu.Unlock()
	if e.g.dtwins != nil {
		e.g.dtwins.observe(e.dev.cfg.ID, rs)
	}
	if h := e.g.hub(); h != nil {
		for _, r := range recs {
			_ = h.Publish(r) // observers only; the record is already safe
		}
	}
	return nil
}

// watchLink tells adapters.LinkObserver devices when the cloud link goes up or
// down, checking once a second, and tells every newly started one at once.
func (g *Gateway) watchLink(ctx context.Context) {
	type seen struct {
		up    bool
		since time.Time
	}
	told := map[*device]seen{}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		st := g.link.Status()
		now := seen{st.Connected, st.Since}
		next := map[*device]seen{} // only devices still running
		for _, d := range g.deviceList() {
			lo, ok := d.src.(adapters.LinkObserver)
			if !ok {
				continue
			}
			prev, ok := told[d]
			if !ok || prev.up != now.up {
				lo.SetLinkState(now.up, now.since)
				prev = now
			}
			next[d] = prev
		}
		told = next
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
