package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

type suite struct{ open Opener }

// clock is a settable clock for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// mustOpen opens a queue in dir and closes it at the end of the test.
func (s *suite) mustOpen(t *testing.T, dir string, opt store.Options) Queue {
	t.Helper()
	q, err := s.open(t, dir, opt)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// rec makes a record whose payload names it.
func rec(dev string, p msg.Priority, payload string) *msg.Record {
	return &msg.Record{Device: dev, Priority: p, Payload: []byte(payload)}
}

// sized makes a record of exactly 2+len(payload) budget bytes (ID "i",
// device "d"), for the max_bytes tests.
func sized(p msg.Priority, payload string) *msg.Record {
	return &msg.Record{ID: "i", Device: "d", Priority: p, Payload: []byte(payload)}
}

func appendAll(t *testing.T, q Queue, recs ...*msg.Record) {
	t.Helper()
	if err := q.Append(context.Background(), recs...); err != nil {
		t.Fatalf("append: %v", err)
	}
}

// leaseNow leases up to n records without waiting for more.
func leaseNow(t *testing.T, q Queue, n int) []*msg.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	recs, err := q.Lease(ctx, n)
	if err != nil && err != context.DeadlineExceeded {
		t.Fatalf("lease: %v", err)
	}
	return recs
}

func payloads(recs []*msg.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Payload)
	}
	return out
}

func seqs(recs []*msg.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func wantPayloads(t *testing.T, got []*msg.Record, want ...string) {
	t.Helper()
	if g := fmt.Sprint(payloads(got)); g != fmt.Sprint(want) {
		t.Fatalf("leased %s, want %v", g, want)
	}
}

// waitStats polls Stats until cond holds (the writer commits acks
// asynchronously) or fails after a few seconds.
func waitStats(t *testing.T, q Queue, what string, cond func(store.Stats) bool) store.Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := q.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never showed %s: %+v", what, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
