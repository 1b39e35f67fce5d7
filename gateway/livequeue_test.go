package gateway

import (
	"context"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// The store must offer what cloudlink's live-first replay looks for by type
// assertion; if a rename breaks this, the build says so instead of replay
// silently falling back to plain queue order.
var _ interface {
	LeaseFrom(ctx context.Context, from uint64, max int) ([]*msg.Record, error)
	NextSeq() uint64
} = (*store.Queue)(nil)
