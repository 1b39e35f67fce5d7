package hub

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/internal/admit"
	"github.com/outpost-iot/outpost/gateway/internal/mqttwire"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// The guard protects the hub from clients that connect and do not log in:
// a cap on open connections, a token bucket per source address (checked
// before the hub-wide one), a deadline for the CONNECT and its login, and
// a cap on the CONNECT's size, which is also scanned for protocol errors
// mochi lets through (see connectScan).

// Limits of the guard's own bookkeeping.
const (
	// maxAddrBuckets bounds the per-address buckets kept (admit.Buckets).
	maxAddrBuckets = 4096
	// refusalLogEvery is how often a kind of refusal is logged at most; the
	// log line carries the count since the last one.
	refusalLogEvery = 10 * time.Second
)

// validateGuard checks the guard's keys of c.
func (c Config) validateGuard() []error {
	var errs []error
	bad := func(path, format string, a ...any) { errs = append(errs, adapters.Errorf(path, format, a...)) }
	if r := c.ConnectRatePerAddress; r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		bad("connect_rate_per_address", "hub.connect_rate_per_address must be a positive rate per second (0: half of hub.connect_rate), got %v", r)
	} else if c.ConnectRate > 0 && r > c.ConnectRate {
		bad("connect_rate_per_address", "hub.connect_rate_per_address (%v) is above hub.connect_rate (%v): one host could take every connection", r, c.ConnectRate)
	}
	if c.ConnectTimeout < time.Second || c.ConnectTimeout > 10*time.Minute {
		bad("connect_timeout", "hub.connect_timeout must be between 1s and 10m, got %v", c.ConnectTimeout)
	}
	if c.MaxConnections < 1 || c.MaxConnections > 1_000_000 {
		bad("max_connections", "hub.max_connections must be between 1 and 1000000, got %d", c.MaxConnections)
	}
	if c.MaxConnectPacket < msg.KiB || c.MaxConnectPacket > msg.MiB {
		bad("max_connect_packet", "hub.max_connect_packet must be between 1KiB and 1MiB, got %v", c.MaxConnectPacket)
	}
	return errs
}

// guard is the hub's admission control; see the comment at the top of
// this file.
type guard struct {
	timeout    time.Duration
	maxConns   int64
	maxConnect int
	addrs      *admit.Buckets
	log        *admit.Refusals

	open atomic.Int64 // connections admitted and not yet ended

	capped, addrLimited, timedOut, tooLarge, protoErrs, dropped atomic.Uint64
}

// newGuard builds the guard for opt, whose zero values New has replaced
// with defaults.
func newGuard(opt Options) *guard {
	per := opt.ConnectRatePerAddress
	if per <= 0 {
		per = opt.ConnectRate / 2
	}
	return &guard{
		timeout:    opt.ConnectTimeout,
		maxConns:   int64(opt.MaxConnections),
		maxConnect: int(opt.MaxConnectPacket),
		addrs:      admit.NewBuckets(per, opt.ConnectBurst, maxAddrBuckets),
		log:        admit.NewRefusals(opt.Logger, refusalLogEvery),
	}
}

// guardDefaults gives opt's zero guard keys their defaults.
func guardDefaults(opt *Options) {
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = DefaultConnectTimeout
	}
	if opt.MaxConnections <= 0 {
		opt.MaxConnections = DefaultMaxConnections
	}
	if opt.MaxConnectPacket <= 0 {
		opt.MaxConnectPacket = DefaultMaxConnectPacket
	}
}

// refused counts and logs one refusal of kind (at most one line per
// refusalLogEvery and kind, with the count since the last line).
func (g *guard) refused(kind, reason string, attrs ...any) {
	g.log.Refused(kind, "hub: "+reason, attrs...)
}

// admit decides at accept whether conn may proceed: under the connection
// cap and within its source address's bucket. An admitted connection must
// be released when it ends. A refusal by the address's bucket also counts
// in limited (the hub's rate-limited counter).
func (g *guard) admit(conn net.Conn, limited *atomic.Uint64) bool {
	if g.open.Add(1) > g.maxConns {
		g.open.Add(-1)
		g.capped.Add(1)
		g.refused("max_connections", "refusing connections: hub.max_connections open", "max", g.maxConns)
		return false
	}
	key, allowed := g.addrs.Allow(conn.RemoteAddr(), time.Now())
	if !allowed {
		g.open.Add(-1)
		g.addrLimited.Add(1)
		limited.Add(1)
		g.refused("connect_rate_per_address", "refusing connections from an address over hub.connect_rate_per_address", "source", key)
		return false
	}
	return true
}

// release ends an admitted connection.
func (g *guard) release() { g.open.Add(-1) }

// errConnectTimeout ends a connection that has not logged in in time;
// mqttwire.ErrConnectTooLarge and ErrConnectProtocol, one whose CONNECT
// is refused.
var errConnectTimeout = errors.New("hub: no login within hub.connect_timeout")

// preLogin is a connection's state until its login succeeds: the deadline
// for it and the scan of its CONNECT.
type preLogin struct {
	g        *guard
	deadline time.Time
	scan     *mqttwire.ConnectScan
	over     atomic.Bool // logged in: nothing here applies any more
}

func (g *guard) preLogin(accepted time.Time) *preLogin {
	return &preLogin{g: g, deadline: accepted.Add(g.timeout), scan: mqttwire.NewConnectScan(g.maxConnect)}
}

// active reports whether the connection has not logged in yet.
func (p *preLogin) active() bool { return p != nil && !p.over.Load() }

// limit returns the read deadline to set for t, which mochi asked for.
func (p *preLogin) limit(t time.Time) time.Time {
	if !p.active() || (!t.IsZero() && t.Before(p.deadline)) {
		return t
	}
	return p.deadline
}

// read checks what a Read returned before login; a non-nil error ends the
// connection (conn is where a CONNACK refusal is written).
func (p *preLogin) read(conn net.Conn, b []byte, rerr error) error {
	if !p.active() {
		return nil
	}
	if len(b) > 0 && !p.scan.Done() {
		write, err := p.scan.Feed(b)
		if err != nil {
			if write != nil {
				_ = conn.SetWriteDeadline(time.Now().Add(shutdownWriteTimeout))
				_, _ = conn.Write(write)
			}
			if errors.Is(err, mqttwire.ErrConnectTooLarge) {
				p.g.tooLarge.Add(1)
				p.g.refused("max_connect_packet", "refusing a CONNECT over hub.max_connect_packet", "remote", conn.RemoteAddr().String(), "error", err)
			} else {
				p.g.protoErrs.Add(1)
				p.g.refused("connect_protocol", "refusing a CONNECT with a protocol error", "remote", conn.RemoteAddr().String(), "error", err)
			}
			return err
		}
	}
	if rerr != nil && errors.Is(rerr, os.ErrDeadlineExceeded) && !time.Now().Before(p.deadline) {
		p.g.timedOut.Add(1)
		p.g.refused("connect_timeout", "closing connections that did not log in within hub.connect_timeout", "remote", conn.RemoteAddr().String())
		return fmt.Errorf("%w: %w", errConnectTimeout, rerr)
	}
	return nil
}

// loggedIn ends cl's pre-login limits: its keep-alive takes over.
func (h *Hub) loggedIn(cl *mqtt.Client) {
	if c, ok := cl.Net.Conn.(*hubConn); ok && c.pre != nil {
		c.pre.over.Store(true)
	}
}

// Messages that can never be stored.
var (
	// ErrTopicTooLong is the refusal of a message whose upstream topic, its
	// property bag re-encoded as forwarded, would exceed MQTT's 65,535
	// bytes (less room for what the cloud link adds).
	ErrTopicTooLong = errors.New("hub: upstream topic too long")
	// errNotPublishable is the refusal of a QoS 1 PUBLISH that mochi drops
	// without an answer: a $SYS/... topic, a wildcard, a bad shared name.
	errNotPublishable = errors.New("hub: topic may not be published to")
)

const (
	// maxUpstreamTopic is MQTT's limit on a topic's length.
	maxUpstreamTopic = 65535
	// upstreamTopicRoom is what the cloud link may add to a record's topic
	// beyond Record.Topic: outpost-device with a 128-character id escaped,
	// $.ce, and the gateway's own id in place of the device's.
	upstreamTopicRoom = 1024
)

// checkUpstreamTopic refuses r when its topic, with the longest sequence
// number the store can give it, would not fit upstream.
func checkUpstreamTopic(r *msg.Record, raw string) error {
	// Escaping at most triples a byte: a short raw topic always fits.
	if 3*len(raw)+64 < maxUpstreamTopic-upstreamTopicRoom {
		return nil
	}
	c := *r
	c.Seq = math.MaxUint64
	if n := len(c.Topic()); n > maxUpstreamTopic-upstreamTopicRoom {
		return fmt.Errorf("%w: %d bytes as forwarded, %d allowed", ErrTopicTooLong, n, maxUpstreamTopic-upstreamTopicRoom)
	}
	return nil
}

// poisonError marks a refusal that depends only on the message itself, so
// sending it again can never succeed.
type poisonError struct{ err error }

func (e poisonError) Error() string { return e.err.Error() }
func (e poisonError) Unwrap() error { return e.err }

func isPoison(err error) bool {
	var p poisonError
	return errors.As(err, &p)
}

// dropPoison counts and logs a never-storable message acknowledged to an
// MQTT 3.1.1 client, which has no way to hear a refusal but a disconnect,
// and resends after one for as long as its session lasts.
func (h *Hub) dropPoison(client, topic string, err error) {
	h.guard.dropped.Add(1)
	if len(topic) > 200 {
		topic = topic[:200] + "..."
	}
	h.guard.refused("poison", "acknowledged and dropped messages that can never be stored (MQTT 3.1.1 has no refusal)", "client", client, "topic", topic, "error", err)
}

// refuseUnpublishable answers a QoS 1 PUBLISH that mochi would drop
// without a PUBACK, through cl's ingest queue so PUBACKs keep receive
// order. A QoS 0 one has nothing to answer.
func (h *Hub) refuseUnpublishable(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline || pk.FixedHeader.Qos != 1 || mqtt.IsValidFilter(pk.TopicName, true) {
		return
	}
	ci := h.ingestFor(cl)
	select {
	case ci.slots <- struct{}{}:
	case <-h.closing:
		return
	}
	e := &entry{pid: pk.PacketID, qos: 1, topic: pk.TopicName}
	ci.mu.Lock()
	ci.q = append(ci.q, e)
	ci.mu.Unlock()
	ci.complete(e, poisonError{fmt.Errorf("%w: %q", errNotPublishable, pk.TopicName)})
}
