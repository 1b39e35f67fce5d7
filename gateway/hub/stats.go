package hub

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
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

	ConnLimited     uint64 // connections closed at accept: hub.max_connections open
	AddrLimited     uint64 // of RateLimited, by their source address's bucket
	ConnectTimeouts uint64 // connections closed for no login within hub.connect_timeout
	ConnectRefused  uint64 // CONNECTs over hub.max_connect_packet or with a protocol error
	Dropped         uint64 // of Refused, acknowledged to an MQTT 3.1.1 client and dropped (never storable)

	Received    uint64 // leaf PUBLISHes to events topics (any QoS)
	Stored      uint64 // of those, appended to the outbox
	Refused     uint64 // not stored: store error, too large, bad topic, QoS 2
	RefusedFull uint64 // of Refused, because the store was full
	Pending     int64  // submitted, not yet answered by the store

	C2DQueued  uint64 // Deliver calls
	C2DSent    uint64 // C2D PUBLISHes written (including resends)
	C2DAcked   uint64 // C2D messages PUBACKed by the leaf
	C2DExpired uint64 // C2D messages that expired undelivered

	TwinRequests    uint64 // twin GETs and reported patches answered
	TwinRefused     uint64 // of those, answered with a failure status
	MethodUnmatched uint64 // method answers for no call of the leaf's
}

type counters struct {
	connects, authFailures, aclDenied, rateLimited, tlsFailures, panics atomic.Uint64
	received, stored, refused, refusedFull                              atomic.Uint64
	pending                                                             atomic.Int64
	c2dQueued, c2dSent, c2dAcked, c2dExpired                            atomic.Uint64
	twinRequests, twinRefused, methodUnmatched                          atomic.Uint64
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

		ConnLimited:     h.guard.capped.Load(),
		AddrLimited:     h.guard.addrLimited.Load(),
		ConnectTimeouts: h.guard.timedOut.Load(),
		ConnectRefused:  h.guard.tooLarge.Load() + h.guard.protoErrs.Load(),
		Dropped:         h.guard.dropped.Load(),
		Received:        c.received.Load(),
		Stored:          c.stored.Load(),
		Refused:         c.refused.Load(),
		RefusedFull:     c.refusedFull.Load(),
		Pending:         c.pending.Load(),
		C2DQueued:       c.c2dQueued.Load(),
		C2DSent:         c.c2dSent.Load(),
		C2DAcked:        c.c2dAcked.Load(),
		C2DExpired:      c.c2dExpired.Load(),

		TwinRequests:    c.twinRequests.Load(),
		TwinRefused:     c.twinRefused.Load(),
		MethodUnmatched: c.methodUnmatched.Load(),
	}
	if srv := h.server(); srv != nil {
		s.Connected = atomic.LoadInt64(&srv.Info.ClientsConnected)
	}
	return s
}

// Collectors returns Prometheus collectors for the hub's counters
// (outpost_hub_*), read from Stats at scrape time. Register them once.
func (h *Hub) Collectors() []prometheus.Collector {
	counter := func(name, help string, v func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "outpost_hub_" + name, Help: help},
			func() float64 { return float64(v(h.Stats())) })
	}
	gauge := func(name, help string, v func(Stats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "outpost_hub_" + name, Help: help},
			func() float64 { return float64(v(h.Stats())) })
	}
	return []prometheus.Collector{
		gauge("connected_clients", "MQTT clients connected now.", func(s Stats) int64 { return s.Connected }),
		gauge("pending_appends", "Leaf messages submitted to the store and not yet answered.", func(s Stats) int64 { return s.Pending }),
		counter("connects_total", "Sessions established.", func(s Stats) uint64 { return s.Connects }),
		counter("auth_failures_total", "CONNECTs refused for identity or credentials.", func(s Stats) uint64 { return s.AuthFailures }),
		counter("acl_denied_total", "Publishes or subscriptions refused by the ACL.", func(s Stats) uint64 { return s.ACLDenied }),
		counter("rate_limited_total", "Connections closed by the connection rate limit.", func(s Stats) uint64 { return s.RateLimited }),
		counter("tls_failures_total", "Failed TLS handshakes.", func(s Stats) uint64 { return s.TLSFailures }),
		counter("panics_total", "Connections closed after a panic in packet handling.", func(s Stats) uint64 { return s.Panics }),
		counter("conn_limited_total", "Connections closed at accept because hub.max_connections were open.", func(s Stats) uint64 { return s.ConnLimited }),
		counter("addr_limited_total", "Connections closed at accept by their source address's connect bucket.", func(s Stats) uint64 { return s.AddrLimited }),
		counter("connect_timeouts_total", "Connections closed for not logging in within hub.connect_timeout.", func(s Stats) uint64 { return s.ConnectTimeouts }),
		counter("connect_refused_total", "CONNECTs refused for their size or a protocol error.", func(s Stats) uint64 { return s.ConnectRefused }),
		counter("dropped_total", "Leaf messages that can never be stored, acknowledged to MQTT 3.1.1 clients and dropped.", func(s Stats) uint64 { return s.Dropped }),
		counter("received_total", "Leaf PUBLISHes to D2C topics.", func(s Stats) uint64 { return s.Received }),
		counter("stored_total", "Leaf messages appended to the outbox.", func(s Stats) uint64 { return s.Stored }),
		counter("refused_total", "Leaf messages not stored (and not acknowledged).", func(s Stats) uint64 { return s.Refused }),
		counter("refused_full_total", "Leaf messages refused because the store was full.", func(s Stats) uint64 { return s.RefusedFull }),
		counter("c2d_queued_total", "C2D messages queued for leaves.", func(s Stats) uint64 { return s.C2DQueued }),
		counter("c2d_sent_total", "C2D PUBLISHes written to leaves, resends included.", func(s Stats) uint64 { return s.C2DSent }),
		counter("c2d_acked_total", "C2D messages acknowledged by leaves.", func(s Stats) uint64 { return s.C2DAcked }),
		counter("c2d_expired_total", "C2D messages that expired undelivered.", func(s Stats) uint64 { return s.C2DExpired }),
		counter("twin_requests_total", "Twin GETs and reported patches of leaves answered.", func(s Stats) uint64 { return s.TwinRequests }),
		counter("twin_refused_total", "Twin requests answered with a failure status.", func(s Stats) uint64 { return s.TwinRefused }),
		counter("method_unmatched_total", "Direct method answers for no call of the leaf's.", func(s Stats) uint64 { return s.MethodUnmatched }),
	}
}
