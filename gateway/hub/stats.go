package hub

import (
	"sync/atomic"
)

// Stats are the hub's counters since New. All are cumulative except
// Connected and Pending.
type Stats struct {
	Connected    int64  // clients connected now
	Connects     uint64 // sessions established
	AuthFailures uint64 // CONNECTs refused for identity or credentials
	ACLDenied    uint64 // publishes or subscriptions refused by the ACL
	RateLimited  uint64 // connections closed by the connection rate limit
	TLSFailures  uint64 // TLS handshakes that failed
	Panics       uint64 // connections closed after a panic in packet handling

	Received    uint64 // leaf PUBLISHes to events topics (any QoS)
	Stored      uint64 // of those, appended to the outbox
	Refused     uint64 // not stored: store error, too large, bad topic, QoS 2
	RefusedFull uint64 // of Refused, because the store was full
	Pending     int64  // submitted, not yet answered by the store

	C2DQueued  uint64 // Deliver calls
	C2DSent    uint64 // C2D PUBLISHes written (including resends)
	C2DAcked   uint64 // C2D messages PUBACKed by the leaf
	C2DExpired uint64 // C2D messages that expired undelivered
}

type counters struct {
	connects, authFailures, aclDenied, rateLimited, tlsFailures, panics atomic.Uint64
	received, stored, refused, refusedFull                              atomic.Uint64
	pending                                                             atomic.Int64
	c2dQueued, c2dSent, c2dAcked, c2dExpired                            atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (h *Hub) Stats() Stats {
	c := &h.stats
	s := Stats{
		Connects:     c.connects.Load(),
		AuthFailures: c.authFailures.Load(),
		ACLDenied:    c.aclDenied.Load(),
		RateLimited:  c.rateLimited.Load(),
		TLSFailures:  c.tlsFailures.Load(),
		Panics:       c.panics.Load(),
		Received:     c.received.Load(),
		Stored:       c.stored.Load(),
		Refused:      c.refused.Load(),
		RefusedFull:  c.refusedFull.Load(),
		Pending:      c.pending.Load(),
		C2DQueued:    c.c2dQueued.Load(),
		C2DSent:      c.c2dSent.Load(),
		C2DAcked:     c.c2dAcked.Load(),
		C2DExpired:   c.c2dExpired.Load(),
	}
	if srv := h.server(); srv != nil {
		s.Connected = atomic.LoadInt64(&srv.Info.ClientsConnected)
	}
	return s
}
