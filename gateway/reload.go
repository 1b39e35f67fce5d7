package gateway

import (
	"errors"
	"reflect"
	"slices"

	"github.com/outpost-iot/outpost/gateway/config"
)

// ReloadResult says what a Reload changed.
type ReloadResult struct {
	Started, Restarted, Stopped, Unchanged []string // device ids
	// NeedRestart names config sections that changed but only take effect
	// after a restart of the daemon (gateway, hub, http, store, cloud, commands).
	NeedRestart []string
}

// Reload applies a new, already validated config while the gateway runs:
// adapter devices whose config changed are restarted, new ones started,
// removed ones stopped, and the others keep running untouched. The store
// and every queued message are never touched. Changes to other sections
// are reported in NeedRestart and not applied.
func (g *Gateway) Reload(cfg *config.Config) (ReloadResult, error) {
	var res ReloadResult
	g.mu.Lock()
	ctx := g.runCtx
	g.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return res, errors.New("gateway: reload: not running")
	}
	old := g.cfg
	for _, s := range []struct {
		name     string
		old, new any
	}{
		{"gateway", old.Gateway, cfg.Gateway}, {"hub", old.Hub, cfg.Hub}, {"http", old.HTTP, cfg.HTTP},
		{"store", old.Store, cfg.Store}, {"cloud", old.Cloud, cfg.Cloud}, {"commands", old.Commands, cfg.Commands},
	} {
		if !reflect.DeepEqual(s.old, s.new) {
			res.NeedRestart = append(res.NeedRestart, s.name)
		}
	}

	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	want := map[string]config.Device{}
	for _, dc := range cfg.Devices {
		want[dc.ID] = dc
	}
	for _, d := range g.deviceList() {
		if _, keep := want[d.cfg.ID]; !keep {
			d.stop()
			g.mu.Lock()
			delete(g.devices, d.cfg.ID)
			g.mu.Unlock()
			res.Stopped = append(res.Stopped, d.cfg.ID)
		}
	}
	var errs []error
	for _, dc := range cfg.Devices {
		cur := g.device(dc.ID)
		if cur != nil && cur.cfg.Equal(dc) {
			res.Unchanged = append(res.Unchanged, dc.ID)
			continue
		}
		if cur != nil {
			cur.stop()
		}
		d, err := g.startDevice(ctx, dc)
		if err != nil {
			// The old adapter is already stopped; the device is now absent
			// and the error says why.
			g.mu.Lock()
			delete(g.devices, dc.ID)
			g.mu.Unlock()
			errs = append(errs, err)
			continue
		}
		g.mu.Lock()
		g.devices[dc.ID] = d
		g.mu.Unlock()
		if cur != nil {
			res.Restarted = append(res.Restarted, dc.ID)
		} else {
			res.Started = append(res.Started, dc.ID)
		}
	}
	for _, l := range [][]string{res.Started, res.Restarted, res.Stopped, res.Unchanged} {
		slices.Sort(l)
	}
	g.log.Info("config reloaded", "started", res.Started, "restarted", res.Restarted,
		"stopped", res.Stopped, "unchanged", len(res.Unchanged), "need_restart", res.NeedRestart)
	return res, errors.Join(errs...)
}
