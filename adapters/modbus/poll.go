package modbus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/goburrow/modbus"

	"github.com/outpost-iot/outpost/adapters/modbus/codec"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// pollResult is what one poll of a device read.
type pollResult struct {
	values   map[string]any
	errs     map[string]string
	answered int       // requests that got any reply, even an exception
	firstErr string    // the first error, for Health
	at       time.Time // when the first request finished: the reading's time
}

func (r *pollResult) fail(p *point, err string) {
	r.errs[p.Name] = err
	if r.firstErr == "" {
		r.firstErr = p.Name + ": " + err
	}
}

// isException reports a Modbus exception reply with code (any code if 0).
func isException(err error, code byte) bool {
	var me *modbus.ModbusError
	return errors.As(err, &me) && (code == 0 || me.ExceptionCode == code)
}

// poll reads the due points. It stops at the first request that gets no
// answer at all: the device is likely gone, and each further request would
// hold the bus for another timeout. The points left unread are reported as
// errors.
func (d *Device) poll(ctx context.Context, b *Bus, due []*point) pollResult {
	res := pollResult{values: map[string]any{}, errs: map[string]string{}}
	reqs := d.planFor(due)
	for i, r := range reqs {
		err := d.exec(ctx, b, r, &res)
		if ctx.Err() != nil {
			return res
		}
		if isNoAnswer(err) {
			for _, rest := range reqs[i+1:] {
				for _, p := range rest.points {
					res.fail(p, "not read: device not answering")
				}
			}
			break
		}
	}
	return res
}

// exec performs one read and decodes its points into res. A merged read
// rejected with exception 02 is split in two at a point boundary, the cut
// remembered for later plans, and both halves read.
func (d *Device) exec(ctx context.Context, b *Bus, r request, res *pollResult) error {
	var w []uint16
	err := b.Do(ctx, d.cfg.unit, d.cfg.timeout, d.cfg.turnaround, func(c modbus.Client) error {
		t0 := time.Now()
		var err error
		w, err = read(c, r.table, r.start, r.count)
		d.count(err, time.Since(t0))
		return err
	})
	if res.at.IsZero() {
		res.at = time.Now()
	}
	if err == nil {
		res.answered++
		for _, p := range r.points {
			v, derr := p.Decode(w[int(p.addr)-int(r.start):])
			if derr != nil {
				res.fail(p, derr.Error())
				continue
			}
			res.values[p.Name] = v
		}
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	if !isNoAnswer(err) {
		res.answered++
	}
	if isException(err, modbus.ExceptionCodeIllegalDataAddress) && len(r.points) > 1 {
		if lo, hi, cut, ok := split(r); ok {
			d.addCut(r.table, cut)
			d.log.Info("modbus: device rejected a merged read; splitting it",
				"table", r.table.String(), "start", r.start, "count", r.count, "cut", cut)
			res.answered-- // the halves count for themselves
			if err := d.exec(ctx, b, lo, res); isNoAnswer(err) {
				for _, p := range hi.points {
					res.fail(p, "not read: device not answering")
				}
				return err
			}
			return d.exec(ctx, b, hi, res)
		}
	}
	msg := fmt.Sprintf("read %s %d+%d: %v", r.table, r.start, r.count, err)
	for _, p := range r.points {
		res.fail(p, msg)
	}
	return err
}

func (d *Device) addCut(t table, addr int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cuts.add(t, addr)
	clear(d.plans)
}

// planFor returns the requests for a set of points, cached per set.
func (d *Device) planFor(points []*point) []request {
	var k strings.Builder
	for _, p := range points {
		k.WriteString(p.Name)
		k.WriteByte(0)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.plans[k.String()]; ok {
		return r
	}
	r := plan(points, d.cfg.maxGap, &d.cuts)
	d.plans[k.String()] = r
	return r
}

// reporter applies deadband and heartbeat: it remembers what was last
// reported (emitted and acknowledged) per point.
type reporter struct {
	points map[string]*point
	last   map[string]reported
}

type reported struct {
	v  any
	at time.Time
}

func newReporter(points []*point) *reporter {
	r := &reporter{points: map[string]*point{}, last: map[string]reported{}}
	for _, p := range points {
		r.points[p.Name] = p
	}
	return r
}

// reading builds the poll's reading. commit records its values as
// reported; call it once the reading was emitted.
func (r *reporter) reading(device string, now time.Time, res pollResult) (msg.Reading, func()) {
	out := msg.Reading{Device: device, Time: now, Values: map[string]any{}}
	for name, v := range res.values {
		if p := r.points[name]; !p.filtered() || r.changed(p, v, now) {
			out.Values[name] = v
		}
	}
	if len(res.errs) > 0 {
		out.Errors = res.errs
	}
	return out, func() {
		for name, v := range out.Values {
			r.last[name] = reported{v, now}
		}
	}
}

func (r *reporter) changed(p *point, v any, now time.Time) bool {
	prev, ok := r.last[p.Name]
	if !ok || p.heartbeat > 0 && now.Sub(prev.at) >= p.heartbeat {
		return true
	}
	a, errA := codec.Number(v)
	b, errB := codec.Number(prev.v)
	if errA != nil || errB != nil || p.deadband == 0 {
		return v != prev.v
	}
	return math.Abs(a-b) > p.deadband
}
