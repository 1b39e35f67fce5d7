// Package hub is the gateway's local MQTT hub: an embedded mochi-mqtt broker
// where leaf devices (and local observers such as a dashboard) connect.
//
// Its one rule: a leaf never gets a PUBACK for a message that is not stored.
// A QoS 1 PUBLISH on devices/{id}/messages/events/{bag} becomes a
// msg.Record that is handed to the outbox (an Appender); the PUBACK is sent
// only after the Appender reports the record durable. When the append fails
// an MQTT 3.1.1 leaf is disconnected without a PUBACK (so it sends again
// after reconnecting) and an MQTT 5 leaf gets a PUBACK with a failure reason
// code (0x97 quota exceeded when the store is full, 0x80 otherwise). A
// message that can never be stored (over MaxMessageBytes, a bad property
// bag, an upstream topic over MQTT's 65,535 bytes once re-encoded, a topic
// such as $SYS/... that no client may publish to) gets a failure reason
// code on MQTT 5, and on MQTT 3.1.1 a PUBACK: it is dropped, counted in
// Stats.Dropped and logged, since a disconnect would have a persistent
// session send it again for ever.
// Messages are fanned out to local subscribers only once stored.
//
// Throughput: mochi reads one client's packets in sequence, so the hub does
// not wait for the store in mochi's publish hook. It submits the record
// (the store group-commits appends of all clients into one sync) and a
// goroutine per connection writes the PUBACKs in receive order as their
// batches are synced; a client with MaxInflight messages unanswered is read
// no further until PUBACKs go out.
//
// Panics: the hub's own listener runs each connection in a goroutine that
// recovers, so a packet that panics mochi's decoder (v2.7.9 panics on a
// truncated MQTT 5 SUBSCRIBE) closes that connection only. New connections
// beyond a token-bucket rate (ConnectRate/ConnectBurst) are closed at
// accept, and bcrypt comparisons are bounded to half the CPUs (a password
// that passed once is remembered as a SHA-256 digest).
//
// Who may do what:
//   - no anonymous clients: client id = username = a configured device id,
//     with a bcrypt password, or (on the TLS listener) a verified client
//     certificate whose CN is the device id; a client with an IoT Hub key
//     (Client.SASKey) logs in as Azure IoT SDK devices do, with username
//     "{host}/{id}/?api-version=..." and a SAS token verified locally, and
//     is disconnected when the token expires;
//   - a leaf publishes only to its own D2C topic and subscribes only to its
//     own C2D topic (devices/{id}/messages/devicebound/#);
//   - with Options.Twins, a leaf also publishes twin requests and method
//     answers ($iothub/twin/GET, $iothub/twin/PATCH/properties/reported,
//     $iothub/methods/res) and subscribes to $iothub/twin/res/#,
//     $iothub/twin/PATCH/properties/desired/# and $iothub/methods/POST/#;
//     they concern its own twin only, and what arrives on them is written
//     to its connection alone (see twin.go);
//   - a client configured with ReadAll may also subscribe to every D2C topic;
//   - QoS 2 is refused (MQTT 5 CONNACK advertises maximum QoS 1; a QoS 2
//     PUBLISH disconnects the client); retained publishes are not retained;
//     wills are dropped at CONNECT, since they would bypass the store.
package hub

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"golang.org/x/time/rate"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Appender is the slice of the store the hub uses; *store.Queue satisfies it.
//
// Submit queues recs for appending and returns at once; done is called
// exactly once, after the records are durable (nil) or when they will never
// be (an error), in submission order for one caller. Submit may assign
// ID and Seq on the records. done must not block for long: the hub only
// records the outcome in it.
type Appender interface {
	Submit(recs []*msg.Record, done func(error))
}

// Options configure a Hub: the Config a user writes and what only the
// gateway supplies. Zero values take the defaults noted.
//
// A zero MaxMessageBytes is 262144 (IoT Hub's cap), a zero MaxInflight 256
// (more than 65535 is 65535), a zero SessionExpiry 24h, and a zero
// ConnectRate and ConnectBurst 50/s and 100.
type Options struct {
	Config

	// Commands takes a command an Operator client published on
	// devices/{device}/messages/devicebound/{props}. It must return nil only
	// once the command is durably accepted (the command ledger); the PUBACK
	// follows, in receive order like every PUBACK. An error refuses it like
	// a D2C message the store refused. nil: operators cannot publish.
	Commands msg.Intake

	// Twins takes the device twin and direct method traffic of leaves on
	// $iothub/ topics (see Twins). nil: leaves may neither publish nor
	// subscribe to $iothub/ topics.
	Twins Twins

	Logger *slog.Logger
}

// Errors.
var (
	ErrClosed      = errors.New("hub: closed")
	ErrUnknownLeaf = errors.New("hub: unknown device")
)

// Hub is the local MQTT hub. Create it with New, then Start it.
type Hub struct {
	opt     Options
	out     Appender
	log     *slog.Logger
	clients map[string]*clientConf
	srv     atomic.Pointer[mqtt.Server]
	hook    *mochiHook
	plain   *listener
	tls     *listener
	rate    *rate.Limiter // new connections
	guard   *guard        // connection admission and pre-login limits
	c2d     *c2d
	sas     *sasLogins // SAS-token logins and their expiry
	stats   counters
	conns   sync.Map // net.Conn -> *mqtt.Client, for afterPanic

	ingests  sync.Map       // *mqtt.Client -> *connIngest
	writers  sync.WaitGroup // connIngest.run goroutines
	closing  chan struct{}  // closed by Close
	observed atomic.Bool    // some client has subscribed to D2C topics (then fan out)

	mu      sync.Mutex
	started bool
	closed  bool
}

type clientConf struct {
	Client
	mu       sync.Mutex
	okDigest [32]byte // sha256 of the last password that passed bcrypt
	okSet    bool
}

// New checks opt and builds a Hub that stores leaf messages through out.
// Nothing listens before Start.
func New(opt Options, out Appender) (*Hub, error) {
	if out == nil {
		return nil, errors.New("hub: nil Appender")
	}
	if opt.MaxMessageBytes <= 0 {
		opt.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if opt.MaxInflight <= 0 {
		opt.MaxInflight = DefaultMaxInflight
	}
	if opt.MaxInflight > math.MaxUint16 {
		opt.MaxInflight = math.MaxUint16
	}
	if opt.SessionExpiry <= 0 {
		opt.SessionExpiry = DefaultSessionExpiry
	}
	if opt.ConnectRate <= 0 {
		opt.ConnectRate = fallbackConnectRate
	}
	if opt.ConnectBurst <= 0 {
		opt.ConnectBurst = DefaultConnectBurst
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	guardDefaults(&opt)
	if opt.Listen == "" && opt.TLSListen == "" {
		return nil, errors.New("hub: neither listen nor tls_listen set")
	}
	if opt.TLSListen != "" && (opt.TLS.CertFile == "" || opt.TLS.KeyFile == "") {
		return nil, errors.New("hub: tls_listen needs cert_file and key_file")
	}
	h := &Hub{
		opt:     opt,
		out:     out,
		log:     opt.Logger,
		clients: make(map[string]*clientConf, len(opt.Clients)),
		rate:    rate.NewLimiter(rate.Limit(opt.ConnectRate), opt.ConnectBurst),
		guard:   newGuard(opt),
		closing: make(chan struct{}),
	}
	var errs []error
	for i, c := range opt.Clients {
		if err := msg.ValidDeviceID(c.ID); err != nil {
			errs = append(errs, fmt.Errorf("hub: clients[%d]: %w", i, err))
			continue
		}
		if _, dup := h.clients[c.ID]; dup {
			errs = append(errs, fmt.Errorf("hub: clients[%d]: duplicate id %q", i, c.ID))
			continue
		}
		if c.PasswordHash != "" {
			if err := checkHash(c.PasswordHash); err != nil {
				errs = append(errs, fmt.Errorf("hub: clients[%d] %q: %w", i, c.ID, err))
				continue
			}
		}
		h.clients[c.ID] = &clientConf{Client: c}
	}
	sas, err := newSASLogins(opt.Clients, h.log)
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, err
	}
	h.sas = sas
	h.c2d = newC2D(h)
	return h, nil
}

// Start binds the listeners and serves; it returns once they listen.
func (h *Hub) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.started {
		return errors.New("hub: already started")
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	caps.ReceiveMaximum = uint16(h.opt.MaxInflight)
	caps.MaximumInflight = 1024
	caps.MaximumSessionExpiryInterval = uint32(min(h.opt.SessionExpiry/time.Second, math.MaxUint32))
	caps.MaximumMessageExpiryInterval = int64(h.opt.SessionExpiry / time.Second)
	// The payload cap is enforced per message before storing; this bound
	// only keeps a hostile length prefix from allocating without limit.
	caps.MaximumPacketSize = uint32(h.opt.MaxMessageBytes + 64<<10)
	caps.SharedSubAvailable = 0
	caps.TopicAliasMaximum = 16
	srv := mqtt.New(&mqtt.Options{
		InlineClient:           true,
		Capabilities:           caps,
		Logger:                 h.log.With("part", "mochi"),
		SysTopicResendInterval: 60,
	})
	h.hook = &mochiHook{h: h}
	if err := srv.AddHook(h.hook, nil); err != nil {
		return fmt.Errorf("hub: add hook: %w", err)
	}
	if h.opt.Listen != "" {
		h.plain = newListener("tcp", h.opt.Listen, nil, h)
		if err := srv.AddListener(h.plain); err != nil {
			return fmt.Errorf("hub: listen %s: %w", h.opt.Listen, err)
		}
	}
	if h.opt.TLSListen != "" {
		cfg, err := h.tlsConfig()
		if err != nil {
			h.closeListeners()
			return err
		}
		h.tls = newListener("tls", h.opt.TLSListen, cfg, h)
		if err := srv.AddListener(h.tls); err != nil {
			h.closeListeners()
			return fmt.Errorf("hub: tls listen %s: %w", h.opt.TLSListen, err)
		}
	}
	h.srv.Store(srv)
	if err := srv.Serve(); err != nil {
		h.srv.Store(nil)
		h.closeListeners()
		return fmt.Errorf("hub: serve: %w", err)
	}
	h.started = true
	h.log.Info("hub listening", "addr", h.Addr(), "tls_addr", h.TLSAddr(), "clients", len(h.clients))
	return nil
}

func (h *Hub) closeListeners() {
	if h.plain != nil {
		h.plain.Close(func(string) {})
	}
	if h.tls != nil {
		h.tls.Close(func(string) {})
	}
}

// Addr is the bound plain TCP address ("" when disabled or not started).
func (h *Hub) Addr() string {
	if h.plain == nil {
		return ""
	}
	return h.plain.Address()
}

// TLSAddr is the bound TLS address ("" when disabled or not started).
func (h *Hub) TLSAddr() string {
	if h.tls == nil {
		return ""
	}
	return h.tls.Address()
}

// Close disconnects every client, stops the listeners and fails pending
// C2D deliveries with ErrClosed. It waits for connection goroutines to end;
// appends already submitted still complete in the store, but their PUBACKs
// are not sent. Safe to call more than once and after a failed Start.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.closing)
	srv := h.srv.Load()
	h.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	} else {
		h.closeListeners()
	}
	h.c2d.close()
	// Wait for the store to answer what was submitted, so that no connIngest
	// goroutine outlives the hub; nobody is left to get those PUBACKs.
	done := make(chan struct{})
	go func() { h.writers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		h.log.Warn("hub: store did not answer pending appends; closing anyway", "pending", h.stats.pending.Load())
	}
	return nil
}

// Publish fans a stored record out to local subscribers (observers) on
// r.Topic(). It is the one fan-out of both ingest paths: the gateway calls
// it for adapter readings after their append, and the hub calls it for a
// leaf's message once the store has made it durable. Until some client has
// subscribed to a D2C topic there is nobody to fan out to, and it returns
// nil without building the topic. It returns ErrClosed before Start and
// after Close. It does not block on slow subscribers (mochi queues per
// client and drops when a queue is full).
func (h *Hub) Publish(r *msg.Record) error {
	srv := h.server()
	if srv == nil {
		return ErrClosed
	}
	if !h.observed.Load() {
		return nil
	}
	if err := srv.Publish(r.Topic(), r.Payload, false, 1); err != nil {
		return fmt.Errorf("hub: publish %s: %w", r.Device, err)
	}
	return nil
}

// server is the running broker, or nil before Start and after Close.
func (h *Hub) server() *mqtt.Server {
	select {
	case <-h.closing:
		return nil
	default:
	}
	return h.srv.Load()
}

// closeWait bounds how long Close waits for the store to answer appends.
const closeWait = 10 * time.Second
