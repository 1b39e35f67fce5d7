package hub

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// Errors passed to a Deliver callback.
var (
	ErrExpired  = errors.New("hub: c2d message expired before the leaf acknowledged it")
	ErrReplaced = errors.New("hub: c2d message replaced by a later Deliver with the same $.mid")
)

// Deliver queues a cloud-to-device message for the MQTT leaf device and
// returns at once. The leaf gets it as a QoS 1 PUBLISH on
// devices/{device}/messages/devicebound/{props} as soon as it is connected
// and subscribed to its devicebound topic (an offline leaf gets it when it
// comes back); pending messages go out in Deliver order.
//
// done is called exactly once, from a hub goroutine and never under a hub
// lock: nil when the leaf has PUBACKed the message; ErrExpired once the
// expiry passed without that PUBACK; ErrReplaced when a later Deliver for the
// same device carries the same $.mid (the later call takes over, so a
// command ledger may simply call Deliver again for every pending command
// after a restart or a reconnect); ErrClosed when the hub closes first.
// Nothing is stored by the hub: the caller (the command ledger) owns
// durability and calls Deliver again after a restart.
//
// The expiry is the $.exp property when it holds an RFC 3339 time,
// otherwise Options.SessionExpiry from now. A message may reach the leaf
// more than once (at-least-once, e.g. resent after a reconnect); leaves
// de-duplicate on $.mid.
//
// Deliver returns ErrUnknownLeaf for a device that is not a configured
// client and ErrClosed after Close; done is not called then.
func (h *Hub) Deliver(device string, props msg.Props, payload []byte, done func(error)) error {
	if _, ok := h.clients[device]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownLeaf, device)
	}
	if done == nil {
		done = func(error) {}
	}
	exp := time.Now().Add(h.opt.SessionExpiry)
	if s, ok := props.Get(msg.PropExpiry); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			exp = t
		}
	}
	mid, _ := props.Get(msg.PropMessageID)
	d := &delivery{
		mid:     mid,
		topic:   msg.DeviceboundTopic(device, props),
		payload: payload,
		done:    done,
	}
	return h.c2d.add(device, d, exp)
}

type delivery struct {
	mid     string
	topic   string
	payload []byte
	done    func(error)
	timer   *time.Timer
	sentOn  *mqtt.Client // the connection it was last written to, or nil
	pid     uint16
	fired   atomic.Bool // done called
}

func (d *delivery) finish(err error) {
	if d.fired.Swap(true) {
		return
	}
	if d.timer != nil {
		d.timer.Stop()
	}
	d.done(err)
}

// leafQ is one device's pending C2D messages and its current connection.
type leafQ struct {
	pending []*delivery
	cl      *mqtt.Client // online connection subscribed to its devicebound topic, or nil
	// One flusher per leaf writes its pending messages, in order; a kick
	// while it runs makes it go round once more. Writes happen off the
	// callers' goroutines (Deliver, mochi's connection goroutines), and a
	// leaf that reads nothing blocks only its own flusher, until the
	// connection's write deadline drops it.
	flushing, again bool
}

// c2d tracks pending C2D deliveries per device.
type c2d struct {
	h      *Hub
	mu     sync.Mutex
	leaves map[string]*leafQ
	closed bool
}

func newC2D(h *Hub) *c2d { return &c2d{h: h, leaves: map[string]*leafQ{}} }

func (c *c2d) leaf(id string) *leafQ {
	q := c.leaves[id]
	if q == nil {
		q = &leafQ{}
		c.leaves[id] = q
	}
	return q
}

func (c *c2d) add(device string, d *delivery, exp time.Time) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	q := c.leaf(device)
	var replaced *delivery
	if d.mid != "" {
		for i, o := range q.pending {
			if o.mid == d.mid {
				replaced = o
				q.pending[i] = d
				// Keep the old one's connection state: if it was sent and
				// is PUBACKed, that acknowledges the new one too.
				d.sentOn, d.pid = o.sentOn, o.pid
				break
			}
		}
	}
	if replaced == nil {
		q.pending = append(q.pending, d)
	}
	d.timer = time.AfterFunc(time.Until(exp), func() { c.expire(device, d) })
	c.mu.Unlock()
	c.h.stats.c2dQueued.Add(1)
	if replaced != nil {
		replaced.finish(ErrReplaced)
	}
	c.kick(device)
	return nil
}

func (c *c2d) expire(device string, d *delivery) {
	c.mu.Lock()
	q := c.leaves[device]
	if q != nil {
		c.remove(q, d)
	}
	c.mu.Unlock()
	c.h.stats.c2dExpired.Add(1)
	d.finish(ErrExpired)
}

func (c *c2d) remove(q *leafQ, d *delivery) {
	for i, o := range q.pending {
		if o == d {
			q.pending = append(q.pending[:i], q.pending[i+1:]...)
			return
		}
	}
}

// kick makes sure the device's flusher runs after this call.
func (c *c2d) kick(device string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.leaves[device]
	if c.closed || q == nil {
		return
	}
	if q.flushing {
		q.again = true
		return
	}
	q.flushing = true
	c.h.writers.Add(1) // under mu: close sets closed under mu before Close waits
	go func() {
		defer c.h.writers.Done()
		for {
			c.flush(device)
			c.mu.Lock()
			if !q.again {
				q.flushing = false
				c.mu.Unlock()
				return
			}
			q.again = false
			c.mu.Unlock()
		}
	}()
}

// flush writes the device's pending messages that its current connection
// has not seen yet. Only the device's flusher calls it.
func (c *c2d) flush(device string) {
	c.mu.Lock()
	q := c.leaves[device]
	if q == nil || q.cl == nil || q.cl.Closed() {
		c.mu.Unlock()
		return
	}
	cl := q.cl
	var todo []*delivery
	for _, d := range q.pending {
		if d.sentOn != cl {
			todo = append(todo, d)
		}
	}
	c.mu.Unlock()
	srv := c.h.server()
	for _, d := range todo {
		pid, err := cl.NextPacketID()
		if err != nil {
			return // ids exhausted; PUBACKs will free some and flush again
		}
		pk := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   d.topic,
			Payload:     d.payload,
			PacketID:    uint16(pid),
			Created:     time.Now().Unix(),
		}
		// Registering the id in mochi's inflight map keeps mochi from
		// reusing it, and lets a resumed session resend it.
		if cl.State.Inflight.Set(pk) && srv != nil {
			atomic.AddInt64(&srv.Info.Inflight, 1)
		}
		c.mu.Lock()
		d.sentOn, d.pid = cl, uint16(pid)
		c.mu.Unlock()
		if err := cl.WritePacket(pk); err != nil {
			return // the connection is going; reconnect resends
		}
		c.h.stats.c2dSent.Add(1)
	}
}

// online is called when a leaf's session is established or it subscribes:
// a connection subscribed to its own devicebound topic receives C2D. A
// resumed session's in-flight copies (mochi resends them) are adopted.
func (c *c2d) online(cl *mqtt.Client) {
	if !subscribedDevicebound(cl) {
		return
	}
	c.mu.Lock()
	q := c.leaf(cl.ID)
	q.cl = cl
	for _, d := range q.pending {
		if d.sentOn != nil && d.sentOn != cl {
			if pk, ok := cl.State.Inflight.Get(d.pid); ok && pk.TopicName == d.topic {
				d.sentOn = cl // mochi resent it with DUP on session resume
			}
		}
	}
	c.mu.Unlock()
	c.kick(cl.ID)
}

func subscribedDevicebound(cl *mqtt.Client) bool {
	prefix := "devices/" + cl.ID + "/messages/devicebound/"
	for f := range cl.State.Subscriptions.GetAll() {
		if f == prefix+"#" || f == prefix+"+" {
			return true
		}
	}
	return false
}

// offline is called when a leaf's connection ends.
func (c *c2d) offline(cl *mqtt.Client) {
	c.mu.Lock()
	if q := c.leaves[cl.ID]; q != nil && q.cl == cl {
		q.cl = nil
	}
	c.mu.Unlock()
}

// puback completes the delivery the leaf acknowledged on connection cl.
func (c *c2d) puback(cl *mqtt.Client, pid uint16) {
	c.mu.Lock()
	q := c.leaves[cl.ID]
	var hit *delivery
	if q != nil {
		for _, d := range q.pending {
			if d.sentOn == cl && d.pid == pid {
				hit = d
				c.remove(q, d)
				break
			}
		}
	}
	unsent := false
	if q != nil && q.cl != nil {
		for _, d := range q.pending {
			unsent = unsent || d.sentOn != q.cl
		}
	}
	c.mu.Unlock()
	if hit != nil {
		c.h.stats.c2dAcked.Add(1)
		hit.finish(nil)
	}
	if unsent { // packet ids may have run out; one is free now
		c.kick(cl.ID)
	}
}

func (c *c2d) close() {
	c.mu.Lock()
	c.closed = true
	var all []*delivery
	for _, q := range c.leaves {
		all = append(all, q.pending...)
		q.pending, q.cl = nil, nil
	}
	c.mu.Unlock()
	for _, d := range all {
		d.finish(ErrClosed)
	}
}
