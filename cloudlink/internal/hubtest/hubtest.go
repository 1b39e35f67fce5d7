// Package hubtest is a stand-in for Azure IoT Hub's MQTT 3.1.1 device
// endpoint, for tests: a loopback broker (mochi-mqtt with hooks) that holds a
// device registry and enforces what IoT Hub enforces, as IOTHUB.md describes
// it:
//
//   - CONNECT: MQTT 3.1.1 only; client id = device id; username
//     {host}/{id}/?api-version=YYYY-MM-DD[&...]; password a SAS token whose
//     signature is checked with the device's key (or a shared access policy
//     key, skn), sr = {host}/devices/{id}, not expired. A failed check is
//     refused with CONNACK "bad username or password".
//
//   - The connection is severed when its token expires (IoT Hub has no
//     in-band re-authentication over MQTT 3.1.1).
//
//   - PUBLISH only to devices/{id}/messages/events/[{bag}] of the connected
//     device, or to the twin and method requests (twin.go), QoS 0 or 1,
//     at most 256 KB (body plus property names and values); QoS 2, another topic or an oversized message drop the
//     connection (IoT Hub reports errors that way over MQTT).
//
//   - SUBSCRIBE only to the device's own documented topics; QoS 2 is granted
//     as QoS 1; anything else drops the connection.
//
//   - C2D: SendC2D publishes on devices/{id}/messages/devicebound/{bag} at
//     QoS 1 and counts the device's PUBACKs (IoT Hub completes a C2D message
//     on its PUBACK).
//
//   - Device twins and direct methods as twin.go describes, with IoT Hub's
//     status codes, $rid, $version, size limits and (Throttle) 429.
//
// It is not IoT Hub: no quotas or feedback, throttling only on request,
// and it was written from documentation, not checked against the real service.
package hubtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/hub"
	"github.com/outpost-iot/outpost/gateway/iothub"
	"github.com/outpost-iot/outpost/gateway/msg"
)

// MaxMessageBytes is IoT Hub's D2C message cap.
const MaxMessageBytes = 256 * 1024

// Options configures a Hub.
type Options struct {
	Host     string            // e.g. testhub.azure-devices.net
	Devices  map[string]string // device id → base64 key
	Policies map[string]string // shared access policy name (with DeviceConnect) → base64 key
	TLS      *tls.Config       // the server certificate; nil serves plain TCP
	Logger   *slog.Logger      // nil discards
	Now      func() time.Time  // the clock for token expiry (nil: time.Now)
}

// D2C is one accepted device-to-cloud message.
type D2C struct {
	Device  string
	Topic   string // as received, still percent-encoded
	Props   msg.Props
	Payload []byte
	QoS     byte
	At      time.Time
}

// Event is something the hub saw happen to a connection.
type Event struct {
	At     time.Time
	Device string // the client id
	Kind   string // connect, refused, violation, expired, disconnect
	Detail string
}

// Event kinds.
const (
	Connect    = "connect"
	Refused    = "refused"
	Violation  = "violation"
	Expired    = "expired"
	Disconnect = "disconnect"
)

// Hub is a running stand-in hub.
type Hub struct {
	regMu sync.RWMutex // guards opt.Devices (SetDevice)
	opt   Options
	srv   *mqtt.Server
	gate  *gateListener

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	d2c       []D2C
	events    []Event
	expiry    map[*mqtt.Client]*time.Timer
	completed map[string]int // device → C2D messages completed (PUBACKed), by $.mid
	// c2dQueue is each device's C2D messages not yet completed, as IoT Hub
	// keeps them (its device queue): sent again on every new connection
	// until PUBACKed, so none is lost to a connection that ends meanwhile.
	c2dQueue map[string][]c2dMsg
	done     map[string]bool // device + "/" + $.mid completed
	nextMid  int

	// Twins and direct methods (twin.go).
	twins     map[string]*iothub.Twin
	reported  map[string][]iothub.Patch // applied reported patches, in order
	twinReqs  map[twinReq]int
	throttled bool
	methods   map[string]chan iothub.MethodResult // device + "\x00" + $rid → the caller
	nextRID   int
}

type c2dMsg struct {
	mid, topic string
	payload    []byte
}

// Start listens on 127.0.0.1 on an ephemeral port.
func Start(opt Options) (*Hub, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	h := &Hub{opt: opt, changed: make(chan struct{}), expiry: map[*mqtt.Client]*time.Timer{}, completed: map[string]int{},
		c2dQueue: map[string][]c2dMsg{}, done: map[string]bool{},
		twins: map[string]*iothub.Twin{}, reported: map[string][]iothub.Patch{}, twinReqs: map[twinReq]int{},
		methods: map[string]chan iothub.MethodResult{}}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0
	caps.MinimumProtocolVersion = 4
	h.srv = mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: opt.Logger})
	if err := h.srv.AddHook(&hook{h: h}, nil); err != nil {
		return nil, fmt.Errorf("hubtest: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("hubtest: %w", err)
	}
	h.gate = &gateListener{Listener: l}
	var ln net.Listener = h.gate
	if opt.TLS != nil {
		ln = tls.NewListener(ln, opt.TLS)
	}
	if err := h.srv.AddListener(listeners.NewNet("hub", ln)); err != nil {
		l.Close()
		return nil, fmt.Errorf("hubtest: %w", err)
	}
	if err := h.srv.Serve(); err != nil {
		l.Close()
		return nil, fmt.Errorf("hubtest: %w", err)
	}
	return h, nil
}

// Addr is host:port.
func (h *Hub) Addr() string { return h.gate.Addr().String() }

// Close stops the hub.
func (h *Hub) Close() error {
	h.mu.Lock()
	for _, t := range h.expiry {
		t.Stop()
	}
	h.mu.Unlock()
	// mochi's Close races with a connection being set up (its done channel
	// is read by NewClient): stop accepting and let the connections already
	// accepted get that far first.
	h.gate.close(5 * time.Second)
	hub.StopClients(h.srv, 5*time.Second)
	return h.srv.Close()
}

// gateListener tracks accepted connections until mochi has started on them
// (their first Read or Close), so that Close can wait for that.
type gateListener struct {
	net.Listener
	mu      sync.Mutex
	closed  bool
	pending sync.WaitGroup
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.pending.Add(1)
	return &gateConn{Conn: c, started: l.pending.Done}, nil
}

// close stops accepting and waits (up to timeout) for accepted connections
// to be started on.
func (l *gateListener) close(timeout time.Duration) {
	l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	done := make(chan struct{})
	go func() {
		l.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

type gateConn struct {
	net.Conn
	once    sync.Once
	started func()
}

func (c *gateConn) Read(p []byte) (int, error) {
	c.once.Do(c.started)
	return c.Conn.Read(p)
}

func (c *gateConn) Close() error {
	c.once.Do(c.started)
	return c.Conn.Close()
}

// D2C returns every accepted D2C message so far, in arrival order.
func (h *Hub) D2C() []D2C {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]D2C(nil), h.d2c...)
}

// Events returns every event so far, in order.
func (h *Hub) Events() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Event(nil), h.events...)
}

// Count is the number of events of kind (for device, or all when "").
func (h *Hub) Count(kind, device string) int {
	n := 0
	for _, e := range h.Events() {
		if e.Kind == kind && (device == "" || e.Device == device) {
			n++
		}
	}
	return n
}

// Completed is how many C2D messages device has completed (PUBACKed; a
// message sent again and PUBACKed again counts once).
func (h *Hub) Completed(device string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.completed[device]
}

// Wait calls ok after every change until it returns true or timeout passed;
// it reports whether ok returned true.
func (h *Hub) Wait(timeout time.Duration, ok func(h *Hub) bool) bool {
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		w := h.changed
		h.mu.Unlock()
		if ok(h) {
			return true
		}
		select {
		case <-w:
		case <-deadline:
			return ok(h)
		}
	}
}

// SetDevice registers device id with its key (or replaces its key), as
// an operator fixing a device in the portal would.
func (h *Hub) SetDevice(id, key string) {
	h.regMu.Lock()
	defer h.regMu.Unlock()
	devs := make(map[string]string, len(h.opt.Devices)+1)
	for k, v := range h.opt.Devices {
		devs[k] = v
	}
	devs[id] = key
	h.opt.Devices = devs
}

func (h *Hub) deviceKey(id string) (string, bool) {
	h.regMu.RLock()
	defer h.regMu.RUnlock()
	k, ok := h.opt.Devices[id]
	return k, ok
}

// SendC2D queues a cloud-to-device message for device and sends it (QoS
// 1). Like IoT Hub, the hub keeps it until the device PUBACKs it and sends
// it again on each new connection of the device; a message without $.mid
// gets one.
func (h *Hub) SendC2D(device string, props msg.Props, payload []byte) error {
	if _, ok := h.deviceKey(device); !ok {
		return fmt.Errorf("hubtest: no device %q", device)
	}
	h.mu.Lock()
	mid, ok := props.Get(msg.PropMessageID)
	if !ok {
		h.nextMid++
		mid = fmt.Sprintf("hub-%d", h.nextMid)
		props = append(msg.Props{{Key: msg.PropMessageID, Value: mid}}, props...)
	}
	m := c2dMsg{mid: mid, topic: msg.DeviceboundTopic(device, props), payload: payload}
	h.c2dQueue[device] = append(h.c2dQueue[device], m)
	h.mu.Unlock()
	return h.srv.Publish(m.topic, m.payload, false, 1)
}

// resendC2D sends device's uncompleted C2D messages again (a new
// connection, or a new subscription).
func (h *Hub) resendC2D(device string) {
	h.mu.Lock()
	q := append([]c2dMsg(nil), h.c2dQueue[device]...)
	h.mu.Unlock()
	for _, m := range q {
		_ = h.srv.Publish(m.topic, m.payload, false, 1)
	}
}

// completeC2D marks the C2D message on topic completed by device.
func (h *Hub) completeC2D(device, topic string) {
	_, ps, err := msg.ParseDeviceboundTopic(topic)
	if err != nil {
		return
	}
	mid, _ := ps.Get(msg.PropMessageID)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done[device+"/"+mid] {
		return
	}
	h.done[device+"/"+mid] = true
	h.completed[device]++
	h.c2dQueue[device] = slices.DeleteFunc(h.c2dQueue[device], func(m c2dMsg) bool { return m.mid == mid })
	h.signalLocked()
}

func (h *Hub) note(e Event) {
	e.At = time.Now()
	h.mu.Lock()
	h.events = append(h.events, e)
	h.signalLocked()
	h.mu.Unlock()
	h.opt.Logger.Debug("hubtest", "kind", e.Kind, "device", e.Device, "detail", e.Detail)
}

func (h *Hub) signalLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

var apiVersion = regexp.MustCompile(`^api-version=\d{4}-\d{2}-\d{2}(&|$)`)

// authenticate checks a CONNECT; it returns the token's expiry.
func (h *Hub) authenticate(cl *mqtt.Client, pk packets.Packet) (time.Time, error) {
	id := cl.ID
	if cl.Properties.ProtocolVersion != 4 {
		return time.Time{}, fmt.Errorf("MQTT protocol version %d, want 4 (3.1.1)", cl.Properties.ProtocolVersion)
	}
	if _, ok := h.deviceKey(id); !ok {
		return time.Time{}, fmt.Errorf("device %q is not registered", id)
	}
	user := string(pk.Connect.Username)
	rest, ok := strings.CutPrefix(user, h.opt.Host+"/"+id+"/?")
	if !ok || !apiVersion.MatchString(rest) {
		return time.Time{}, fmt.Errorf("username %q, want %s/%s/?api-version=YYYY-MM-DD", user, h.opt.Host, id)
	}
	return h.checkSAS(id, string(pk.Connect.Password))
}

// checkSAS validates a SAS token for device id.
func (h *Hub) checkSAS(id, token string) (time.Time, error) {
	fields, ok := strings.CutPrefix(token, "SharedAccessSignature ")
	if !ok {
		return time.Time{}, errors.New("password is not a SharedAccessSignature")
	}
	f := map[string]string{}
	for kv := range strings.SplitSeq(fields, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if _, dup := f[k]; dup {
			return time.Time{}, fmt.Errorf("SAS field %q twice", k)
		}
		f[k] = v
	}
	sr, err := url.PathUnescape(f["sr"])
	if err != nil || !strings.EqualFold(sr, h.opt.Host+"/devices/"+id) {
		return time.Time{}, fmt.Errorf("SAS sr %q, want %s/devices/%s", f["sr"], h.opt.Host, id)
	}
	se, err := strconv.ParseInt(f["se"], 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SAS se %q: %v", f["se"], err)
	}
	exp := time.Unix(se, 0)
	if !exp.After(h.opt.Now()) {
		return time.Time{}, fmt.Errorf("SAS token expired at %v", exp.UTC())
	}
	key, _ := h.deviceKey(id)
	if skn, ok := f["skn"]; ok {
		if key, ok = h.opt.Policies[skn]; !ok {
			return time.Time{}, fmt.Errorf("SAS skn %q: no such policy", skn)
		}
	}
	k, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return time.Time{}, fmt.Errorf("registry key of %q: %v", id, err)
	}
	sig, err := url.PathUnescape(f["sig"])
	if err != nil {
		return time.Time{}, fmt.Errorf("SAS sig: %v", err)
	}
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return time.Time{}, fmt.Errorf("SAS sig not base64: %v", err)
	}
	mac := hmac.New(sha256.New, k)
	mac.Write([]byte(f["sr"] + "\n" + f["se"]))
	if !hmac.Equal(got, mac.Sum(nil)) {
		return time.Time{}, errors.New("SAS signature does not match the device key")
	}
	return exp, nil
}

// checkPublish returns why a device's PUBLISH breaks IoT Hub's rules.
func (h *Hub) checkPublish(id string, pk packets.Packet) error {
	if pk.FixedHeader.Qos > 1 {
		return fmt.Errorf("PUBLISH with QoS %d", pk.FixedHeader.Qos)
	}
	if ok, err := isTwinOrMethod(pk.TopicName); ok {
		return err
	}
	dev, ps, err := msg.ParseEventsTopic(pk.TopicName)
	if err != nil || dev != id {
		return fmt.Errorf("PUBLISH to %q: not devices/%s/messages/events/", pk.TopicName, id)
	}
	if bag := pk.TopicName[strings.Index(pk.TopicName, "/events")+len("/events"):]; strings.Contains(bag, "+") {
		return fmt.Errorf("PUBLISH property bag with a '+' (form encoding): %q", bag)
	}
	size := len(pk.Payload)
	for _, p := range ps {
		size += len(p.Key) + len(p.Value)
	}
	if size > MaxMessageBytes {
		return fmt.Errorf("message of %d bytes over the %d cap", size, MaxMessageBytes)
	}
	return nil
}

// allowedFilter reports whether a device may subscribe to filter.
func allowedFilter(id, filter string) bool {
	switch filter {
	case "devices/" + id + "/messages/devicebound/#", "$iothub/methods/POST/#", "$iothub/twin/res/#",
		"$iothub/twin/PATCH/properties/desired/#":
		return true
	}
	return false
}
