package modbus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/goburrow/modbus"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/adapters/modbus/codec"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// Apply performs a write command ({"write":{"setpoint":21.5,"pump":true}}):
// every value is checked first, and if any point is unknown, not writable
// or cannot take its value, the whole command is rejected (an error
// wrapping adapters.ErrRejected) without a single frame on the bus. Then
// each point is written, in name order, with FC 5 (a coil), FC 6 (one
// register, or a bit of one after reading it) or FC 16 (several
// registers), and read back; Result.Values holds the values read back.
//
// An exception reply to the first write is a rejection too (the device
// refused; nothing was actuated). Any other failure returns a failed
// Result and an error that may be retried: the writes are idempotent.
// Apply may run while Run polls; it shares the bus and blocks until done,
// ctx is done, or cmd.Deadline passes.
func (d *Device) Apply(ctx context.Context, cmd msg.Command) (msg.Result, error) {
	reject := func(err error) (msg.Result, error) {
		return msg.Result{Status: msg.StatusRejected, Error: err.Error()},
			fmt.Errorf("modbus %s: %w: %w", d.id, adapters.ErrRejected, err)
	}
	if cmd.Write == nil {
		return reject(errors.New(`a modbus device takes "write" commands only`))
	}
	if len(cmd.Write) == 0 {
		return reject(errors.New("empty write"))
	}
	type op struct {
		p     *point
		words []uint16 // registers to write, for non-bool register points
		on    bool     // for bool points
	}
	var ops []op
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(cmd.Write)) {
		v := cmd.Write[name]
		i := slices.IndexFunc(d.cfg.points, func(p *point) bool { return p.Name == name })
		if i < 0 {
			errs = append(errs, fmt.Errorf("unknown point %q", name))
			continue
		}
		p := d.cfg.points[i]
		if !p.writable {
			errs = append(errs, fmt.Errorf("point %q is not writable", name))
			continue
		}
		o := op{p: p}
		var err error
		if p.Type == codec.Bool {
			o.on, err = codec.BoolValue(v)
			if err != nil {
				err = fmt.Errorf("%w: %s: %v", codec.ErrBadValue, name, err)
			}
		} else {
			o.words, err = p.Encode(v)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ops = append(ops, o)
	}
	if len(errs) > 0 {
		return reject(errors.Join(errs...))
	}
	if !cmd.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, cmd.Deadline)
		defer cancel()
	}
	b, err := acquire(d.cfg.bus, d.log)
	if err != nil {
		return msg.Result{Status: msg.StatusFailed, Error: err.Error()}, fmt.Errorf("modbus %s: %w", d.id, err)
	}
	defer b.Release()

	res := msg.Result{Status: msg.StatusDone, Values: map[string]any{}}
	for i, o := range ops {
		var readback any
		err := b.Do(ctx, d.cfg.unit, d.cfg.timeout, d.cfg.turnaround, func(c modbus.Client) error {
			if err := d.write(c, o.p, o.words, o.on); err != nil {
				return fmt.Errorf("write %s: %w", o.p.Name, err)
			}
			w, err := d.timed(func() ([]uint16, error) { return read(c, o.p.table, o.p.addr, o.p.Words) })
			if err != nil {
				return fmt.Errorf("%w %s: %w", errReadBack, o.p.Name, err)
			}
			readback, err = o.p.Decode(w)
			return err
		})
		if err != nil {
			if i == 0 && isException(err, 0) && !errors.Is(err, errReadBack) {
				return reject(err)
			}
			res.Status, res.Error = msg.StatusFailed, err.Error()
			return res, fmt.Errorf("modbus %s: %w", d.id, err)
		}
		res.Values[o.p.Name] = readback
	}
	return res, nil
}

// errReadBack marks a failure after the write was acknowledged.
var errReadBack = errors.New("read back")

// write sends one point's write request.
func (d *Device) write(c modbus.Client, p *point, words []uint16, on bool) error {
	switch {
	case p.table == tableCoil:
		v := uint16(0)
		if on {
			v = 0xFF00
		}
		_, err := d.timed(func() ([]uint16, error) { _, err := c.WriteSingleCoil(p.addr, v); return nil, err })
		return err
	case p.Type == codec.Bool: // one bit of a holding register: read, modify, write
		w, err := d.timed(func() ([]uint16, error) { return read(c, tableHolding, p.addr, 1) })
		if err != nil {
			return fmt.Errorf("read before setting bit %d: %w", p.Bit, err)
		}
		words = []uint16{w[0] &^ (1 << p.Bit)}
		if on {
			words[0] |= 1 << p.Bit
		}
	}
	_, err := d.timed(func() ([]uint16, error) { return nil, writeRegisters(c, p.addr, words) })
	return err
}

// writeRegisters uses FC 6 for one register and FC 16 for several.
func writeRegisters(c modbus.Client, addr uint16, words []uint16) error {
	if len(words) == 1 {
		_, err := c.WriteSingleRegister(addr, words[0])
		return err
	}
	b := make([]byte, 2*len(words))
	for i, w := range words {
		b[2*i], b[2*i+1] = byte(w>>8), byte(w)
	}
	_, err := c.WriteMultipleRegisters(addr, uint16(len(words)), b)
	return err
}

// timed runs one request and counts it in the device's stats.
func (d *Device) timed(f func() ([]uint16, error)) ([]uint16, error) {
	t0 := time.Now()
	w, err := f()
	d.count(err, time.Since(t0))
	return w, err
}
