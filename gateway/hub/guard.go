package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/adapters"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// The guard protects the hub from clients that connect and do not log in:
// a cap on open connections, a token bucket per source address (checked
// before the hub-wide one), a deadline for the CONNECT and its login, and
// a cap on the CONNECT's size, which is also scanned for protocol errors
// mochi lets through (see connectScan).

// Limits of the guard's own bookkeeping.
const (
	// maxAddrBuckets bounds the per-address buckets kept; beyond it, idle
	// (full) buckets are dropped, and if that is not enough, all of them.
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
	perRate    rate.Limit
	perBurst   int
	log        *slog.Logger

	open atomic.Int64 // connections admitted and not yet ended

	mu    sync.Mutex
	addrs map[netip.Prefix]*rate.Limiter

	capped, addrLimited, timedOut, tooLarge, protoErrs, dropped atomic.Uint64

	logMu  sync.Mutex
	logged map[string]*refusalLog
}

// refusalLog is the state of one kind of refusal's log line.
type refusalLog struct {
	last time.Time
	n    int
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
		perRate:    rate.Limit(per),
		perBurst:   max(1, opt.ConnectBurst),
		log:        opt.Logger,
		addrs:      make(map[netip.Prefix]*rate.Limiter),
		logged:     make(map[string]*refusalLog),
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
	g.logMu.Lock()
	r := g.logged[kind]
	if r == nil {
		r = &refusalLog{}
		g.logged[kind] = r
	}
	r.n++
	now := time.Now()
	if now.Sub(r.last) < refusalLogEvery {
		g.logMu.Unlock()
		return
	}
	n := r.n
	r.last, r.n = now, 0
	g.logMu.Unlock()
	g.log.Warn("hub: "+reason, append([]any{"refusal", kind, "count", n}, attrs...)...)
}

// sourceKey is the bucket key of a remote address: the IPv4 address, or
// the IPv6 /64.
func sourceKey(a net.Addr) (netip.Prefix, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
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
	key, ok := sourceKey(conn.RemoteAddr())
	if !ok {
		return true
	}
	now := time.Now()
	g.mu.Lock()
	lim := g.addrs[key]
	if lim == nil {
		if len(g.addrs) >= maxAddrBuckets {
			for k, l := range g.addrs {
				if l.TokensAt(now) >= float64(g.perBurst) {
					delete(g.addrs, k)
				}
			}
			if len(g.addrs) >= maxAddrBuckets {
				clear(g.addrs)
			}
		}
		lim = rate.NewLimiter(g.perRate, g.perBurst)
		g.addrs[key] = lim
	}
	allowed := lim.AllowN(now, 1)
	g.mu.Unlock()
	if !allowed {
		g.open.Add(-1)
		g.addrLimited.Add(1)
		limited.Add(1)
		g.refused("connect_rate_per_address", "refusing connections from an address over hub.connect_rate_per_address", "source", key.String())
		return false
	}
	return true
}

// release ends an admitted connection.
func (g *guard) release() { g.open.Add(-1) }

// errConnectTimeout, errConnectTooLarge and errConnectProtocol end a
// connection that has not logged in.
var (
	errConnectTimeout  = errors.New("hub: no login within hub.connect_timeout")
	errConnectTooLarge = errors.New("hub: CONNECT larger than hub.max_connect_packet")
	errConnectProtocol = errors.New("hub: CONNECT with a protocol error")
)

// connectScan follows the bytes read from a connection until its first
// packet is complete. It refuses a CONNECT announcing more than max bytes
// before they are read, and, in an MQTT 5 CONNECT, a property other than
// a user property that appears twice (a protocol error mochi accepts).
// A first packet that is not a CONNECT is left to mochi, which refuses it.
type connectScan struct {
	max  int
	hdr  []byte // fixed header bytes so far
	need int    // remaining length, once the header is complete (-1 before)
	body []byte
	done bool
}

func newConnectScan(max int) *connectScan { return &connectScan{max: max, need: -1} }

// feed takes the next bytes read. It returns a non-nil error when the
// connection must be closed; write, when not nil, is the CONNACK to send
// first.
func (s *connectScan) feed(b []byte) (write []byte, err error) {
	for len(b) > 0 && !s.done {
		if s.need < 0 {
			s.hdr = append(s.hdr, b[0])
			b = b[1:]
			if len(s.hdr) == 1 {
				if s.hdr[0] != 0x10 {
					s.done = true
				}
				continue
			}
			c := s.hdr[len(s.hdr)-1]
			if c&0x80 != 0 {
				if len(s.hdr) == 5 {
					s.done = true // malformed length: mochi refuses it
				}
				continue
			}
			n, mul := 0, 1
			for _, d := range s.hdr[1:] {
				n += int(d&0x7f) * mul
				mul *= 128
			}
			if n > s.max {
				s.done = true
				return nil, fmt.Errorf("%w: %d bytes announced, %d allowed", errConnectTooLarge, n, s.max)
			}
			s.need = n
			if n == 0 {
				s.done = true
			}
			continue
		}
		take := min(len(b), s.need-len(s.body))
		s.body = append(s.body, b[:take]...)
		b = b[take:]
		if len(s.body) == s.need {
			s.done = true
			body := s.body
			s.hdr, s.body = nil, nil // kept for the connection's life: drop the buffer
			if err := checkConnect5(body); err != nil {
				// CONNACK: no session present, 0x82 protocol error, no properties.
				return []byte{0x20, 3, 0, 0x82, 0}, fmt.Errorf("%w: %v", errConnectProtocol, err)
			}
		}
	}
	return nil, nil
}

// checkConnect5 checks an MQTT 5 CONNECT's body (after the fixed header)
// for properties given twice, in the CONNECT's and the will's properties.
// A body it cannot follow is left to mochi's decoder.
func checkConnect5(b []byte) error {
	r := wire{b: b}
	name := r.str()
	level := r.byte()
	if r.bad || string(name) != "MQTT" || level != 5 {
		return nil
	}
	flags := r.byte()
	r.skip(2) // keep alive
	if err := r.props("CONNECT"); err != nil {
		return err
	}
	r.str() // client id
	if flags&0x04 != 0 {
		return r.props("will")
	}
	return nil
}

// wire reads MQTT's encodings from b; bad is set once b runs out.
type wire struct {
	b   []byte
	bad bool
}

func (r *wire) skip(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *wire) byte() byte {
	if b := r.skip(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *wire) uint16() int {
	if b := r.skip(2); b != nil {
		return int(b[0])<<8 | int(b[1])
	}
	return 0
}

func (r *wire) str() []byte { return r.skip(r.uint16()) }

func (r *wire) varint() int {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		c := r.byte()
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			return n
		}
		mul *= 128
	}
	r.bad = true
	return 0
}

// propSize is the encoded size of an MQTT 5 property's value by its id: >0
// a fixed size, -1 a string or binary, -2 a string pair, -3 a varint.
var propSize = map[int]int{
	0x01: 1, 0x02: 4, 0x03: -1, 0x08: -1, 0x09: -1, 0x0B: -3, 0x11: 4, 0x12: -1, 0x13: 2,
	0x15: -1, 0x16: -1, 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: -1, 0x1C: -1, 0x1F: -1, 0x21: 2,
	0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: -2, 0x27: 4, 0x28: 1, 0x29: 1, 0x2A: 1,
}

// props reads a property list and reports a property given twice (user
// properties, 0x26, may repeat).
func (r *wire) props(what string) error {
	n := r.varint()
	list := wire{b: r.skip(n)}
	if r.bad {
		return nil
	}
	var seen [0x80]bool
	for len(list.b) > 0 && !list.bad {
		id := list.varint()
		size, ok := propSize[id]
		if !ok {
			return nil // unknown: mochi decides
		}
		if id != 0x26 {
			if seen[id] {
				return fmt.Errorf("%s property %#02x given twice", what, id)
			}
			seen[id] = true
		}
		switch size {
		case -1:
			list.str()
		case -2:
			list.str()
			list.str()
		case -3:
			list.varint()
		default:
			list.skip(size)
		}
	}
	return nil
}

// preLogin is a connection's state until its login succeeds: the deadline
// for it and the scan of its CONNECT.
type preLogin struct {
	g        *guard
	deadline time.Time
	scan     *connectScan
	over     atomic.Bool // logged in: nothing here applies any more
}

func (g *guard) preLogin(accepted time.Time) *preLogin {
	return &preLogin{g: g, deadline: accepted.Add(g.timeout), scan: newConnectScan(g.maxConnect)}
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
	if len(b) > 0 && !p.scan.done {
		write, err := p.scan.feed(b)
		if err != nil {
			if write != nil {
				_ = conn.SetWriteDeadline(time.Now().Add(shutdownWriteTimeout))
				_, _ = conn.Write(write)
			}
			if errors.Is(err, errConnectTooLarge) {
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
