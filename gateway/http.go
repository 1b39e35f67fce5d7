package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/outpost-iot/outpost/cloudlink"
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
}

// Status returns the current snapshot. It is safe to call at any time after
// Ready is closed.
func (g *Gateway) Status() Status {
	s := Status{ID: g.cfg.Gateway.ID, Produced: g.produced.Load(), Stored: g.stored.Load()}
	if g.hub != nil {
		s.Hub = g.hub.Addr()
	}
	if g.queue != nil {
		s.Queue = g.queue.Stats()
	}
	if g.link != nil {
		ls := g.link.Status()
		s.Link = &ls
	}
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
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	return mux
}
