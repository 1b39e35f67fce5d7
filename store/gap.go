package store

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Gap counts records the cloud will never see: evicted under DropOldest
// (Dropped) or removed by TTL (Expired), and the range of their sequence
// numbers. Records rejected to the dead letters are not part of it.
//
// Reporting protocol (at-least-once, stable id): the forwarder calls
// TakeGap; if it returns a gap, it publishes g.Record(...) upstream like any
// record and, on PUBACK, calls AckGap(g.Gen). Until then TakeGap returns the
// same gap (same ID), also after a restart; drops that happen meanwhile
// accumulate in the next gap.
type Gap struct {
	Gen      uint64 `json:"gen"`
	ID       string `json:"id,omitempty"`
	Dropped  uint64 `json:"dropped"`
	Expired  uint64 `json:"expired"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
}

// Empty reports whether the gap counts nothing.
func (g Gap) Empty() bool { return g.Dropped == 0 && g.Expired == 0 }

func (g *Gap) add(seq uint64, dropped bool) {
	if dropped {
		g.Dropped++
	} else {
		g.Expired++
	}
	if g.FirstSeq == 0 || seq < g.FirstSeq {
		g.FirstSeq = seq
	}
	g.LastSeq = max(g.LastSeq, seq)
}

// Record returns the gap as a D2C record for device (the gateway's id):
// High priority, ID g.ID, properties type=gap and $.ct=application/json,
// body {"gen":..,"dropped":..,"expired":..,"first_seq":..,"last_seq":..}.
// It is not in the outbox (Seq 0): publish it directly.
func (g Gap) Record(device string) *msg.Record {
	body, _ := json.Marshal(struct {
		Gen      uint64 `json:"gen"`
		Dropped  uint64 `json:"dropped"`
		Expired  uint64 `json:"expired"`
		FirstSeq uint64 `json:"first_seq"`
		LastSeq  uint64 `json:"last_seq"`
	}{g.Gen, g.Dropped, g.Expired, g.FirstSeq, g.LastSeq})
	return &msg.Record{
		ID:       g.ID,
		Device:   device,
		Priority: msg.High,
		Props:    msg.Props{{Key: msg.PropType, Value: "gap"}, {Key: msg.PropContentType, Value: msg.ContentTypeJSON}},
		Payload:  body,
	}
}

// TakeGap returns the gap to report upstream, if any (see Gap). Taking a new
// gap is a durable write; it waits for the sync.
func (q *Queue) TakeGap(ctx context.Context) (Gap, bool, error) {
	var g Gap
	err := q.do(ctx, func(b *batch) error {
		if q.m.GapOut.Empty() && !q.m.Gap.Empty() {
			q.m.GapOut = q.m.Gap
			q.m.GapOut.Gen = q.m.GapGen
			q.m.GapOut.ID = q.m.Instance + "-gap-" + strconv.FormatUint(q.m.GapGen, 10)
			q.m.GapGen++
			q.m.Gap = Gap{}
		}
		g = q.m.GapOut
		return nil
	})
	return g, err == nil && !g.Empty(), err
}

// AckGap records that gap gen was delivered upstream; a gen that is not the
// outstanding gap is ignored. Durable; it waits for the sync.
func (q *Queue) AckGap(ctx context.Context, gen uint64) error {
	return q.do(ctx, func(b *batch) error {
		if q.m.GapOut.Gen == gen {
			q.m.GapOut = Gap{}
		}
		return nil
	})
}

// do runs fn in the writer's next batch and waits for its sync. fn may
// read and change q.m and write to b; it must return an error only before
// its first write.
func (q *Queue) do(ctx context.Context, fn func(b *batch) error) error {
	return q.doSized(ctx, 1024, fn)
}

// doSized is do for an fn that writes about est bytes.
func (q *Queue) doSized(ctx context.Context, est int64, fn func(b *batch) error) error {
	ch := make(chan error, 1)
	if err := q.enqueue(&op{kind: opFunc, fn: fn, n: 4, est: est, done: func(err error) { ch <- err }}); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
