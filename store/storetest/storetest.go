// Package storetest is the shared contract suite for the durable queue: FIFO
// per priority, lease/ack/release, reject, TTL, both full policies, gap
// counts and reopening after Close. Run it against store.Open (store's own
// tests do) or against any other implementation of Queue, such as a fake
// used in other packages' tests.
package storetest

import (
	"context"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Queue is the store surface the suite exercises; *store.Queue satisfies it.
type Queue interface {
	Append(ctx context.Context, recs ...*msg.Record) error
	Submit(recs []*msg.Record, done func(error))
	Lease(ctx context.Context, max int) ([]*msg.Record, error)
	Ack(seqs ...uint64) error
	Release(seqs ...uint64) error
	Reject(seq uint64, reason string) error
	Dead(after uint64, max int) ([]store.DeadLetter, error)
	TakeGap(ctx context.Context) (store.Gap, bool, error)
	AckGap(ctx context.Context, gen uint64) error
	LeaseFrom(ctx context.Context, from uint64, max int) ([]*msg.Record, error)
	NextSeq() uint64
	Stats() store.Stats
	Close() error
}

// Opener opens the queue kept in dir (the same dir again reopens it).
type Opener func(t *testing.T, dir string, opt store.Options) (Queue, error)

// Run runs the contract suite.
func Run(t *testing.T, open Opener) {
	s := &suite{open: open}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"FIFOPerPriority", s.fifoPerPriority},
		{"PersistsEveryField", s.persistsEveryField},
		{"LeaseAckRelease", s.leaseAckRelease},
		{"LeaseBlocks", s.leaseBlocks},
		{"Reject", s.reject},
		{"TTL", s.ttl},
		{"FullReject", s.fullReject},
		{"FullDropOldest", s.fullDropOldest},
		{"DropOldestSparesLeased", s.dropOldestSparesLeased},
		{"Gap", s.gap},
		{"Reopen", s.reopen},
		{"SubmitOrder", s.submitOrder},
		{"Closed", s.closed},
		{"LeaseFrom", s.leaseFrom},
	} {
		t.Run(tc.name, tc.fn)
	}
}
