package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/commands"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/gateway/ui"
	"github.com/outpost-iot/outpost/store"
)

// Status is a snapshot of what the gateway is doing, as served on
// /api/status and printed by `outpost status`.
type Status struct {
	ID       string            `json:"id"`
	Healthy  bool              `json:"healthy"`
	Problems []string          `json:"problems,omitempty"`
	Hub      string            `json:"hub"`
	Produced uint64            `json:"produced"`
	Stored   uint64            `json:"stored"`
	Queue    store.Stats       `json:"queue"`
	Link     *cloudlink.Status `json:"link,omitempty"`
	Devices  []DeviceStatus    `json:"devices"`
	Commands []commands.Status `json:"commands"`
	// Twins are the versions of the device twins of the leaves and the
	// adapter devices.
	Twins []twins.Status `json:"twins,omitempty"`
}

// Status returns the current snapshot. It is safe to call at any time after
// Ready is closed.
func (g *Gateway) Status() Status {
	s := Status{ID: g.cfg.Gateway.ID, Produced: g.produced.Load(), Stored: g.stored.Load()}
	s.Hub = g.HubAddr()
	if g.queue != nil {
		s.Queue = g.queue.Stats()
	}
	if g.link != nil {
		ls := g.link.Status()
		s.Link = &ls
	}
	for _, d := range g.deviceList() {
		s.Devices = append(s.Devices, d.status())
	}
	if g.ledger != nil {
		s.Commands = g.ledger.Recent(0)
	}
	s.Twins = g.twinStatus()
	s.Problems = g.problems()
	s.Healthy = len(s.Problems) == 0
	return s
}

// problems lists why the gateway is not healthy: a part that failed, a
// store that had to be quarantined, a hub that is not listening, ingest or
// forwarding stalled for gateway.stall_timeout.
func (g *Gateway) problems() []string {
	var ps []string
	select {
	case <-g.ready:
	default:
		ps = append(ps, "starting")
	}
	if g.queue != nil {
		if dir := g.queue.Quarantined(); dir != "" {
			ps = append(ps, "store: corrupt store quarantined to "+dir)
		}
		if err := g.queue.Failed(); err != nil {
			ps = append(ps, "store: a write or sync failed; nothing is acknowledged until a restart reopens the store: "+err.Error())
		} else if d := g.queue.Damaged(); d != "" { // not Stats(): that reads the store
			ps = append(ps, "store: damaged blocks found after open: "+d)
		}
		if err := g.queue.DiskLow(); err != nil {
			ps = append(ps, "store: refusing new messages: "+err.Error())
		}
	}
	g.mu.Lock()
	for part, err := range g.failed {
		ps = append(ps, fmt.Sprintf("%s: %v", part, err))
	}
	g.mu.Unlock()
	return append(ps, g.progress.stalls()...)
}

// routes is the HTTP API, every route behind httpGuard.
func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if ps := g.problems(); len(ps) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(ps, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(ui.Index)
	})
	mux.Handle("GET /metrics", g.metricsHandler())
	g.ledger.Register(mux)
	if g.twins != nil {
		g.twins.Register(mux)
	}
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	return httpGuard(mux, g.httpToken, g.cfg.HTTP.Listen)
}

// Alive reports whether the gateway's own machinery works, for the systemd
// watchdog: no part has failed, the hub accepts connections, and neither
// ingest nor forwarding has stood still for gateway.stall_timeout while it
// had work (see progress): a restart is what unsticks those. Unlike
// /healthz it ignores conditions a restart cannot fix and would only hide:
// an unreachable cloud (the queue holds the data) and a store quarantined
// at open (the fresh store works; the quarantine is reported until a human
// looks). A store whose write or sync failed is not alive: it acknowledges
// nothing more, and the restart the watchdog makes reopens it from what is
// really on disk.
func (g *Gateway) Alive() error {
	g.mu.Lock()
	var errs []error
	for part, err := range g.failed {
		errs = append(errs, fmt.Errorf("%s: %w", part, err))
	}
	g.mu.Unlock()
	for _, s := range g.progress.stalls() {
		errs = append(errs, errors.New(s))
	}
	if g.queue != nil {
		if err := g.queue.Failed(); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
	}
	if addr := g.HubAddr(); addr != "" {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("hub does not accept connections: %w", err))
		} else {
			c.Close()
		}
	}
	return errors.Join(errs...)
}
