package gpio

import (
	"context"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// watch reports one input's edges until ctx is done. The driver delivers
// only the configured edge direction (the kernel filters it), so:
//
//   - edge both: after each edge (and its debounce window) the level is
//     read, and a reading is sent when it differs from the last one sent;
//     a bounce that settles back to the old level sends nothing.
//   - edge rising or falling: each edge is an event (a button press) and
//     sends the level the edge leads to, even if the pin has already gone
//     back by the time the window ends.
//   - counter: each edge counts one pulse; nothing is sent per pulse.
//
// Edges within Debounce of the first one are bounces and are swallowed.
func (d *Device) watch(ctx context.Context, p *point) {
	last := p.value(p.pin.Read())
	for ctx.Err() == nil {
		if !p.pin.WaitForEdge(edgePoll) {
			continue
		}
		at := time.Now()
		if w := p.cfg.Debounce; w > 0 {
			end := at.Add(w)
			for rem := w; rem > 0 && ctx.Err() == nil; rem = time.Until(end) {
				p.pin.WaitForEdge(rem)
			}
		}
		if p.cfg.Counter {
			p.count.Add(1)
			continue
		}
		var v bool
		switch p.edge {
		case gpio.RisingEdge:
			v = p.value(gpio.High)
		case gpio.FallingEdge:
			v = p.value(gpio.Low)
		default:
			if v = p.value(p.pin.Read()); v == last {
				continue
			}
		}
		last = v
		select {
		case d.changes <- change{at: at, values: map[string]any{p.cfg.Name: v}}:
		case <-ctx.Done():
			return
		}
	}
}
