package gateway

import (
	"github.com/outpost-iot/outpost/cloudlink"
	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/twins"
	"github.com/outpost-iot/outpost/store"
)

// newTwins makes the twins of the hub's leaves, kept in q and reaching
// the leaves through whichever hub is running, and of the adapter
// devices, which g.dtwins answers for.
func (g *Gateway) newTwins(q *store.Queue) (*twins.Manager, error) {
	return twins.New(twins.Options{
		Store: q,
		Known: func(id string) bool { return g.twinDevice(id) || g.dtwins.Has(id) },
		Local: g.dtwins,
		Send: func(device, topic string, payload []byte) error {
			h := g.hub()
			if h == nil {
				return hub.ErrClosed
			}
			return h.SendLeaf(device, topic, payload)
		},
		Subscribed: func(device, filter string) bool {
			h := g.hub()
			return h != nil && h.Subscribed(device, filter)
		},
		Cloud:  twinCloud{g},
		Logger: g.log.With("part", "twins"),
	})
}

// twinCloud tells the cloud link, once it runs, of reported patches to
// sync; the link also takes them on every connect.
type twinCloud struct{ g *Gateway }

func (c twinCloud) ReportedPending(device string) {
	if f := c.g.twinCloud.Load(); f != nil {
		f.ReportedPending(device)
	}
}

var _ cloudlink.Twins = (*twins.Manager)(nil)

// twinDevice reports whether id is a hub client that is a device (not an
// observer or an operator): those have twins.
func (g *Gateway) twinDevice(id string) bool {
	for _, c := range g.cfg.Hub.Clients {
		if c.ID == id {
			return c.IsDevice()
		}
	}
	return false
}

// twinStatus is the twins of the hub's devices and of the adapter devices
// for the status page.
func (g *Gateway) twinStatus() []twins.Status {
	if g.twins == nil {
		return nil
	}
	var ids []string
	for _, c := range g.cfg.Hub.Clients {
		if c.IsDevice() {
			ids = append(ids, c.ID)
		}
	}
	for _, d := range g.cfg.Devices {
		ids = append(ids, d.ID)
	}
	return g.twins.Statuses(ids)
}
