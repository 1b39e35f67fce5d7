package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/msg"
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
	Commands []CommandStatus   `json:"commands"`
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
	s.Commands = g.recentCommands()
	s.Problems = g.problems()
	s.Healthy = len(s.Problems) == 0
	return s
}

// problems lists why the gateway is not healthy: a part that failed, a
// store that had to be quarantined, a hub that is not listening.
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
		if d := g.queue.Damaged(); d != "" { // not Stats(): that reads the store
			ps = append(ps, "store: damaged blocks found after open: "+d)
		}
	}
	g.mu.Lock()
	for part, err := range g.failed {
		ps = append(ps, fmt.Sprintf("%s: %v", part, err))
	}
	g.mu.Unlock()
	return ps
}

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
	mux.HandleFunc("POST /api/devices/{id}/commands", g.postCommand)
	mux.HandleFunc("GET /api/commands/{id}", g.getCommand)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	return mux
}

// postCommand is POST /api/devices/{id}/commands: the body is a command
// (`{"write":{...}}`, `{"send":"..."}`, `{"pulse":{...}}`, or any payload for
// an MQTT leaf); optional query parameters id (default: generated) and ttl
// (a duration, default commands.ttl). It answers 202 with the command's id
// once the command is durably accepted, 200 for a duplicate id.
func (g *Gateway) postCommand(w http.ResponseWriter, r *http.Request) {
	device := r.PathValue("id")
	if g.device(device) == nil && !g.isLeaf(device) {
		http.Error(w, fmt.Sprintf("no device %q on this gateway", device), http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
	if err != nil || len(body) > 64<<10 {
		http.Error(w, "body missing or larger than 64 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	var props msg.Props
	if id := r.URL.Query().Get("id"); id != "" {
		props = append(props, msg.Prop{Key: msg.PropMessageID, Value: id})
	}
	if ttl := r.URL.Query().Get("ttl"); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 {
			http.Error(w, "ttl: want a positive duration such as 30s", http.StatusBadRequest)
			return
		}
		props = append(props, msg.Prop{Key: msg.PropExpiry, Value: time.Now().Add(d).UTC().Format(time.RFC3339Nano)})
	}
	c, dup, err := g.ledger.accept(r.Context(), device, props, body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if dup {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusAccepted)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"id": c.ID, "device": device, "duplicate": dup})
}

// getCommand is GET /api/commands/{id}: the command's state and result.
func (g *Gateway) getCommand(w http.ResponseWriter, r *http.Request) {
	c, err := g.queue.Command(r.PathValue("id"))
	if errors.Is(err, store.ErrNoCommand) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := map[string]any{"id": c.ID, "device": c.Device, "state": c.State, "received": c.Received, "deadline": c.Deadline}
	if c.State.Final() && json.Valid([]byte(c.Detail)) {
		out["result"] = json.RawMessage(c.Detail)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// Alive reports whether the gateway's own machinery works, for the systemd
// watchdog: no part has failed and the hub accepts connections. Unlike
// /healthz it ignores conditions a restart cannot fix and would only hide:
// an unreachable cloud (the queue holds the data) and a store quarantined
// at open (the fresh store works; the quarantine is reported until a human
// looks).
func (g *Gateway) Alive() error {
	g.mu.Lock()
	var errs []error
	for part, err := range g.failed {
		errs = append(errs, fmt.Errorf("%s: %w", part, err))
	}
	g.mu.Unlock()
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
