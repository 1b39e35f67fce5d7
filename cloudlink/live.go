package cloudlink

import (
	"context"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// source tags where a leased batch came from, for drain accounting.
type source struct{ backlog bool }

// plan decides what to lease next on one connection.
type plan interface {
	next(ctx context.Context, max int) ([]*msg.Record, *source, error)
}

// fifo leases in plain queue order.
type fifo struct{ q queue }

func (p fifo) next(ctx context.Context, max int) ([]*msg.Record, *source, error) {
	recs, err := p.q.Lease(ctx, max)
	return recs, nil, err
}

func (s *Session) newPlan() plan { return fifo{s.q} }

// acked counts n records acknowledged upstream.
func (s *Session) acked(n int, _ []*source) {
	s.update(func(st *Status) { st.Forwarded += uint64(n) })
}
